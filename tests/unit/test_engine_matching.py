"""Which policies look at which workloads, exemptions, overrides, and one finding per problem across policies."""
import pytest

from guywire.engine.evaluator import Engine, policy_matches
from guywire.model.policy import parse_policy
from guywire.model.severity import Severity

from .manifests import container, deployment, inventory, namespace, service, view


def cluster_policy(spec=None, name="p"):
    return parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": name}, "spec": spec or {}})


def gpu_container():
    return container(resources={"requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})


def sloppy(name="w", ns="ml", **kw):
    """A workload with a mutable image and no probes: it always has findings."""
    return deployment(name, ns, containers=[container(image="app:latest", probes=False)], **kw)


def matched(policy, *objs, ns_objs=()):
    inv = inventory(*objs, *ns_objs)
    return sorted(k[2] for k, w in inv.workloads.items() if policy_matches(policy, w, inv))


def test_empty_match_takes_every_workload():
    assert matched(cluster_policy(), sloppy("a"), sloppy("b", "data"), sloppy("c", kind="StatefulSet")) == \
        ["a", "b", "c"]


def test_match_kinds():
    p = cluster_policy({"match": {"kinds": ["StatefulSet", "Job"]}})
    assert matched(p, sloppy("a"), sloppy("b", kind="StatefulSet"), sloppy("c", kind="Job")) == ["b", "c"]


def test_match_namespace_globs():
    p = cluster_policy({"match": {"namespaces": ["ml-*", "serving"]}})
    assert matched(p, sloppy("a", "ml-prod"), sloppy("b", "ml"), sloppy("c", "serving"), sloppy("d", "serving2")) == \
        ["a", "c"]


def test_match_namespace_selector_reads_namespace_objects():
    p = cluster_policy({"match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}})
    objs = (sloppy("a", "ml"), sloppy("b", "data"), sloppy("c", "unknown"))
    assert matched(p, *objs, ns_objs=[namespace("ml", {"team": "ml"}), namespace("data", {"team": "data"})]) == ["a"]
    # the kubernetes.io/metadata.name label every namespace carries is honoured without a Namespace object
    by_name = cluster_policy({"match": {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["data", "unknown"]}]}}})
    assert matched(by_name, *objs) == ["b", "c"]


def test_match_selector_reads_workload_labels():
    p = cluster_policy({"match": {"selector": {"matchLabels": {"tier": "serving"}}}})
    assert matched(p, sloppy("a", labels={"tier": "serving"}), sloppy("b", labels={"tier": "batch"}), sloppy("c")) == \
        ["a"]


def test_match_gpu_only():
    p = cluster_policy({"match": {"gpuOnly": True}})
    assert matched(p, deployment("gpu", containers=[gpu_container()]), sloppy("cpu")) == ["gpu"]


@pytest.mark.parametrize("exclude, left", [
    ({"kinds": ["Job"]}, ["a", "b"]),
    ({"namespaces": ["dat*"]}, ["a", "c"]),
    ({"names": ["a", "c*"]}, ["b"]),
    ({"selector": {"matchLabels": {"skip": "yes"}}}, ["b", "c"]),
    ({"selector": {}}, ["a", "b", "c"]),  # an empty exclude selector excludes nothing
])
def test_exclude(exclude, left):
    p = cluster_policy({"exclude": exclude})
    assert matched(p, sloppy("a", labels={"skip": "yes"}), sloppy("b", "data"), sloppy("c", kind="Job")) == left


def test_kube_system_is_never_evaluated():
    p = cluster_policy({"match": {"namespaces": ["kube-system"]}})
    engine = Engine([p], inventory(sloppy("coredns", "kube-system"), sloppy("app")))
    result = engine.evaluate_all()
    assert result.findings == []
    assert engine.findings_for(("kube-system", "Deployment", "coredns")) == []
    assert (result.evaluated, result.skipped) == (0, 2)
    assert engine.policy_result(p).matched == 0


def test_extra_skipped_namespaces():
    engine = Engine([cluster_policy()], inventory(sloppy("op", "guywire-system"), sloppy("app")),
                    skip_namespaces=["guywire-system"])
    result = engine.evaluate_all()
    assert {f.workload.namespace for f in result.findings} == {"ml"}
    assert (result.evaluated, result.skipped) == (1, 1)


def rules_of(engine, name="w", ns="ml"):
    return {f.rule for f in engine.findings_for((ns, "Deployment", name))}


def test_exemption_is_honoured_only_with_a_reason():
    exempt = {"guywire.dev/exempt": "GW-OBS-007, GW-OBS-*"}
    engine = Engine([cluster_policy()], inventory(
        sloppy("with-reason", annotations={**exempt, "guywire.dev/exempt-reason": "vendor image, OPS-42"}),
        sloppy("without-reason", annotations=exempt),
        sloppy("blank-reason", annotations={**exempt, "guywire.dev/exempt-reason": "   "}),
        sloppy("plain"),
    ))
    engine.evaluate_all()
    assert not {r for r in rules_of(engine, "with-reason") if r.startswith("GW-OBS-")}
    assert "GW-ANN-002" not in rules_of(engine, "with-reason")
    for name in ("without-reason", "blank-reason"):
        found = rules_of(engine, name)
        assert {"GW-OBS-007", "GW-OBS-002", "GW-ANN-002"} <= found, (name, found)
    assert "GW-ANN-002" not in rules_of(engine, "plain")


def test_overrides_change_severity_and_disable_rules():
    base = Engine([cluster_policy()], inventory(sloppy()))
    base.evaluate_all()
    default = {f.rule: f.severity for f in base.findings_for(("ml", "Deployment", "w"))}
    assert default["GW-OBS-007"] is Severity.MEDIUM and "GW-OBS-002" in default

    p = cluster_policy({"overrides": [{"rule": "GW-OBS-007", "severity": "Critical"},
                                      {"rule": "GW-OBS-002", "disabled": True},
                                      {"rule": "GW-OBS-*", "severity": "Low"}]})
    engine = Engine([p], inventory(sloppy()))
    engine.evaluate_all()
    found = {f.rule: f.severity for f in engine.findings_for(("ml", "Deployment", "w"))}
    assert found["GW-OBS-007"] is Severity.CRITICAL
    assert "GW-OBS-002" not in found
    others = {rule: sev for rule, sev in found.items() if rule.startswith("GW-OBS-") and rule != "GW-OBS-007"}
    assert others and all(sev is Severity.LOW for sev in others.values()), "the exact id wins over the glob"


def test_rule_switch_turns_a_rule_off():
    p = cluster_policy({"rules": {"observability": {"livenessProbe": False, "mutableImageTags": True}}})
    engine = Engine([p], inventory(sloppy()))
    engine.evaluate_all()
    assert not {"GW-OBS-002", "GW-OBS-007"} & rules_of(engine)


def test_multiple_policies_give_one_finding_with_the_worst_severity():
    low = cluster_policy({"overrides": [{"rule": "GW-OBS-007", "severity": "Low"}]}, name="low")
    high = cluster_policy({"overrides": [{"rule": "GW-OBS-007", "severity": "High"}]}, name="high")
    local = parse_policy({"kind": "ComplexityPolicy", "metadata": {"name": "local", "namespace": "ml"},
                          "spec": {"overrides": [{"rule": "GW-OBS-007", "severity": "Medium"}]}})
    engine = Engine([low, high, local], inventory(sloppy()))
    result = engine.evaluate_all()
    image = [f for f in result.findings if f.rule == "GW-OBS-007"]
    assert len(image) == 1
    assert image[0].severity is Severity.HIGH and image[0].policy == "high"
    per_rule = [f.rule for f in engine.findings_for(("ml", "Deployment", "w"))]
    assert len(per_rule) == len(set(per_rule)), "no rule reported twice for one container"
    assert [p.ref for p in engine.matched_policies(("ml", "Deployment", "w"))] == [low.ref, high.ref, local.ref]
    for p in (low, high, local):
        pr = engine.policy_result(p)
        assert (pr.matched, pr.violating) == (1, 1)


def test_findings_are_worst_first():
    engine = Engine([cluster_policy()], inventory(deployment("gpu", containers=[container(
        image="app:latest", probes=False,
        resources={"requests": {"nvidia.com/gpu": "1"}})])))
    result = engine.evaluate_all()
    ranks = [f.severity.rank for f in result.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert result.findings[0].severity is Severity.HIGH


def test_policy_that_matches_nothing_reports_nothing():
    p = cluster_policy({"match": {"kinds": ["CronJob"]}})
    engine = Engine([p], inventory(sloppy()))
    result = engine.evaluate_all()
    assert result.findings == [] and engine.policy_result(p).matched == 0
    assert result.evaluated == 0 and result.skipped == 1


def test_namespace_label_change_is_judged_again():
    p = cluster_policy({"match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}})
    engine = Engine([p], inventory(sloppy(), namespace("ml", {"team": "data"})))
    engine.evaluate_all()
    assert engine.findings_for(("ml", "Deployment", "w")) == []
    engine.upsert(view(namespace("ml", {"team": "ml"})))
    assert engine.findings_for(("ml", "Deployment", "w"))
    engine.remove("Namespace", None, "ml")
    assert engine.findings_for(("ml", "Deployment", "w")) == []


def test_set_policies_judges_everything_again():
    engine = Engine([cluster_policy({"match": {"kinds": ["Job"]}})], inventory(sloppy(), service("w")))
    engine.evaluate_all()
    assert engine.findings_for(("ml", "Deployment", "w")) == []
    engine.set_policies([cluster_policy()])
    assert engine.findings_for(("ml", "Deployment", "w"))
