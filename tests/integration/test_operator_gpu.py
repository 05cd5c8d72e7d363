"""The operator and GPU nodes: reports read from Nodes, GW-GPU findings on workloads, and the
opt-in taint with its circuit breaker, against the test API server."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from guywire.cli import parser
from guywire.model.gpu_report import GPU_TAINT_KEY
from guywire.operator.main import run_in_thread

TIMEOUT = 20


def report(state: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    reasons = [] if state == "Healthy" else ["GPU 0: XID 79 (GPU has fallen off the bus)."]
    return json.dumps({"state": state, "reportedAt": now, "reasons": reasons,
                       "gpus": [{"index": 0, "state": state, "reasons": reasons}], "driverVersion": "550.90.07"})


def node(name: str, state: str | None) -> dict:
    ann = {"guywire.dev/gpu-health": report(state)} if state else {}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true"}, "annotations": ann},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}}


@pytest.fixture(scope="module")
def cluster(kube_api):
    kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml", "labels": {"team": "ml"}}})
    kube_api.create({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                     "metadata": {"name": "gpu"}, "spec": {"enforcement": "Warn", "match": {"gpuOnly": True}}})
    for name, state in [("gpu-a", "Unhealthy"), ("gpu-b", "Unhealthy"), ("gpu-c", "Unhealthy"),
                        ("gpu-d", "Healthy")]:
        kube_api.create(node(name, state))
    kube_api.create({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "trainer", "namespace": "ml"},
                     "spec": {"selector": {"matchLabels": {"app": "t"}}, "template": {
                         "metadata": {"labels": {"app": "t"}},
                         "spec": {"nodeName": "gpu-a", "containers": [{
                             "name": "t", "image": "nvcr.io/nvidia/pytorch:24.08-py3",
                             "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}}]}}}})
    args = parser().parse_args(["run", "--kubeconfig", str(kube_api.kubeconfig_path), "--standalone",
                                "--metrics-port", "0", "--health-port", "0", "--status-interval", "0.2s",
                                "--taint-unhealthy-gpu-nodes", "--taint-max-fraction", "0.5"])
    thread, stop, ready = run_in_thread(args)
    assert ready.wait(15)
    yield kube_api
    stop.set()
    thread.join(20)


def guywire_tainted(api) -> list[str]:
    return sorted(n["metadata"]["name"] for n in api.objects("nodes")
                  if any(t.get("key") == GPU_TAINT_KEY for t in (n.get("spec") or {}).get("taints") or []))


def test_a_workload_pinned_to_an_unhealthy_node_is_annotated(cluster):
    api = cluster
    ann = api.wait_for(lambda: (api.get("deployments.apps", "trainer", "ml")["metadata"].get("annotations") or {})
                       .get("guywire.dev/violations"), timeout=TIMEOUT)
    assert "GW-GPU-001" in ann
    events = api.wait_for(lambda: [e for e in api.events_for("Deployment", "ml", "trainer")
                                   if e["reason"] == "GW-GPU-001"], timeout=TIMEOUT)
    assert "gpu-a" in events[0]["message"]


def test_the_circuit_breaker_holds_back_taints_past_the_fraction(cluster):
    api = cluster
    tainted = api.wait_for(lambda: guywire_tainted(api) if len(guywire_tainted(api)) == 2 else None,
                           timeout=TIMEOUT)
    assert tainted == ["gpu-a", "gpu-b"]  # floor(0.5 x 4) = 2, taken in name order
    # the taint is added beside the node's own taints, not instead of them
    a = api.get("nodes", "gpu-a")
    assert {t["key"] for t in a["spec"]["taints"]} == {"nvidia.com/gpu", GPU_TAINT_KEY}
    held = api.wait_for(lambda: [e for e in api.events_for("Node", None, "gpu-c")
                                 if e["reason"] == "GPUTaintHeldBack"], timeout=TIMEOUT)
    assert "Circuit breaker" in held[0]["message"]


def test_a_recovered_node_is_untainted_and_frees_room_for_the_held_back_one(cluster):
    api = cluster
    api.patch("nodes", "gpu-a", {"metadata": {"annotations": {"guywire.dev/gpu-health": report("Healthy")}}})
    api.wait_for(lambda: guywire_tainted(api) == ["gpu-b", "gpu-c"], timeout=TIMEOUT)
    a = api.get("nodes", "gpu-a")
    assert [t["key"] for t in a["spec"]["taints"]] == ["nvidia.com/gpu"]
