"""Scenario 6: fake GPU Nodes (kwok keeps them Ready), the node agent with the chart's node-agent RBAC, GW-GPU-001
on a workload whose Pod the real scheduler placed on an Unhealthy node, tainting, and the circuit breaker."""
from __future__ import annotations

import json

import pytest

from tests.cluster.conftest import RELEASE
from tests.cluster.controlplane import ROOT, wait_until
from tests.cluster.gpunodes import SCENARIO_TAINT, gpu_node, ready, run_agent

TIMEOUT = 90
UNHEALTHY = ROOT / "scenarios" / "nvml" / "h100-fallen-off-the-bus.yaml"
HEALTHY = ROOT / "scenarios" / "nvml" / "h100-healthy.yaml"
TAINT = "guywire.dev/gpu-unhealthy"


def gpu_deployment(name: str, node: str | None = None, prefer: str | None = None) -> dict:
    """A one-GPU Deployment in ``gpu``: pinned to ``node``, or preferring ``prefer`` (weight 100)."""
    spec = {"containers": [{"name": "infer", "image": "vllm/vllm-openai:v0.6.0",
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                          "limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}}],
            "tolerations": [{**SCENARIO_TAINT, "operator": "Exists"}]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if prefer:
        term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [prefer]}]}
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": term}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "gpu"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def pod_node(cluster, app: str) -> str | None:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", "gpu", "-l", f"app={app}", "-o", "json").stdout)["items"]
    return next((p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")), None)


def has_taint(cluster, node: str) -> bool:
    return any(t["key"] == TAINT for t in (cluster.get("node", node)["spec"].get("taints") or []))


@pytest.fixture(scope="module")
def gpu_nodes(operator):
    cluster = operator.cluster
    if not cluster.has_kwok:
        pytest.skip("kwok was not built: no fake kubelets to keep GPU Nodes Ready (see scripts/build-kube.sh)")
    cluster.apply([gpu_node("gpu-1"), gpu_node("gpu-2")])
    for n in ("gpu-1", "gpu-2"):
        wait_until(lambda: ready(cluster, n), TIMEOUT, f"kwok to make node {n} Ready")
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu", "labels": {"team": "ml"}}})
    return operator


def test_the_agent_writes_condition_label_and_annotation_with_its_own_rbac(gpu_nodes):
    cluster = gpu_nodes.cluster
    out = run_agent(gpu_nodes.release, "gpu-1", UNHEALTHY)
    node = cluster.get("node", "gpu-1")
    cond = next(c for c in node["status"]["conditions"] if c["type"] == "GPUUnhealthy")
    assert cond["status"] == "True", (cond, out.stderr)
    assert node["metadata"]["labels"]["guywire.dev/gpu-health"] == "Unhealthy"
    assert json.loads(node["metadata"]["annotations"]["guywire.dev/gpu-health"])["state"] == "Unhealthy"
    assert ready(cluster, "gpu-1"), "kwok's Ready condition survived the agent's status patch"
    # (test_node_agent_policy's agent is refused on purpose, on its own Nodes)
    assert [r for r in cluster.forbidden(gpu_nodes.release.agent_user) if "/nodes/gpu-" in r] == []


def test_a_gpu_pod_on_the_unhealthy_node_gets_gw_gpu_001(gpu_nodes):
    cluster = gpu_nodes.cluster
    wait_until(lambda: (cluster.get("node", "gpu-1")["metadata"].get("labels") or {}).get("guywire.dev/gpu-health")
               == "Unhealthy", TIMEOUT, "gpu-1 reported Unhealthy")
    cluster.apply(gpu_deployment("pinned", node="gpu-1"))
    assert wait_until(lambda: pod_node(cluster, "pinned"), TIMEOUT, "the scheduler to bind the pinned Pod") == "gpu-1"
    wait_until(lambda: "GW-GPU-001" in (cluster.get("deployment", "pinned", "gpu")["metadata"].get("annotations")
                                        or {}).get("guywire.dev/violations", ""), TIMEOUT, "GW-GPU-001 on gpu/pinned")


def test_tainting_moves_the_next_pod_and_the_breaker_holds_back(gpu_nodes):
    cluster, operator = gpu_nodes.cluster, gpu_nodes
    operator.release.install("--set", "operator.taintUnhealthyGpuNodes=true")
    assert "--taint-unhealthy-gpu-nodes" in operator.release.container_args("Deployment")
    operator.stop()
    operator.start()
    try:
        wait_until(lambda: has_taint(cluster, "gpu-1"), TIMEOUT, "the operator to taint gpu-1")
        # The free Pod prefers gpu-1 (weight 100, NodeAffinity's score x2 outweighs the default scorers'
        # small preference for the emptier gpu-2): only the NoSchedule taint keeps it off gpu-1.
        cluster.apply(gpu_deployment("free", prefer="gpu-1"))
        assert wait_until(lambda: pod_node(cluster, "free"), TIMEOUT, "the scheduler to bind the free Pod") == "gpu-2"
        run_agent(operator.release, "gpu-2", UNHEALTHY)

        def held_back() -> bool:
            items = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json").stdout)["items"]
            return any(e["reason"] == "GPUTaintHeldBack" and e["involvedObject"]["name"] == "gpu-2" for e in items)

        wait_until(held_back, TIMEOUT, "a GPUTaintHeldBack Event on gpu-2")
        assert not has_taint(cluster, "gpu-2"), "the breaker keeps half the GPU nodes untainted"
        run_agent(operator.release, "gpu-1", HEALTHY, boot_id="boot-2")
        wait_until(lambda: not has_taint(cluster, "gpu-1"), TIMEOUT, "gpu-1 untainted after it recovered")
        assert cluster.forbidden(operator.release.operator_user) == []
    finally:
        operator.release.install()
        operator.stop()
        operator.start()
