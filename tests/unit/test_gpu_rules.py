"""GW-GPU rules beyond the fixtures: pods already placed (ctx.gpu_pods), engine updates, the report cache."""
from __future__ import annotations

from datetime import datetime, timezone

from guywire.engine.evaluator import Engine
from guywire.views.inventory import Inventory, view_of
from guywire.model.gpu_report import HealthState, NodeGpuHealth
from guywire.model.policy import baseline_policy, parse_policy
from guywire.rules.base import Context
from guywire.rules.gpu_nodes import node_report

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def node(name: str, state: str | None, labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": {"nvidia.com/gpu.present": "true", **(labels or {})}}
    if state:
        meta["annotations"] = {"guywire.dev/gpu-health": (
            f'{{"state":"{state}","reportedAt":"2026-11-24T09:59:00Z",'
            f'"reasons":["GPU 0: something {state.lower()}."],"action":"ResetGPU"}}')}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta}


def gpu_deployment(name: str = "llm", **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {**spec, "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3",
                                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def engine(*objs: dict, policies=None) -> Engine:
    inv = Inventory()
    for o in objs:
        inv.add(view_of(o))
    return Engine(policies or [baseline_policy()], inv, now=NOW)


def gpu_findings(e: Engine, rule: str) -> list[str]:
    return [f.render() for f in e.evaluate_all().findings if f.rule == rule]


KEY = ("ml", "Deployment", "llm")


def test_pods_running_on_an_unhealthy_node():
    e = engine(node("g1", "Unhealthy"), node("g2", "Healthy"), gpu_deployment())
    e.gpu_pods[KEY] = {"g1", "g2"}
    found = gpu_findings(e, "GW-GPU-001")
    assert found == ['[GW-GPU-001 unhealthy-gpu-node] Deployment ml/llm: runs GPU pods on node "g1", whose GPUs are '
                     'Unhealthy ("g1": GPU 0: something unhealthy; recommended action ResetGPU). Move the pods to '
                     'healthy GPU nodes and repair the node.']
    assert gpu_findings(e, "GW-GPU-002") == []


def test_pods_running_on_a_degraded_node():
    e = engine(node("g1", "Degraded"), gpu_deployment())
    e.gpu_pods[KEY] = {"g1"}
    assert gpu_findings(e, "GW-GPU-001") == []
    assert "runs GPU pods on node \"g1\", whose GPUs are Degraded" in gpu_findings(e, "GW-GPU-002")[0]


def test_running_and_pinned_to_the_same_node_is_one_finding():
    e = engine(node("g1", "Unhealthy"), gpu_deployment(nodeName="g1"))
    e.gpu_pods[KEY] = {"g1"}
    assert len(gpu_findings(e, "GW-GPU-001")) == 1


def test_a_node_turning_unhealthy_judges_the_pinned_workload_again():
    e = engine(node("g1", "Healthy", {"pool": "a"}), gpu_deployment(nodeSelector={"pool": "a"}))
    e.evaluate_all()
    assert not [f for f in e.findings_for(KEY) if f.rule == "GW-GPU-001"]
    affected = e.upsert(view_of(node("g1", "Unhealthy", {"pool": "a"})))
    assert KEY in affected
    assert [f.rule for f in e.findings_for(KEY) if f.rule.startswith("GW-GPU")] == ["GW-GPU-001"]
    e.upsert(view_of(node("g1", "Healthy", {"pool": "a"})))
    assert not [f for f in e.findings_for(KEY) if f.rule.startswith("GW-GPU")]


def test_affinity_operators():
    n1 = node("g1", "Unhealthy", {"gpu.mem": "80", "zone": "a"})
    n2 = node("g2", "Healthy", {"gpu.mem": "40", "zone": "b"})

    def pinned(*exprs) -> list[str]:
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": list(exprs)}]}}}
        return gpu_findings(engine(n1, n2, gpu_deployment(affinity=affinity)), "GW-GPU-001")

    assert pinned({"key": "gpu.mem", "operator": "Gt", "values": ["60"]})
    assert not pinned({"key": "gpu.mem", "operator": "Lt", "values": ["60"]})
    assert pinned({"key": "zone", "operator": "NotIn", "values": ["b"]})
    assert not pinned({"key": "zone", "operator": "Exists"})
    assert not pinned({"key": "nope", "operator": "DoesNotExist"})


def test_terms_of_match_fields_only_are_not_judged():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g1"]}]}]}}}
    assert gpu_findings(engine(node("g1", "Unhealthy"), gpu_deployment(affinity=affinity)), "GW-GPU-001") == []


def test_cpu_nodes_matching_the_selector_do_not_count():
    cpu = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "c1", "labels": {"pool": "a"}}}
    e = engine(node("g1", "Unhealthy", {"pool": "a"}), cpu, gpu_deployment(nodeSelector={"pool": "a"}))
    assert 'GPU node "g1" alone, which is Unhealthy' in gpu_findings(e, "GW-GPU-001")[0]


def test_override_severity_and_disable():
    policy = parse_policy({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                           "metadata": {"name": "p"},
                           "spec": {"overrides": [{"rule": "GW-GPU-001", "severity": "Critical"},
                                                  {"rule": "GW-GPU-003", "disabled": True}]}})
    e = engine(node("g1", "Unhealthy"), node("g9", None), gpu_deployment(nodeName="g1"), policies=[policy])
    result = e.evaluate_all()
    assert [f.severity.value for f in result.findings if f.rule == "GW-GPU-001"] == ["Critical"]
    assert not [f for f in result.findings if f.rule == "GW-GPU-003"]


def test_stale_needs_a_clock():
    e = engine(node("g1", "Healthy"), gpu_deployment())
    e.now = None
    assert gpu_findings(e, "GW-GPU-003") == []
    e.now = datetime(2026, 11, 24, 11, 0, tzinfo=timezone.utc)
    assert "has a GPU health report 61m old (limit 5m)" in gpu_findings(e, "GW-GPU-003")[0]


def test_reports_are_parsed_once_per_annotation_value():
    inv = Inventory()
    first = view_of(node("g1", "Degraded"))
    ctx = Context(inventory=inv, graph=None, policy=baseline_policy())
    a, _ = node_report(ctx, first)
    b, _ = node_report(ctx, first)
    assert a is b and a.state is HealthState.DEGRADED
    c, _ = node_report(ctx, view_of(node("g1", "Unhealthy")))
    assert c.state is HealthState.UNHEALTHY
    ctx.node_health["g1"] = NodeGpuHealth(state=HealthState.HEALTHY, reported_at=NOW)
    assert node_report(ctx, first)[0].state is HealthState.HEALTHY, "a report the caller parsed is used as is"
