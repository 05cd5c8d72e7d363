"""`guywire node-agent` as a process: --once --dry-run, no NVML, and writing its Node through a real HTTP API.

The API server is the loopback test server of tests/kubeapi.py (``kube_api`` fixture); the
GPUs come from fake-NVML scenarios, so nothing here needs a GPU or a cluster.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s

from guywire.clock import ManualClock
from guywire.gpu.agent import NodeAgent, NodeClient
from guywire.gpu.fake import FakeNvml
from guywire.gpu.nvml import NvmlReader

ROOT = Path(__file__).resolve().parents[2]
HEALTHY = """
driverVersion: "550.90.07"
bootId: boot-1
gpus:
- {uuid: GPU-aaaa0000-0000-0000-0000-000000000000, temperature: 51}
- {uuid: GPU-bbbb0000-0000-0000-0000-000000000000, temperature: 53}
"""
UNHEALTHY = """
driverVersion: "550.90.07"
bootId: boot-1
gpus:
- {uuid: GPU-aaaa0000-0000-0000-0000-000000000000}
- {uuid: GPU-bbbb0000-0000-0000-0000-000000000000, xids: [79], lost: true}
"""


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "KUBECONFIG")}
    return subprocess.run([sys.executable, "-m", "guywire.cli", "node-agent", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def scenario(tmp_path: Path, text: str, name: str = "gpus.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def gpu_node(name: str, gpus: int = 2) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true"}},
            "status": {"capacity": {"nvidia.com/gpu": str(gpus)}, "allocatable": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def patches(kube_api, name: str) -> list[str]:
    return [r.path for r in kube_api.requests if r.method == "PATCH" and f"/nodes/{name}" in r.path]


def gpu_condition(node: dict) -> dict:
    (cond,) = [c for c in node["status"]["conditions"] if c["type"] == "GPUUnhealthy"]
    return cond


# ----- no API server ----------------------------------------------------------------------------------------------
def test_once_dry_run_prints_the_annotation_and_writes_nothing(tmp_path: Path):
    done = agent("--once", "--dry-run", "--fake-nvml", scenario(tmp_path, UNHEALTHY))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["state"] == "Unhealthy" and report["action"] == "RebootNode"
    assert report["driverVersion"] == "550.90.07" and report["bootId"] == "boot-1"
    assert report["reportedAt"].endswith("Z")
    lost = report["gpus"][1]
    assert lost["index"] == 1 and lost["state"] == "Unhealthy" and "uuid" not in lost  # lost before it was named
    assert any("XID 79" in r for r in lost["reasons"]) and any("GPU_IS_LOST" in r for r in lost["reasons"])
    assert "GPU 1 raised XID 79 (GPU has fallen off the bus): the GPU is Unhealthy." in done.stderr


def test_without_an_nvml_library_it_says_so_and_exits_non_zero():
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: the case under test
        pass
    else:  # pragma: no cover
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVML library")
    done = agent("--once", "--dry-run")
    assert done.returncode != 0 and done.stdout == ""
    assert "cannot read GPUs: the NVML library (libnvidia-ml.so.1) was not found" in done.stderr
    assert "--fake-nvml FILE" in done.stderr


# ----- against the loopback API server ---------------------------------------------------------------------------------
def test_once_writes_condition_label_and_annotation_and_not_again_when_unchanged(kube_api, tmp_path: Path):
    name = "gpu-once-1"
    kube_api.create(gpu_node(name))
    kubeconfig = str(kube_api.kubeconfig_path)
    kube_api.clear_requests()

    done = agent("--once", "--node-name", name, "--kubeconfig", kubeconfig,
                 "--fake-nvml", scenario(tmp_path, HEALTHY))
    assert done.returncode == 0, done.stderr
    node = kube_api.get("nodes", name)
    assert node["metadata"]["labels"]["guywire.dev/gpu-health"] == "Healthy"
    report = json.loads(node["metadata"]["annotations"]["guywire.dev/gpu-health"])
    assert report["state"] == "Healthy" and report["expectedGpus"] == 2 and report["gpuCount"] == 2
    cond = gpu_condition(node)
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Healthy", "All 2 GPU(s) are healthy.")
    written = patches(kube_api, name)
    assert sorted(written) == [f"/api/v1/nodes/{name}", f"/api/v1/nodes/{name}/status"]

    kube_api.clear_requests()
    again = agent("--once", "--node-name", name, "--kubeconfig", kubeconfig,
                  "--fake-nvml", scenario(tmp_path, HEALTHY.replace("51", "58")))  # warmer, nothing changed
    assert again.returncode == 0, again.stderr
    assert patches(kube_api, name) == [], "an unchanged report is not written again"
    assert [r.method for r in kube_api.requests if f"/nodes/{name}" in r.path] == ["GET"]

    kube_api.clear_requests()
    broken = agent("--once", "--node-name", name, "--kubeconfig", kubeconfig,
                   "--fake-nvml", scenario(tmp_path, UNHEALTHY, "broken.yaml"))
    assert broken.returncode == 0, broken.stderr
    assert len(patches(kube_api, name)) == 2
    node = kube_api.get("nodes", name)
    assert node["metadata"]["labels"]["guywire.dev/gpu-health"] == "Unhealthy"
    cond = gpu_condition(node)
    assert (cond["status"], cond["reason"]) == ("True", "Unhealthy")
    assert "GPU 1: XID 79 (GPU has fallen off the bus)" in cond["message"]
    assert cond["message"].endswith("Recommended action: RebootNode.")
    assert cond["lastTransitionTime"] == cond["lastHeartbeatTime"]


def test_fewer_gpus_than_the_node_advertises(kube_api, tmp_path: Path):
    name = "gpu-once-2"
    kube_api.create(gpu_node(name, gpus=8))
    done = agent("--once", "--node-name", name, "--kubeconfig", str(kube_api.kubeconfig_path),
                 "--fake-nvml", scenario(tmp_path, HEALTHY))
    assert done.returncode == 0, done.stderr
    cond = gpu_condition(kube_api.get("nodes", name))
    assert cond["status"] == "True"
    assert cond["message"].startswith("NVML sees 2 GPU(s) but the node advertises 8")


def test_a_running_agent_writes_on_change_and_heartbeat_only(kube_api):
    name = "gpu-loop-1"
    kube_api.create(gpu_node(name, gpus=1))
    clock = ManualClock("2026-11-24T10:00:00Z")  # the agent, its reader and the XID stamps share it
    fake = FakeNvml({"bootId": "boot-1", "gpus": [{"uuid": "GPU-cccc"}], "steps": [
        {"reads": 3, "gpus": [{"temperature": 70}]},
        {"reads": 2, "gpus": [{"xids": [48], "recoveryAction": 1}]},
        {"gpus": [{"reset": True}]},
    ]}, clock)
    api_client = kube_api.kubernetes_client()
    reader = NvmlReader(fake, clock=fake.clock)
    reader.open()
    try:
        node_agent = NodeAgent(reader, node_name=name, client=NodeClient(k8s.CoreV1Api(api_client), name),
                               report_max_age_s=300, boot_id=lambda: fake.boot_id, clock=clock)
        kube_api.clear_requests()
        counts, states = [], []
        for _ in range(7):
            assert node_agent.cycle()
            counts.append(len(patches(kube_api, name)))
            states.append(kube_api.get("nodes", name)["metadata"]["labels"]["guywire.dev/gpu-health"])
            clock.advance(30)
        # read 1 writes; 2-4 change nothing; 5 the XID; 6 still latched; 7 reset: healthy again
        assert states == ["Healthy"] * 4 + ["Unhealthy", "Unhealthy", "Healthy"]
        assert counts == [2, 2, 2, 2, 4, 4, 6]
        clock.advance(150)  # reportMaxAge / 2 since the last write: a heartbeat
        node_agent.cycle()
        assert len(patches(kube_api, name)) == 8
        cond = gpu_condition(kube_api.get("nodes", name))
        assert cond["lastHeartbeatTime"] == "2026-11-24T10:06:00Z" and cond["status"] == "False"
    finally:
        reader.close()
        api_client.close()


def test_an_api_error_is_reported_and_the_once_run_fails(kube_api, tmp_path: Path):
    name = "gpu-once-3"
    kube_api.create(gpu_node(name))
    kube_api.inject("PATCH", rf"/nodes/{name}/status$", 500, times=1)
    done = agent("--once", "--node-name", name, "--kubeconfig", str(kube_api.kubeconfig_path),
                 "--fake-nvml", scenario(tmp_path, HEALTHY))
    assert done.returncode == 2
    assert f"cannot write Node {name} (no report yet): HTTP 500" in done.stderr
