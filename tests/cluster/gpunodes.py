"""Fake GPU Nodes that kwok keeps Ready, and one pass of the chart's node agent against one of them: shared by the
GPU scenario (test_gpu) and the own-node admission policy (test_node_agent_policy)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cluster.controlplane import ROOT

# The examples' GPU workloads (query-embedder x2, llm-server, finetune) wait Pending for GPU Nodes: without this
# taint they fill the fake nodes' 2 GPUs each and leave the tests' own Pods unschedulable. Only the tests' own
# Pods tolerate it (the capacity must stay 2: the agent compares it with NVML's GPU count).
SCENARIO_TAINT = {"key": "tests.guywire.dev/gpu-scenario", "effect": "NoSchedule"}


def gpu_node(name: str) -> dict:
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "2"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "type": "kwok",
                                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "spec": {"taints": [SCENARIO_TAINT]},
            "status": {"capacity": resources, "allocatable": resources}}


def ready(cluster, name: str) -> bool:
    node = cluster.get("node", name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions") or [])


def run_agent(release, node: str, scenario: Path, boot_id: str = "boot-1", kubeconfig: Path | None = None,
              codes: tuple[int, ...] = (0, 1)) -> subprocess.CompletedProcess:
    """One pass of the chart's node-agent command line on ``node``, as the agent's ServiceAccount (``kubeconfig``,
    by default the release's token bound to no pod), exiting with one of ``codes`` (2: a write failed); a new
    ``boot_id`` is a reboot (XIDs latch until one)."""
    boot = release.cluster.dir / f"boot-id-{node}"
    boot.write_text(boot_id + "\n")
    args = [a.replace("$(NODE_NAME)", node) for a in release.container_args("DaemonSet")
            if not a.startswith("--metrics-port")]
    out = subprocess.run([sys.executable, "-m", "guywire.cli", *args, "--once", f"--fake-nvml={scenario}",
                          f"--boot-id-file={boot}", f"--kubeconfig={kubeconfig or release.agent_kubeconfig}"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode in codes, (out.returncode, out.stderr)
    return out
