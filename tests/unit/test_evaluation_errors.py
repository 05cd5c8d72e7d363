"""A rule that raises is an evaluation error, never a violation (Kyverno's "error" apart from "fail").

One rule of the registry is made to raise on one object; every path must report an error
apart from the findings: the engine, ``guywire check`` (exit 2 whatever --fail-on says, and each
format's own way of saying "could not evaluate"), admission (allowed, with a warning), the operator
(no annotation, no Warning Event, an ``EvaluationErrors`` condition, a metric) and PolicyReports
(``result: error``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from guywire.engine.admission import Admission
from guywire.views.annotations import VIOLATIONS
from guywire.cli import build, main
from guywire.engine.evaluator import Engine
from guywire.model.evaluation import EvaluationError
from guywire.model.policy import parse_policy
from guywire.operator.status_writer import ERRORS_SHOWN, evaluation_errors_condition
from guywire.render.policy_reports import policy_reports
from guywire.rules import REGISTRY
from tests.examples import example
from tests.unit.test_admission import request
from tests.unit.test_operator_state import annotation_patches, drain, started

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ROOT / "examples" / "clean"  # no finding under the baseline: whatever is reported comes from the error
RULE = "GW-OBS-007"
VICTIM = "search-api"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def break_rule(monkeypatch, rule_id: str = RULE, victims: tuple[str, ...] = (VICTIM,),
               raised=lambda name: KeyError(f"boom on {name}")) -> None:
    """``rule_id`` raises ``raised(name)`` on the objects named in ``victims`` and works as before on the others."""
    original = REGISTRY[rule_id]

    def check(obj, params, ctx):
        if obj.name in victims:
            raise raised(obj.name)
        return original.check(obj, params, ctx)

    monkeypatch.setitem(REGISTRY, rule_id, dataclasses.replace(original, check=check))


def clean_engine(*policies) -> Engine:
    inventory, found, diags, _, _ = build([str(CLEAN)], [])
    assert not [d for d in diags if d.error]
    from guywire.model.baseline import baseline_policy
    return Engine(list(policies) or found or [baseline_policy()], inventory, now=NOW)


def policy(enforcement: str, name: str = "everything") -> object:
    return parse_policy({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                         "metadata": {"name": name}, "spec": {"enforcement": enforcement}})


# ----- engine --------------------------------------------------------------------------------------
def test_a_rule_that_raises_is_an_error_kept_apart_from_the_findings(monkeypatch):
    break_rule(monkeypatch, victims=(VICTIM, "latest-image"))
    engine = clean_engine()
    result = engine.evaluate_all()
    assert result.findings == [], "an error is never a finding"
    (e,) = result.errors
    assert (e.rule, e.name, str(e.object), e.error) == (RULE, "mutable-image", "Deployment search/search-api",
                                                        "KeyError")
    assert "boom on search-api" in e.detail and "Traceback" not in e.render()
    assert e.source is not None and e.source.file.endswith("search-stack.yaml")
    assert engine.errors_for(("search", "Deployment", VICTIM)) == [e]
    assert engine.policy_result(engine.policies[0]).errors == [e]
    assert engine.policy_result(engine.policies[0]).violating == 0


def test_the_other_objects_keep_the_findings_of_the_rule_that_raised_elsewhere(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine()
    engine.evaluate_all()
    body = example("Deployment", "query-embedder")
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "michaelf34/infinity:latest"
    from guywire.views.inventory import view_of
    engine.upsert(view_of(body))
    result = engine.result()
    assert [(f.rule, f.workload.name) for f in result.findings] == [(RULE, "query-embedder")]
    assert [(e.rule, e.object.name) for e in result.errors] == [(RULE, VICTIM)]


def test_errors_follow_incremental_changes_and_removals(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine()
    engine.evaluate_all()
    key = ("search", "Deployment", VICTIM)
    from guywire.views.inventory import view_of
    engine.upsert(view_of(example("Deployment", VICTIM)))
    assert len(engine.result().errors) == 1, "judged again: still one error, not two"
    renamed = example("Deployment", VICTIM)
    renamed["metadata"]["name"] = "search-api-v2"
    engine.remove("Deployment", "search", VICTIM)
    engine.upsert(view_of(renamed))
    assert key not in engine.errors and engine.result().errors == []


def test_service_and_node_rules_that_raise_are_errors_too(monkeypatch):
    from guywire.model.policy import PolicySpec, Rules, SimplifyRules
    from guywire.model.policy import Policy as P
    from guywire.views.workload import Node
    break_rule(monkeypatch, "GW-SMP-003", victims=("query-embedder",))
    break_rule(monkeypatch, "GW-GPU-003", victims=("gpu-node-1",))
    p = P(kind="ClusterComplexityPolicy", name="smp", spec=PolicySpec(rules=Rules(simplify=SimplifyRules(
        enabled=True))))
    engine = clean_engine(p)
    engine.inventory.nodes["gpu-node-1"] = Node(name="gpu-node-1", labels={"nvidia.com/gpu.present": "true"},
                                                annotations={})
    result = engine.evaluate_all()
    assert {(e.rule, str(e.object)) for e in result.errors} == {
        ("GW-SMP-003", "Service search/query-embedder"), ("GW-GPU-003", "Node gpu-node-1")}
    assert not [f for f in result.findings if f.rule in ("GW-SMP-003", "GW-GPU-003")]
    engine.remove("Node", None, "gpu-node-1")
    assert [e.rule for e in engine.result().errors] == ["GW-SMP-003"]


def test_a_caller_that_collects_no_errors_sees_the_exception(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine()
    w = engine.inventory.workloads[("search", "Deployment", VICTIM)]
    with pytest.raises(KeyError):
        engine.judge(w, engine.policies[0])


# ----- guywire check -------------------------------------------------------------------------------
def check(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["check", str(CLEAN), "--fail-on", "high", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_on_stderr(err: str) -> None:
    assert f"guywire: error: [{RULE} mutable-image] Deployment search/{VICTIM}: the rule could not evaluate " \
           f"(KeyError: 'boom on {VICTIM}')" in err
    assert "Traceback" not in err


def test_check_exits_2_whatever_fail_on_says_and_prints_the_error(monkeypatch, capsys):
    break_rule(monkeypatch)
    rc, out, err = check(capsys)
    assert rc == 2
    assert_on_stderr(err)
    assert "1 rule evaluation error(s)" in out and f"[{RULE} mutable-image] Deployment search/{VICTIM}" in out
    assert "No findings." not in out
    assert "GW-ANN-000" not in out + err


class Unprintable(Exception):
    def __str__(self) -> str:
        raise TypeError("str fails")


def test_an_exception_that_cannot_be_printed_is_still_one_error(monkeypatch, capsys):
    break_rule(monkeypatch, raised=lambda name: Unprintable())
    rc, _, err = check(capsys)
    assert rc == 2
    assert f"[{RULE} mutable-image] Deployment search/{VICTIM}: the rule could not evaluate " \
           "(Unprintable: <unprintable Unprintable>)" in err
    assert "str fails" not in err


def test_check_json_carries_the_error_in_the_errors_list_not_the_findings(monkeypatch, capsys):
    break_rule(monkeypatch)
    rc, out, err = check(capsys, "--format", "json")
    assert rc == 2
    assert_on_stderr(err)
    data = json.loads(out)
    assert data["findings"] == []
    (e,) = data["errors"]
    assert e["level"] == "error" and e["rule"] == RULE and e["name"] == "mutable-image"
    assert e["object"] == {"kind": "Deployment", "namespace": "search", "name": VICTIM}
    assert e["exception"] == {"type": "KeyError", "message": f"'boom on {VICTIM}'"}
    assert e["file"].endswith("search-stack.yaml") and e["line"]
    assert data["summary"]["evaluationErrors"] == 1 and data["summary"]["errors"] == 1
    assert data["summary"]["findings"] == 0


def test_check_sarif_carries_the_error_as_a_tool_execution_notification(monkeypatch, capsys):
    break_rule(monkeypatch)
    rc, out, _ = check(capsys, "--format", "sarif")
    assert rc == 2
    run = json.loads(out)["runs"][0]
    assert run["results"] == [], "an error is not a result"
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    (note,) = inv["toolExecutionNotifications"]
    assert note["level"] == "error"
    assert note["associatedRule"]["id"] == RULE
    assert run["tool"]["driver"]["rules"][note["associatedRule"]["index"]]["id"] == RULE
    assert note["exception"] == {"kind": "KeyError", "message": f"'boom on {VICTIM}'"}
    assert note["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == f"Deployment search/{VICTIM}"


def test_check_junit_carries_the_error_as_an_error_element_not_a_failure(monkeypatch, capsys):
    break_rule(monkeypatch)
    rc, out, _ = check(capsys, "--format", "junit")
    assert rc == 2
    root = ET.fromstring(out)
    assert root.get("failures") == "0" and root.get("errors") == "1"
    suite = next(s for s in root.iter("testsuite") if s.get("name") == f"Deployment search/{VICTIM}")
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    case = next(c for c in suite.iter("testcase") if c.get("name") == f"{RULE} mutable-image")
    assert case.find("failure") is None
    error = case.find("error")
    assert error is not None and error.get("type") == "KeyError" and "boom on search-api" in error.get("message")


def test_check_policyreport_uses_result_error(monkeypatch, capsys):
    break_rule(monkeypatch)
    rc, out, _ = check(capsys, "--format", "policyreport", "--now", "2026-11-24T10:00:00Z")
    assert rc == 2
    (report,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "PolicyReport"]
    (result,) = report["results"]
    assert result["result"] == "error" and result["rule"] == RULE
    assert result["resources"][0]["name"] == VICTIM
    assert "KeyError" in result["message"] and "severity" not in result
    assert report["summary"]["error"] == 1 and report["summary"]["fail"] == 0


def test_check_without_errors_still_exits_0(capsys):
    rc, out, err = check(capsys)
    assert rc == 0 and "No findings." in out and "error" not in err


# ----- admission -----------------------------------------------------------------------------------
def decide(engine: Engine, name: str = VICTIM):
    body = example("Deployment", VICTIM)
    body["metadata"]["name"] = name
    return Admission(engine).decide(request(body))


@pytest.mark.parametrize("enforcement", ["Warn", "Enforce"])
def test_admission_allows_a_request_a_rule_could_not_evaluate_and_warns(monkeypatch, enforcement):
    break_rule(monkeypatch)
    engine = clean_engine(policy(enforcement))
    engine.evaluate_all()
    d = decide(engine)
    assert d.allowed and d.outcome == "error"
    assert d.review()["response"]["allowed"] is True
    assert any(RULE in w and "mutable-image" in w and "KeyError" in w and "allowed" in w for w in d.warnings)
    assert [e.rule for e in d.errors] == [RULE]
    assert d.policies == ["ClusterComplexityPolicy/everything"]


def test_admission_still_denies_what_the_other_rules_find_under_enforce(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine(policy("Enforce"))
    engine.evaluate_all()
    body = example("Deployment", VICTIM)
    del body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    d = Admission(engine).decide(request(body))
    assert not d.allowed and d.outcome == "denied"
    assert "GW-OBS-001" in d.message and RULE not in d.message, "the error is not a violation"
    assert any(RULE in w and "KeyError" in w for w in d.warnings)


def test_admission_says_nothing_of_an_audit_policy_s_errors(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine(policy("Audit"))
    engine.evaluate_all()
    d = decide(engine)
    assert d.allowed and d.outcome == "allowed" and d.warnings == [] and d.errors == []


# ----- operator ------------------------------------------------------------------------------------
def test_the_operator_writes_no_violation_and_no_event_for_an_error_and_sets_a_condition(monkeypatch, caplog):
    break_rule(monkeypatch)
    state = started()
    with caplog.at_level("WARNING", logger="guywire.operator"):
        asyncio.run(drain(state))
    patch = annotation_patches(state.client)["/apis/apps/v1/namespaces/search/deployments/search-api"]
    assert patch[VIOLATIONS] is None, "no violation annotation for an error"
    assert not [e for e in state.client.events if e["name"] == VICTIM]
    assert not [e for e in state.client.events if e["reason"] in (RULE, "GW-ANN-000")
                and e["name"] == VICTIM]
    status = state.status_writer.status_for("ClusterComplexityPolicy/ai-baseline")
    cond = next(c for c in status["conditions"] if c["type"] == "EvaluationErrors")
    assert cond["status"] == "True" and cond["reason"] == "RuleRaised"
    assert cond["message"].startswith("1 evaluation error(s)")
    assert f"{RULE} on Deployment search/{VICTIM}: KeyError" in cond["message"]
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert state.metrics.sample("guywire_evaluation_errors", rule=RULE, namespace="search") == 1
    written = [body["status"] for path, body in state.client.patches if path.endswith("ai-baseline/status")]
    assert any(c["type"] == "EvaluationErrors" and c["status"] == "True" for c in written[-1]["conditions"])
    assert any(r.getMessage().startswith("Policy ClusterComplexityPolicy/ai-baseline: 1 evaluation error(s)")
               for r in caplog.records), "the operator's log says so too"


def test_the_condition_is_false_and_the_metric_empty_when_every_rule_evaluates():
    state = started()
    asyncio.run(drain(state))
    status = state.status_writer.status_for("ClusterComplexityPolicy/ai-baseline")
    cond = next(c for c in status["conditions"] if c["type"] == "EvaluationErrors")
    assert (cond["status"], cond["reason"]) == ("False", "NoErrors")
    assert state.metrics.sample("guywire_evaluation_errors", rule=RULE, namespace="search") == 0


def test_the_condition_names_the_first_few_and_counts_the_rest():
    errors = [EvaluationError(rule=RULE, name="mutable-image", object=_ref(f"w{i}"), error="KeyError",
                              detail=f"'{i}'") for i in range(ERRORS_SHOWN + 2)]
    cond = evaluation_errors_condition(errors, 4)
    assert cond["status"] == "True" and cond["observedGeneration"] == 4
    assert cond["message"].startswith(f"{ERRORS_SHOWN + 2} evaluation error(s)")
    assert "Deployment ml/w0" in cond["message"] and f"Deployment ml/w{ERRORS_SHOWN}" not in cond["message"]
    assert "and 2 more" in cond["message"]


def _ref(name: str):
    from guywire.model.finding import ObjectRef
    return ObjectRef("Deployment", "ml", name)


def test_the_operator_s_policy_reports_use_result_error(monkeypatch):
    break_rule(monkeypatch)
    state = started()
    reports = policy_reports(state.engine, NOW, namespaces=["search"])
    (report,) = reports
    errors = [r for r in report["results"] if r["result"] == "error"]
    assert [(r["rule"], r["resources"][0]["name"], r["policy"]) for r in errors] == [(RULE, VICTIM, "ai-baseline")]
    assert not [r for r in report["results"] if r["result"] == "fail" and r["resources"][0]["name"] == VICTIM]


def test_pass_results_leave_out_the_rule_that_raised(monkeypatch):
    break_rule(monkeypatch)
    engine = clean_engine()
    engine.evaluate_all()
    (report,) = policy_reports(engine, NOW, include_pass=True)
    mine = {r["rule"]: r["result"] for r in report["results"] if r["resources"][0]["name"] == VICTIM}
    assert mine[RULE] == "error" and mine["GW-OBS-001"] == "pass"
