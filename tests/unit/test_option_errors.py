"""Bad option values get a message that names the option and the forms it accepts, never a Python error
text, and a baseline that is not one is refused instead of making every finding look new."""
from __future__ import annotations

import json

import pytest

from .test_cli import EXAMPLES, SLOPPY, run, write


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "now-1h"])
def test_now_names_the_option_and_the_accepted_forms(capsys, value):
    rc, out, err = run(capsys, "check", "--now", value, EXAMPLES / "clean")
    assert rc == 2 and out == ""
    assert f"--now {value!r} is not a time guywire reads" in err and "2026-11-22T10:00:00Z" in err
    assert "isoformat" not in err


def test_now_accepts_rfc3339_and_a_date(capsys):
    for value in ("2026-11-22T10:00:00Z", "2026-11-22T12:00:00+02:00", "2026-11-22"):
        assert run(capsys, "check", "--now", value, EXAMPLES / "clean")[0] == 0


def test_a_sarif_baseline_guywire_cannot_read_back_is_refused_with_the_accepted_forms(tmp_path, capsys):
    app = write(tmp_path, "app.yaml", SLOPPY)
    rc, out, _ = run(capsys, "check", "-o", "sarif", app)
    older = json.loads(out)  # as a guywire before results carried their object wrote it
    for result in older["runs"][0]["results"]:
        del result["properties"]["workload"]
    for name in ("guywire.sarif", "guywire-sarif.json"):
        saved = write(tmp_path, name, out)  # this guywire's SARIF is a baseline (test_baseline.py)
        rc2, out2, _ = run(capsys, "check", "-o", "json", app, "--baseline", saved)
        assert rc2 == 0 and json.loads(out2)["findings"] == []
        saved = write(tmp_path, name, json.dumps(older))
        rc2, out2, err = run(capsys, "check", app, "--baseline", saved)
        assert rc2 == 2 and out2 == ""
        assert f"--baseline {saved} is a SARIF log" in err and "--format json" in err
    rc, _, err = run(capsys, "check", app, "--baseline", write(tmp_path, "broken.sarif", "{"))
    assert rc == 2 and "is not a SARIF log guywire can read" in err and "--format json" in err


def test_a_baseline_without_kubernetes_objects_is_refused(tmp_path, capsys):
    app = write(tmp_path, "app.yaml", SLOPPY)
    notes = write(tmp_path, "notes.yaml", "title: release notes\n")
    rc, out, err = run(capsys, "check", app, "--baseline", notes)
    assert rc == 2 and f"--baseline {notes} holds no Kubernetes object" in err
    rc, out, err = run(capsys, "check", app, "--baseline", tmp_path / "missing")
    assert rc == 2 and "--baseline" in err and "no such file or directory" in err
    # a real baseline still works: the same manifests leave nothing new
    rc, out, err = run(capsys, "check", "-o", "json", app, "--baseline", app)
    assert rc == 0 and json.loads(out)["findings"] == []


@pytest.mark.parametrize("fmt,what", [("policyreport", "is a PolicyReport"),
                                      ("openreports", "is an OpenReports Report"),
                                      ("junit", "is a JUnit XML report")])
def test_a_saved_report_that_is_not_json_or_sarif_is_refused_as_a_baseline(tmp_path, capsys, fmt, what):
    app = write(tmp_path, "app.yaml", SLOPPY)
    rc, out, _ = run(capsys, "check", "-o", fmt, app)
    saved = write(tmp_path, f"old.{'xml' if fmt == 'junit' else 'yaml'}", out)
    rc, out, err = run(capsys, "check", app, "--baseline", saved)
    assert rc == 2 and out == ""  # not "every finding new" nor a YAML syntax error
    assert f"--baseline {saved} {what}" in err and "--format json" in err and "syntax error" not in err


def test_a_cluster_report_is_refused_as_a_baseline(tmp_path, capsys):
    app = write(tmp_path, "app.yaml", SLOPPY)
    saved = write(tmp_path, "old.yaml", "apiVersion: wgpolicyk8s.io/v1alpha2\nkind: ClusterPolicyReport\n"
                                        "metadata: {name: guywire}\nresults: []\n")
    rc, _, err = run(capsys, "check", app, "--baseline", saved)
    assert rc == 2 and "is a ClusterPolicyReport" in err


def test_an_empty_now_is_refused_not_read_as_no_option(capsys):
    for value in ("", " "):
        rc, out, err = run(capsys, "check", f"--now={value}", EXAMPLES / "clean")
        assert rc == 2 and out == "" and "--now is empty" in err and "2026-11-22T10:00:00Z" in err
