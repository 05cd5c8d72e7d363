"""`guywire check --baseline`: only findings that are new or got worse, so CI can gate on regressions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from guywire.cli import main
from guywire.model.finding import Finding, ObjectRef
from guywire.model.severity import Severity
from guywire.rules import REGISTRY
from guywire.engine.insights import first_figure, known_from_finding, known_from_json, new_or_worse

from .manifests import deployment, service

R3 = "attempts=3, perTryTimeout=1s, timeout=10s, backoff=exponential"


def F(rule: str, name: str, message: str, sev: Severity = Severity.MEDIUM, location: str | None = None,
      observed: float | None = None, limit: float | None = None, unit: str | None = None) -> Finding:
    return Finding(rule=rule, name="x", severity=sev, workload=ObjectRef("Deployment", "ml", name), message=message,
                   location=location, observed=observed, limit=limit, unit=unit)


def calls(n: int, limit: int = 10, text: str | None = None) -> Finding:
    return F("GW-RTY-002", "gw", text or f"can send {n} calls to the end of one path, above the limit of {limit}.",
             observed=n, limit=limit, unit="calls")


def test_unchanged_findings_are_hidden_and_new_ones_shown():
    old = [F("GW-OBS-002", "api", "has no livenessProbe.")]
    cur = old + [F("GW-OBS-002", "web", "has no livenessProbe.")]
    cmp = new_or_worse(cur, [known_from_finding(f) for f in old])
    assert [(r.finding.workload.name, r.reason) for r in cmp.regressions] == [("web", "new")]
    assert (cmp.baseline, cmp.unchanged, cmp.fixed) == (1, 1, 0)


def test_a_higher_severity_is_worse():
    old = [F("GW-RTY-002", "gw", "can send 27 calls.", Severity.MEDIUM)]
    cur = [F("GW-RTY-002", "gw", "can send 27 calls.", Severity.HIGH)]
    cmp = new_or_worse(cur, [known_from_finding(f) for f in old])
    assert [r.reason for r in cmp.regressions] == ["severity Medium -> High"]


def test_a_figure_further_past_its_limit_is_worse_and_a_smaller_one_is_not():
    base = [known_from_finding(calls(27))]
    assert [r.reason for r in new_or_worse([calls(81)], base).regressions] == ["27 calls (limit 10) -> 81 calls (limit 10)"]
    assert new_or_worse([calls(18)], base).regressions == []
    assert new_or_worse([calls(27)], base).regressions == []


def test_worse_is_measured_against_the_limit_of_each_side():
    base = [known_from_finding(calls(27, limit=10))]  # 17 past
    assert new_or_worse([calls(30, limit=20)], base).regressions == []  # 10 past: better, though 30 > 27
    (r,) = new_or_worse([calls(27, limit=5)], base).regressions  # 22 past: the same figure under a stricter limit
    assert r.reason == "27 calls (limit 10) -> 27 calls (limit 5)"


def test_a_figure_without_a_limit_is_worse_when_it_grows():
    def cycle(n: int) -> Finding:
        return F("GW-DEP-004", "api", f"is on a dependency cycle of {n} workload(s).", sev=Severity.HIGH,
                 observed=n, limit=None, unit="workloads")
    base = [known_from_finding(cycle(2))]
    assert [r.reason for r in new_or_worse([cycle(3)], base).regressions] == ["2 workloads -> 3 workloads"]
    assert new_or_worse([cycle(2)], base).regressions == []


def test_the_gate_reads_the_figures_never_the_words():
    """Messages reworded between the baseline and now, with numbers that mislead a reader of text."""
    base = [known_from_finding(calls(27, text="has a limit of 10 and sends 27 calls."))]
    grown = calls(81, text="amplifies calls beyond the limit.")  # no number at all
    assert [r.reason for r in new_or_worse([grown], base).regressions] == ["27 calls (limit 10) -> 81 calls (limit 10)"]
    same = calls(27, text="sends 27 calls (100 allowed in the next release).")  # a larger first number
    assert new_or_worse([same], base).regressions == []
    # same words, different figures: the figures decide even when the messages match
    assert len(new_or_worse([calls(81, text="has a limit of 10 and sends 27 calls.")], base).regressions) == 1


def test_figures_in_different_units_are_not_compared():
    was = known_from_finding(F("GW-RTY-004", "gw", "waits 1s.", observed=4.0, limit=1.0, unit="seconds"))
    now = F("GW-RTY-004", "gw", "waits 1s.", observed=90, limit=1, unit="calls")
    assert new_or_worse([now], [was]).regressions == []


def test_findings_are_matched_by_rule_object_and_location():
    old = [F("GW-OBS-002", "api", "has no livenessProbe.", location='container "a"')]
    cur = [F("GW-OBS-002", "api", "has no livenessProbe.", location='container "b"'),
           F("GW-OBS-007", "api", "has no livenessProbe.", location='container "a"')]
    cmp = new_or_worse(cur, [known_from_finding(f) for f in old])
    assert len(cmp.regressions) == 2 and cmp.fixed == 1


def test_a_second_finding_under_one_key_is_new():
    old = [F("GW-DEP-001", "api", 'depends on "a", but no Service or workload a exists.')]
    cur = old + [F("GW-DEP-001", "api", 'depends on "b", but no Service or workload b exists.')]
    cmp = new_or_worse(cur, [known_from_finding(f) for f in old])
    assert [r.finding.message for r in cmp.regressions] == ['depends on "b", but no Service or workload b exists.']


def test_first_figure_ignores_numbers_in_names_and_durations():
    assert first_figure("tries llama3-8b 5 times") == 5
    assert first_figure("waits 10s per try on ml/v2 (2 x 8s)") == 2
    assert first_figure("no figure here") is None


def saved(**extra) -> dict:
    return {"rule": "GW-RTY-002", "name": "x", "severity": "High", "message": "[GW-RTY-002 x] Deployment ml/gw: m",
            "workload": {"kind": "Deployment", "namespace": "ml", "name": "gw"}, **extra}


def test_known_from_json_reads_a_saved_report_and_refuses_others():
    (k,) = known_from_json({"findings": [saved(observed=27, limit=10, unit="calls")]})
    assert k.key == ("GW-RTY-002", "Deployment", "ml", "gw", "") and k.severity is Severity.HIGH
    assert (k.observed, k.limit, k.unit, k.legacy) == (27, 10, "calls", False)
    (k,) = known_from_json({"findings": [saved(observed=None, limit=None, unit=None)]})
    assert (k.observed, k.legacy) == (None, False)  # a finding that measures nothing, in today's format
    with pytest.raises(ValueError, match="not a guywire JSON report"):
        known_from_json({"kind": "List"})
    with pytest.raises(ValueError, match="finding 1 .*observed is '27'"):
        known_from_json({"findings": [saved(observed="27", limit=10, unit="calls")]})


@pytest.mark.parametrize("finding, why", [
    ({"rule": "GW-RTY-002"}, "it has no workload (an object with kind and name)"),
    (saved(rule=None), "it has no rule (a rule id)"),
    (saved(workload={"kind": "Deployment"}), "it has no workload.name (a string)"),
    (saved(workload="gw"), "its workload is 'gw', not an object with kind and name"),
    (saved(severity="Severe"), "its severity is 'Severe', not low, medium, high or critical"),
    (saved(severity=None), "it has no severity (low, medium, high or critical)"),
])
def test_a_saved_finding_that_lacks_a_field_is_refused_naming_it(finding, why):
    with pytest.raises(ValueError) as err:
        known_from_json({"findings": [saved(observed=27, limit=10, unit="calls"), finding]})
    assert str(err.value) == f"finding 2 is not a guywire finding: {why}."


def test_only_findings_of_rules_that_measure_are_legacy_without_figures(tmp_path, capsys):
    measuring = saved(message="[GW-RTY-002 x] Deployment ml/gw: can send 27 calls.")
    plain = saved(rule="GW-OBS-001", message="[GW-OBS-001 x] Deployment ml/gw: no readiness probe.")
    assert REGISTRY["GW-RTY-002"].unit and REGISTRY["GW-OBS-001"].unit is None
    old, new = known_from_json({"findings": [measuring, plain, plain]})[:2]
    assert old.legacy and not new.legacy
    report = tmp_path / "old.json"
    report.write_text(json.dumps({"findings": [measuring, plain, plain]}))
    _, _, err = run(capsys, "check", write_all(tmp_path / "new.yaml", stack()), "--baseline", report)
    assert f"--baseline {report} was saved by an older guywire: 1 of its findings carry no observed" in err


def test_a_report_saved_before_findings_had_figures_is_compared_by_its_messages():
    (k,) = known_from_json({"findings": [saved(severity="Medium",
                                               message="[GW-RTY-002 x] Deployment ml/gw: can send 27 calls.")]})
    assert k.legacy and k.observed is None
    cmp = new_or_worse([calls(81)], [k])
    assert [r.reason for r in cmp.regressions] == ["27 -> 81"] and cmp.legacy == 1


# ----- the command -------------------------------------------------------------------------------
def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def stack(extra_retry: str | None = None) -> list[dict]:
    return [deployment("web", depends_on="api", retry=R3), service("web"),
            deployment("api", depends_on="db", retry=extra_retry or "attempts=1, timeout=5s"), service("api"),
            deployment("db"), service("db")]


def write_all(path: Path, objs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return path


def test_check_baseline_reports_only_what_got_worse(tmp_path, capsys):
    old = write_all(tmp_path / "old.yaml", stack())
    new = write_all(tmp_path / "new.yaml", stack("attempts=5, perTryTimeout=100ms, timeout=500ms, backoff=exponential"))
    rc_all, out_all, _ = run(capsys, "check", new)
    rc, out, _ = run(capsys, "check", new, "--baseline", old)
    assert rc == 1
    assert "GW-RTY-001" in out and "GW-RTY-002" in out  # 5 attempts, and 3 x 5 = 15 calls
    assert "GW-OBS-003" not in out and "GW-OBS-003" in out_all  # present before: not shown
    assert f"Against the baseline {old}:" in out


def test_check_baseline_with_no_regression_exits_clean(tmp_path, capsys):
    old = write_all(tmp_path / "old.yaml", stack())
    rc, out, _ = run(capsys, "check", old, "--baseline", old)
    assert rc == 0
    assert "0 finding(s) new or worse shown" in out and "No findings." in out


def test_check_baseline_accepts_a_saved_json_report(tmp_path, capsys):
    old = write_all(tmp_path / "old.yaml", stack())
    _, saved, _ = run(capsys, "check", old, "-o", "json")
    (tmp_path / "old.json").write_text(saved)
    new = write_all(tmp_path / "new.yaml", stack("attempts=5, perTryTimeout=100ms, timeout=500ms, backoff=exponential"))
    rc, out, _ = run(capsys, "check", new, "--baseline", tmp_path / "old.json", "-o", "json")
    data = json.loads(out)
    assert rc == 1
    assert {f["rule"] for f in data["findings"]} == {"GW-RTY-001", "GW-RTY-002"}
    b = data["summary"]["baseline"]
    assert b["newOrWorse"] == 2 and b["baselineFindings"] > 0 and b["source"].endswith("old.json")
    assert {r["reason"] for r in b["regressions"]} == {"new"}


def test_check_baseline_refuses_json_that_is_no_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"findings": "nope"}))
    rc, _, err = run(capsys, "check", write_all(tmp_path / "new.yaml", stack()), "--baseline", bad)
    assert rc == 2 and "not a guywire JSON report" in err


def test_check_summary_names_the_largest_blast_radius(tmp_path, capsys):
    path = write_all(tmp_path / "s.yaml", stack())
    _, out, _ = run(capsys, "check", path)
    assert "Largest blast radius, if one workload is down: ml/db (1 entry point(s), 2 workload(s))" in out
    _, out, _ = run(capsys, "check", path, "-o", "json")
    radii = json.loads(out)["summary"]["blastRadius"]
    assert radii[0] == {"workload": "ml/db", "kind": "Deployment", "entryPoints": 1, "workloads": 2,
                        "entries": ["ml/web"]}


# ----- the gate against reworded messages, old reports and SARIF ----------------------------------
def retrying(attempts: int) -> list[dict]:
    """web -(3x)-> api -(attempts x)-> db: GW-RTY-001 on api, GW-RTY-002 on web once attempts > 3."""
    return stack(f"attempts={attempts}, perTryTimeout=100ms, timeout=900ms, backoff=exponential")


def reword(monkeypatch) -> None:
    """Every measuring rule words its messages differently, its limit before its figure (as a later release might)."""
    from dataclasses import replace

    from guywire.model.units import render_figure
    from guywire.rules import complexity, dependencies, gpu_nodes, retries
    from guywire.rules.base import measured

    def reworded(template, *, observed, limit, unit, **kw):
        issue = measured(template, observed=observed, limit=limit, unit=unit, **kw)
        over = f"over its limit of {render_figure(limit, unit)}" if limit is not None else "over"
        return replace(issue, message=f"is {over} at {render_figure(observed, unit)}.")

    for module in (complexity, dependencies, gpu_nodes, retries):
        monkeypatch.setattr(module, "measured", reworded)


def saved_report(capsys, path: Path, objs: list[dict], fmt: str = "json") -> Path:
    src = write_all(path.with_suffix(".yaml"), objs)
    _, out, _ = run(capsys, "check", src, "-o", fmt)
    path.write_text(out)
    return path


def test_a_regression_is_caught_when_the_messages_are_reworded(tmp_path, capsys, monkeypatch):
    base = saved_report(capsys, tmp_path / "old.json", retrying(4))  # 4 attempts, 3 x 4 = 12 calls
    reword(monkeypatch)
    new = write_all(tmp_path / "new.yaml", retrying(5))  # 5 attempts, 15 calls
    rc, out, err = run(capsys, "check", new, "--baseline", base, "-o", "json")
    data = json.loads(out)
    assert rc == 1 and "older guywire" not in err
    assert {f["message"].split(": ", 1)[1] for f in data["findings"]} == {
        "is over its limit of 3 at 5.", "is over its limit of 10 at 15."}
    assert sorted(r["reason"] for r in data["summary"]["baseline"]["regressions"]) == [
        "12 calls (limit 10) -> 15 calls (limit 10)", "4 attempts (limit 3) -> 5 attempts (limit 3)"]


def test_reworded_messages_alone_are_no_regression(tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as m:
        reword(m)
        base = saved_report(capsys, tmp_path / "old.json", retrying(4))
    assert "is over its limit of 3 at 4." in base.read_text()
    rc, out, _ = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(4)), "--baseline", base)
    assert rc == 0 and "0 finding(s) new or worse shown" in out


def strip_figures(path: Path) -> Path:
    data = json.loads(path.read_text())
    for f in data["findings"]:
        for key in ("observed", "limit", "unit"):
            del f[key]
    path.write_text(json.dumps(data))
    return path


def test_a_report_saved_in_the_format_without_figures_still_gates(tmp_path, capsys):
    base = strip_figures(saved_report(capsys, tmp_path / "old.json", retrying(4)))
    rc, out, err = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(5)), "--baseline", base, "-o", "json")
    data = json.loads(out)
    assert rc == 1
    assert sorted(r["reason"] for r in data["summary"]["baseline"]["regressions"]) == ["12 -> 15", "4 -> 5"]
    assert f"--baseline {base} was saved by an older guywire" in err
    assert f"guywire check OLD_PATH --format json > {base}" in err
    rc, _, err = run(capsys, "check", write_all(tmp_path / "same.yaml", retrying(4)), "--baseline", base)
    assert rc == 0 and "older guywire" in err


def test_a_saved_sarif_report_is_a_baseline_too(tmp_path, capsys):
    base = saved_report(capsys, tmp_path / "old.sarif", retrying(4), fmt="sarif")
    rc, out, err = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(5)), "--baseline", base, "-o", "json")
    data = json.loads(out)
    assert rc == 1 and not err
    assert {f["rule"] for f in data["findings"]} == {"GW-RTY-001", "GW-RTY-002"}
    b = data["summary"]["baseline"]
    assert b["baselineFindings"] > 2 and b["newOrWorse"] == 2
    rc, out, _ = run(capsys, "check", write_all(tmp_path / "same.yaml", retrying(4)), "--baseline", base)
    assert rc == 0 and "0 finding(s) new or worse shown" in out


def test_a_sarif_report_that_does_not_name_its_objects_is_refused(tmp_path, capsys):
    base = saved_report(capsys, tmp_path / "old.sarif", retrying(4), fmt="sarif")
    doc = json.loads(base.read_text())
    for r in doc["runs"][0]["results"]:
        del r["properties"]["workload"]
    base.write_text(json.dumps(doc))
    rc, _, err = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(5)), "--baseline", base)
    assert rc == 2 and "did not record each finding's object" in err and "--format json" in err
    doc["runs"][0]["tool"]["driver"]["name"] = "kube-linter"
    base.write_text(json.dumps(doc))
    rc, _, err = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(5)), "--baseline", base)
    assert rc == 2 and "not from guywire" in err


def test_json_and_sarif_carry_each_findings_figures(tmp_path, capsys):
    src = write_all(tmp_path / "s.yaml", retrying(5))
    _, out, _ = run(capsys, "check", src, "-o", "json")
    by_rule = {f["rule"]: f for f in json.loads(out)["findings"]}
    assert {k: by_rule["GW-RTY-002"][k] for k in ("observed", "limit", "unit")} == {
        "observed": 15, "limit": 10, "unit": "calls"}
    assert {k: by_rule["GW-OBS-003"][k] for k in ("observed", "limit", "unit")} == {
        "observed": None, "limit": None, "unit": None}
    _, out, _ = run(capsys, "check", src, "-o", "sarif")
    results = {r["ruleId"]: r for r in json.loads(out)["runs"][0]["results"]}
    props = results["GW-RTY-001"]["properties"]
    assert (props["observed"], props["limit"], props["unit"]) == (5, 3, "attempts")
    assert props["workload"] == {"kind": "Deployment", "namespace": "ml", "name": "api"}


def test_an_exempted_finding_in_a_sarif_baseline_is_not_a_known_one(tmp_path, capsys):
    old = retrying(4)
    old[2]["metadata"]["annotations"].update({"guywire.dev/exempt": "GW-RTY-001",
                                              "guywire.dev/exempt-reason": "ticket ML-12 until the client is fixed"})
    for fmt in ("json", "sarif"):
        base = saved_report(capsys, tmp_path / f"old.{fmt}", old, fmt=fmt)
        assert fmt == "json" or '"suppressions"' in base.read_text()
        rc, out, _ = run(capsys, "check", write_all(tmp_path / "new.yaml", retrying(4)), "--baseline", base,
                         "-o", "json")
        assert rc == 1
        assert [(r["rule"], r["reason"]) for r in json.loads(out)["summary"]["baseline"]["regressions"]] == [
            ("GW-RTY-001", "new")], fmt
