"""PolicyReports (wgpolicyk8s.io/v1alpha2): the shape Policy Reporter reads, one result per object x rule,
bounded size, deterministic output, and the offline ``guywire check --format policyreport``."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import jsonschema
import pytest
import yaml

from guywire.cli import main
from guywire.clock import ManualClock
from guywire.engine.evaluator import Engine
from guywire.model.policy import baseline_policy, parse_policy
from guywire.render.policy_reports import DIGEST_ANNOTATION, policy_reports, results_digest

from .manifests import container, deployment, inventory, service

NOW = datetime(2026, 11, 22, 10, 0, 0, 250_000, tzinfo=timezone.utc)

# The essentials of the upstream CRD's openAPIV3Schema (kyverno/kyverno config/crds/policyreport,
# wgpolicyk8s.io_policyreports.yaml, v1alpha2), written out here. additionalProperties: false stands for
# the API server's pruning: a field the schema does not know would be silently dropped.
_REF = {"type": "object", "additionalProperties": False, "properties": {
    k: {"type": "string"} for k in ("apiVersion", "kind", "name", "namespace", "uid", "resourceVersion", "fieldPath")}}
_RESULT = {
    "type": "object", "required": ["policy"], "additionalProperties": False,
    "properties": {
        "policy": {"type": "string"}, "rule": {"type": "string"}, "category": {"type": "string"},
        "message": {"type": "string"}, "source": {"type": "string"}, "scored": {"type": "boolean"},
        "result": {"type": "string", "enum": ["pass", "fail", "warn", "error", "skip"]},
        "severity": {"type": "string", "enum": ["critical", "high", "low", "medium", "info"]},
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
        "resources": {"type": "array", "items": _REF},
        "timestamp": {"type": "object", "required": ["nanos", "seconds"], "additionalProperties": False,
                      "properties": {"seconds": {"type": "integer"},
                                     "nanos": {"type": "integer", "minimum": 0, "maximum": 999_999_999}}},
    },
}
REPORT_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["wgpolicyk8s.io/v1alpha2"]},
        "kind": {"enum": ["PolicyReport", "ClusterPolicyReport"]},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "results": {"type": "array", "items": _RESULT},
        "summary": {"type": "object", "additionalProperties": False, "properties": {
            k: {"type": "integer", "minimum": 0} for k in ("pass", "fail", "warn", "error", "skip")}},
        "scope": _REF,
        "scopeSelector": {"type": "object"},
    },
}


def validate(report: dict) -> None:
    jsonschema.Draft4Validator(REPORT_SCHEMA).validate(report)
    assert (report["kind"] == "PolicyReport") == ("namespace" in report["metadata"]), \
        "PolicyReport is namespaced, ClusterPolicyReport is not"
    for key, n in report["summary"].items():
        assert n == sum(1 for r in report["results"] if r["result"] == key), f"summary.{key} counts the results"


def judged(*objs: dict, policies=None) -> Engine:
    engine = Engine(policies or [baseline_policy()], inventory(*objs), now=NOW)
    engine.evaluate_all()
    return engine


def by_name(reports: list[dict]) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in reports}


STACK = (
    deployment("chat", depends_on="llm, ghost", retry="attempts=3"),
    deployment("llm", containers=[container("a", probes=False), container("b", probes=False)]),
    service("llm"),
    deployment("indexer", "data", depends_on="llm.ml"),
)


def test_reports_match_the_crd_schema_and_hold_one_result_per_object_and_rule():
    reports = policy_reports(judged(*STACK), NOW)
    assert [(r["kind"], r["metadata"]["name"], r["metadata"]["namespace"]) for r in reports] == [
        ("PolicyReport", "guywire-data", "data"), ("PolicyReport", "guywire-ml", "ml")]
    for r in reports:
        validate(r)
    ml = by_name(reports)["guywire-ml"]
    keys = [(res["resources"][0]["name"], res["rule"]) for res in ml["results"]]
    assert len(keys) == len(set(keys)), "one result per workload x rule"
    readiness = next(r for r in ml["results"] if r["rule"] == "GW-OBS-001")
    assert readiness["properties"] == {"ruleName": "missing-readiness-probe", "findings": "2"}
    assert readiness["message"].startswith('container "a": has no readinessProbe')
    assert 'container "b": has no readinessProbe' in readiness["message"]
    assert readiness["resources"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm", "namespace": "ml"}]
    assert (readiness["policy"], readiness["result"], readiness["severity"], readiness["category"],
            readiness["source"]) == ("guywire-baseline", "fail", "medium", "Observability", "guywire")
    assert readiness["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 250_000_000}
    unresolved = next(r for r in ml["results"] if r["rule"] == "GW-DEP-001")
    assert unresolved["severity"] == "medium" and "ghost" in unresolved["message"]


def test_severity_override_and_the_worst_policy_name_the_result():
    strict = parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "strict"},
                           "spec": {"overrides": [{"rule": "GW-OBS-001", "severity": "Critical"}]}})
    reports = policy_reports(judged(*STACK, policies=[baseline_policy(), strict]), NOW)
    readiness = next(r for r in by_name(reports)["guywire-ml"]["results"] if r["rule"] == "GW-OBS-001")
    assert (readiness["policy"], readiness["severity"]) == ("strict", "critical")


def test_graph_rules_carry_their_path():
    reports = policy_reports(judged(
        deployment("a", depends_on="b", retry="attempts=4, perTryTimeout=9s, backoff=exponential"),
        deployment("b", depends_on="c", retry="attempts=4, perTryTimeout=2s, backoff=exponential"),
        deployment("c")), NOW)
    amp = next(r for r in by_name(reports)["guywire-ml"]["results"] if r["rule"] == "GW-RTY-002")
    assert amp["properties"]["path"] == "ml/a -> ml/b -> ml/c"


def test_pass_results_only_when_asked_and_exemptions_are_skips():
    exempt = deployment("llm", annotations={"guywire.dev/exempt": "GW-OBS-002",
                                            "guywire.dev/exempt-reason": "probed by the gateway"})
    engine = judged(exempt)
    (report,) = policy_reports(engine, NOW)
    assert {r["result"] for r in report["results"]} <= {"fail", "skip"}
    skip = next(r for r in report["results"] if r["result"] == "skip")
    assert (skip["rule"], skip["message"]) == ("GW-OBS-002", "Exempted: probed by the gateway")
    (full,) = policy_reports(engine, NOW, include_pass=True)
    validate(full)
    rules_run = {r.id for r in engine.rules if r.target == "workload" and r.enabled_in(engine.policies[0])}
    assert {r["rule"] for r in full["results"]} == rules_run, "every rule the policy runs has a result"
    assert full["summary"]["pass"] == len(rules_run) - full["summary"]["fail"] - full["summary"]["skip"] > 0


def test_chunks_past_the_limit_keep_every_result_once():
    objs = [deployment(f"w{i:02d}", containers=[container(probes=False)]) for i in range(12)]
    reports = policy_reports(judged(*objs), NOW, max_results=7)
    names = [r["metadata"]["name"] for r in reports]
    total = sum(len(r["results"]) for r in reports)
    assert names == ["guywire-ml"] + [f"guywire-ml-{i}" for i in range(2, len(names) + 1)]
    assert all(len(r["results"]) <= 7 for r in reports) and total > 7
    whole = policy_reports(judged(*objs), NOW)[0]["results"]
    assert [x for r in reports for x in r["results"]] == whole, "chunks are the one ordered list, cut"
    for r in reports:
        validate(r)


def test_output_is_deterministic_and_the_digest_ignores_timestamps():
    first = policy_reports(judged(*STACK), NOW)
    later = policy_reports(judged(*reversed(STACK)), datetime(2027, 1, 1, tzinfo=timezone.utc))
    strip = [{**r, "results": [{k: v for k, v in x.items() if k != "timestamp"} for x in r["results"]]} for r in first]
    strip_later = [{**r, "results": [{k: v for k, v in x.items() if k != "timestamp"} for x in r["results"]]}
                   for r in later]
    assert strip == strip_later
    assert [r["metadata"]["annotations"][DIGEST_ANNOTATION] for r in first] == \
        [r["metadata"]["annotations"][DIGEST_ANNOTATION] for r in later]
    changed = copy.deepcopy(first[1])
    changed["results"].pop()
    assert results_digest(changed) != results_digest(first[1])


def test_digest_changes_when_a_finding_clears():
    engine = judged(*STACK)
    before = by_name(policy_reports(engine, NOW))["guywire-ml"]["metadata"]["annotations"][DIGEST_ANNOTATION]
    from .manifests import view
    engine.upsert(view(deployment("chat", depends_on="llm")))
    after = by_name(policy_reports(engine, NOW, namespaces=["ml"]))
    assert list(after) == ["guywire-ml"], "a namespace filter gives only those PolicyReports"
    assert after["guywire-ml"]["metadata"]["annotations"][DIGEST_ANNOTATION] != before


def test_node_findings_go_to_a_cluster_policy_report():
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-node-1",
                                                             "labels": {"nvidia.com/gpu.present": "true"}}}
    reports = policy_reports(judged(deployment("llm"), node), NOW)
    cluster = by_name(reports)["guywire-cluster"]
    validate(cluster)
    assert cluster["kind"] == "ClusterPolicyReport"
    (res,) = cluster["results"]
    assert res["rule"] == "GW-GPU-003" and res["resources"] == [{"apiVersion": "v1", "kind": "Node",
                                                                  "name": "gpu-node-1"}]


def test_service_findings_go_to_their_namespace_report():
    suggestions = parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "suggestions"},
                                "spec": {"rules": {"simplify": {"enabled": True}}}})
    orphan = service("model-server", "serving", selector={"app": "my-pool"})
    reports = by_name(policy_reports(judged(deployment("llm"), orphan, policies=[suggestions]), NOW))
    report = reports["guywire-serving"]
    validate(report)
    (res,) = [r for r in report["results"] if r["resources"][0]["kind"] == "Service"]
    assert res["resources"] == [{"apiVersion": "v1", "kind": "Service", "name": "model-server",
                                 "namespace": "serving"}]
    assert res["rule"] == "GW-SMP-003" and res["policy"] == "suggestions" and res["result"] == "fail"


def test_skipped_namespaces_and_unmatched_workloads_get_no_report():
    only_ml = parse_policy({"kind": "ComplexityPolicy", "metadata": {"name": "ml-only", "namespace": "ml"}, "spec": {}})
    reports = policy_reports(judged(deployment("x", "kube-system"), deployment("y", "web"), deployment("z"),
                                    policies=[only_ml]), NOW)
    assert [r["metadata"]["name"] for r in reports] == ["guywire-ml"]


def test_bad_limit_is_refused():
    with pytest.raises(ValueError, match="max_results must be at least 1"):
        policy_reports(judged(), NOW, max_results=0)


def test_check_prints_policy_reports_offline(tmp_path, capsys):
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump_all(list(STACK)))
    rc = main(["check", str(path), "--format", "policyreport", "--now", "2026-11-22T10:00:00Z"])
    out = capsys.readouterr().out
    docs = list(yaml.safe_load_all(out))
    assert rc == 1, "exit codes as for every format: findings at or above --fail-on"
    assert "&id" not in out, "no YAML anchors: every result stands alone"
    assert [d["metadata"]["name"] for d in docs] == ["guywire-data", "guywire-ml"]
    for d in docs:
        validate(d)
    assert docs[1]["results"][0]["timestamp"] == {"seconds": 1795341600, "nanos": 0}


def test_check_stamps_reports_with_its_clock_unless_now_is_given(tmp_path, capsys):
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump_all(list(STACK)))
    clock = ManualClock("2031-03-04T05:06:07Z")
    main(["check", str(path), "--format", "policyreport"], clock=clock)
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["results"][0]["timestamp"]["seconds"] for d in docs} == {int(clock.now().timestamp())}
    main(["check", str(path), "--format", "policyreport", "--now", "2026-11-22T10:00:00Z"], clock=clock)
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["results"][0]["timestamp"]["seconds"] for d in docs} == {1795341600}


def test_check_prints_openreports_with_the_same_results(tmp_path, capsys):
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump_all(list(STACK)))
    main(["check", str(path), "--format", "policyreport", "--now", "2026-11-22T10:00:00Z"])
    wg = list(yaml.safe_load_all(capsys.readouterr().out))
    rc = main(["check", str(path), "--format", "openreports", "--now", "2026-11-22T10:00:00Z"])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert rc == 1
    assert {(d["apiVersion"], d["kind"], d["source"]) for d in docs} == {("openreports.io/v1alpha1", "Report",
                                                                         "guywire")}
    assert [d["results"] for d in docs] == [d["results"] for d in wg]
    assert [d["metadata"] for d in docs] == [d["metadata"] for d in wg]  # same names, labels and digests


def test_an_unknown_report_api_is_refused():
    with pytest.raises(ValueError, match="report api 'v3' is not one of wgpolicyk8s, openreports"):
        policy_reports(judged(), NOW, api="v3")
