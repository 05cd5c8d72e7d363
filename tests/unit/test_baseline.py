"""`guywire check --baseline`: only findings that are new or got worse, so CI can gate on regressions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from guywire.cli import main
from guywire.model.finding import Finding, ObjectRef
from guywire.model.severity import Severity
from guywire.report import first_figure, known_from_finding, known_from_json, new_or_worse

from .manifests import deployment, service

R3 = "attempts=3, perTryTimeout=1s, timeout=10s, backoff=exponential"


def F(rule: str, name: str, message: str, sev: Severity = Severity.MEDIUM, location: str | None = None) -> Finding:
    return Finding(rule=rule, name="x", severity=sev, workload=ObjectRef("Deployment", "ml", name), message=message,
                   location=location)


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


def test_a_grown_figure_is_worse_and_a_smaller_one_is_not():
    old = [F("GW-RTY-002", "gw", "can send 27 calls to the end of one path, above the limit of 10.")]
    worse = [F("GW-RTY-002", "gw", "can send 81 calls to the end of one path, above the limit of 10.")]
    better = [F("GW-RTY-002", "gw", "can send 18 calls to the end of one path, above the limit of 10.")]
    base = [known_from_finding(f) for f in old]
    assert [r.reason for r in new_or_worse(worse, base).regressions] == ["27 -> 81"]
    assert new_or_worse(better, base).regressions == []


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


def test_known_from_json_reads_a_saved_report_and_refuses_others():
    doc = {"findings": [{"rule": "GW-OBS-002", "name": "x", "severity": "Low", "message": "[GW-OBS-002 x] m",
                         "workload": {"kind": "Deployment", "namespace": "ml", "name": "api"}}]}
    (k,) = known_from_json(doc)
    assert k.key == ("GW-OBS-002", "Deployment", "ml", "api", "") and k.severity is Severity.LOW
    with pytest.raises(ValueError, match="not a guywire JSON report"):
        known_from_json({"kind": "List"})
    with pytest.raises(ValueError, match="finding 0"):
        known_from_json({"findings": [{"rule": "x"}]})


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
