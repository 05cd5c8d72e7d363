"""The ComplexityPolicy spec: defaults, refusals that name the field, overrides, and where a policy applies."""
import pytest

from guywire.views.annotations import parse_declarations
from guywire.engine.evaluator import policy_matches
from guywire.views.inventory import Inventory
from guywire.model.policy import (
    BASELINE_NAME, Enforcement, LabelSelector, PolicyError, PolicySpec, baseline_policy, parse_policy,
)
from guywire.model.severity import Severity
from guywire.rules import REGISTRY
from guywire.views.workload import Workload


def policy(spec=None, kind="ClusterComplexityPolicy", name="p", namespace=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    obj = {"apiVersion": "guywire.dev/v1alpha1", "kind": kind, "metadata": meta}
    if spec is not None:
        obj["spec"] = spec
    return parse_policy(obj)


def workload(ns="ml", name="w", kind="Deployment"):
    return Workload(kind=kind, namespace=ns, name=name, labels={}, annotations={}, templates=[],
                    decl=parse_declarations({}))


def test_every_rule_section_has_its_documented_default():
    r = PolicySpec().rules
    assert (r.dependencies.max_fan_out, r.dependencies.max_depth, r.dependencies.forbid_cycles,
            r.dependencies.require_resolvable, r.dependencies.require_declared,
            r.dependencies.allow_cross_namespace) == (6, 4, True, True, True, ["*"])
    assert (r.retries.max_attempts, r.retries.max_amplification, r.retries.require_timeout,
            r.retries.require_backoff, r.retries.forbid_timeout_inversion) == (3, 10, True, True, True)
    assert (r.observability.readiness_probe, r.observability.liveness_probe, r.observability.metrics,
            r.observability.resources, r.observability.gpu_resources, r.observability.required_labels,
            r.observability.mutable_image_tags) == (True, True, True, True, True, ["app.kubernetes.io/name"], False)
    assert (r.gpu.block_unhealthy_nodes, r.gpu.warn_degraded_nodes, r.gpu.report_max_age) == (True, True, 300.0)
    assert r.complexity.max_score == 40
    spec = PolicySpec()
    assert spec.enforcement is Enforcement.AUDIT
    assert spec.overrides == [] and spec.match.kinds == [] and not spec.match.gpu_only


def test_an_empty_spec_and_a_missing_spec_are_all_defaults():
    assert policy({}).spec == PolicySpec()
    assert policy(None).spec == PolicySpec()


def test_partial_sections_keep_the_other_defaults():
    p = policy({"rules": {"retries": {"maxAttempts": 5}, "gpu": {"reportMaxAge": "90s"}}})
    assert p.spec.rules.retries.max_attempts == 5
    assert p.spec.rules.retries.max_amplification == 10
    assert p.spec.rules.gpu.report_max_age == 90.0
    assert p.spec.rules.dependencies.max_fan_out == 6


def test_defaults_serialise_with_camel_case_and_durations_as_text():
    dumped = PolicySpec().model_dump(by_alias=True, mode="json")
    assert dumped["rules"]["retries"]["maxAttempts"] == 3
    assert dumped["rules"]["gpu"]["reportMaxAge"] == "5m"
    assert dumped["rules"]["dependencies"]["allowCrossNamespace"] == ["*"]
    assert PolicySpec.model_validate(dumped) == PolicySpec()


@pytest.mark.parametrize("spec, message", [
    ({"rules": {"retries": {"maxAtempts": 3}}}, "spec.rules.retries.maxAtempts: unknown field."),
    ({"rules": {"dependencies": {"maxFanout": 3}}}, "spec.rules.dependencies.maxFanout: unknown field."),
    ({"rule": {}}, "spec.rule: unknown field."),
    ({"match": {"namespaceSelector": {"matchLabel": {"a": "b"}}}},
     "spec.match.namespaceSelector.matchLabel: unknown field."),
    ({"rules": {"retries": {"maxAttempts": 0}}}, "spec.rules.retries.maxAttempts: Input should be greater than"),
    ({"rules": {"retries": {"maxAttempts": "three"}}}, "spec.rules.retries.maxAttempts:"),
    ({"enforcement": "Block"}, "spec.enforcement: Input should be 'Audit', 'Warn' or 'Enforce'."),
    ({"overrides": [{"rule": "OBS-2"}]}, "spec.overrides.0.rule:"),
    ({"overrides": [{"rule": "GW-OBS-002", "severity": "Urgent"}]}, "spec.overrides.0.severity:"),
    ({"rules": {"gpu": {"reportMaxAge": "5 minutes"}}}, "spec.rules.gpu.reportMaxAge:"),
    ({"match": {"selector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}},
     "spec.match.selector.matchExpressions.0.operator:"),
])
def test_bad_specs_are_refused_naming_the_field(spec, message):
    with pytest.raises(PolicyError) as err:
        policy(spec)
    assert message in str(err.value)
    assert str(err.value).endswith(".")


def test_every_problem_is_reported_at_once():
    with pytest.raises(PolicyError) as err:
        policy({"rules": {"retries": {"maxAtempts": 3}, "dependencies": {"maxDepth": -1}}})
    assert "maxAtempts" in str(err.value) and "maxDepth" in str(err.value)


@pytest.mark.parametrize("obj, message", [
    ({"kind": "ClusterComplexityPolicy", "metadata": {}, "spec": {}}, "metadata.name: required."),
    ({"kind": "ClusterComplexityPolicy", "spec": {}}, "metadata.name: required."),
    ({"kind": "ClusterComplexityPolicy", "metadata": {"name": ""}}, "metadata.name: required."),
    ({"kind": "ClusterComplexityPolicy", "metadata": "x"}, "metadata.name: required."),
    ({"kind": "ClusterComplexityPolicy", "metadata": {"name": "p"}, "spec": "strict"}, "spec: must be an object."),
    ({"kind": "ClusterComplexityPolicy", "metadata": {"name": "p"}, "spec": [1]}, "spec: must be an object."),
    ({"kind": "Deployment", "metadata": {"name": "p"}}, "kind: 'Deployment' is not ComplexityPolicy"),
    ({"metadata": {"name": "p"}}, "kind: None is not ComplexityPolicy"),
    (["not", "an", "object"], "a policy must be an object."),
    ("policy", "a policy must be an object."),
])
def test_parse_policy_errors(obj, message):
    with pytest.raises(PolicyError) as err:
        parse_policy(obj)
    assert message in str(err.value)


def test_policy_kinds_namespaces_and_refs():
    cluster = policy({}, name="base", namespace="ignored")
    assert cluster.namespace is None and cluster.ref == "ClusterComplexityPolicy/base"
    ns = policy({}, kind="ComplexityPolicy", name="local", namespace="ml")
    assert ns.namespace == "ml" and ns.ref == "ComplexityPolicy ml/local"
    assert policy({}, kind="ComplexityPolicy").namespace == "default"


def _attributes(model):
    """A model's field values as the engine reads them (attributes, not serialised: a Duration stays 300.0)."""
    if hasattr(type(model), "model_fields"):
        return {name: _attributes(getattr(model, name)) for name in type(model).model_fields}
    return [_attributes(v) for v in model] if isinstance(model, list) else model


def test_baseline_policy_holds_exactly_the_model_defaults():
    """model.baseline writes the defaults again without pydantic (start-up of `guywire check`): they
    must not drift from the models'. On failure, copy PolicySpec().model_dump() into SPEC_DEFAULTS."""
    base = baseline_policy()
    assert base.name == BASELINE_NAME and base.kind == "ClusterComplexityPolicy" and base.namespace is None
    assert base.ref == policy({}, name=BASELINE_NAME).ref
    assert base.spec.as_dict() == _attributes(PolicySpec()), "model/baseline.py SPEC_DEFAULTS drifted"
    assert base.spec.enforcement is Enforcement.AUDIT
    assert base.spec.override_for("GW-OBS-001") is None


def test_baseline_policy_is_read_only_and_fresh_each_time():
    a, b = baseline_policy(), baseline_policy()
    with pytest.raises(AttributeError):
        a.spec.rules.retries.max_attempts = 9
    a.spec.rules.observability.required_labels.append("team")  # a list is the caller's own copy
    assert b.spec.rules.observability.required_labels == ["app.kubernetes.io/name"]


def test_check_without_policies_never_imports_pydantic(tmp_path):
    """The baseline path stays off pydantic: it was two thirds of `guywire check`'s start-up."""
    import subprocess
    import sys

    (tmp_path / "d.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n"
                                     "spec: {template: {spec: {containers: [{name: a, image: a:1}]}}}\n")
    code = ("import sys, guywire.cli as c; rc = c.main(['check', sys.argv[1], '--format', 'json']); "
            "print([m for m in sys.modules if m.split('.')[0] == 'pydantic'], file=sys.stderr); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"


def test_generation_is_read_when_it_is_a_number():
    obj = {"kind": "ClusterComplexityPolicy", "metadata": {"name": "p", "generation": 7}}
    assert parse_policy(obj).generation == 7
    obj["metadata"]["generation"] = "7"
    assert parse_policy(obj).generation is None


def test_namespaced_policy_only_matches_its_namespace():
    inv = Inventory()
    local = policy({}, kind="ComplexityPolicy", namespace="ml")
    assert policy_matches(local, workload("ml"), inv)
    assert not policy_matches(local, workload("data"), inv)
    assert not policy_matches(local, workload("default"), inv)
    # match.namespaces cannot widen a namespaced policy beyond its own namespace
    wide = policy({"match": {"namespaces": ["*"]}}, kind="ComplexityPolicy", namespace="ml")
    assert not policy_matches(wide, workload("data"), inv)
    cluster = policy({})
    assert policy_matches(cluster, workload("data"), inv)


def test_override_by_id_wins_over_category_glob():
    spec = policy({"overrides": [
        {"rule": "GW-OBS-002", "severity": "Critical"},
        {"rule": "GW-OBS-*", "severity": "Low"},
        {"rule": "GW-CPX-001", "disabled": True},
    ]}).spec
    assert spec.override_for("GW-OBS-002").severity is Severity.CRITICAL
    assert spec.override_for("GW-OBS-003").severity is Severity.LOW
    assert spec.override_for("GW-CPX-001").disabled
    assert spec.override_for("GW-DEP-001") is None


def test_last_override_for_the_same_rule_wins():
    spec = policy({"overrides": [{"rule": "GW-OBS-*", "severity": "Low"},
                                 {"rule": "GW-OBS-*", "severity": "High"}]}).spec
    assert spec.override_for("GW-OBS-004").severity is Severity.HIGH


def test_overrides_change_rule_severity_and_switch_rules_off():
    p = policy({"overrides": [{"rule": "GW-OBS-*", "severity": "Critical"}, {"rule": "GW-CPX-001", "disabled": True}],
                "rules": {"observability": {"livenessProbe": False}}})
    assert REGISTRY["GW-OBS-004"].severity_in(p) is Severity.CRITICAL
    assert REGISTRY["GW-DEP-001"].severity_in(p) is REGISTRY["GW-DEP-001"].severity
    assert not REGISTRY["GW-CPX-001"].enabled_in(p)
    assert not REGISTRY["GW-OBS-002"].enabled_in(p), "a rule's switch turns it off"
    assert REGISTRY["GW-OBS-001"].enabled_in(p)


@pytest.mark.parametrize("selector, labels, matches", [
    ({}, {"a": "b"}, True),
    ({"matchLabels": {"team": "ml"}}, {"team": "ml", "x": "y"}, True),
    ({"matchLabels": {"team": "ml"}}, {"team": "data"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]}, {"tier": "gold"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}, {}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, {}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, {"tier": "gold"}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
])
def test_label_selector(selector, labels, matches):
    assert LabelSelector.model_validate(selector).matches(labels) is matches


def test_severity_parse_and_order():
    assert Severity.parse(" high ") is Severity.HIGH
    assert [s.rank for s in (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse("urgent")
