"""SARIF that GitHub code scanning accepts and places: valid against the SARIF 2.1.0 schema, paths relative
to the source root with a uriBaseId, Helm's ``# Source:`` comments followed into the chart, and exempted
findings kept as suppressed results."""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest

from guywire.cli import main

from .test_cli import EXAMPLES, GOOD, SLOPPY, run, write

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures/sarif/sarif-schema-2.1.0.json").read_text())
# RFC 3986 characters: what a URI may hold once percent-encoded ('<stdin>' and spaces may not)
URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")

EXEMPT = SLOPPY.replace("  labels: {app.kubernetes.io/name: api}",
                        "  labels: {app.kubernetes.io/name: api}\n  annotations:\n"
                        "    guywire.dev/exempt: GW-OBS-002\n"
                        "    guywire.dev/exempt-reason: batch worker without HTTP (TICKET-42)")


def sarif(capsys, *argv) -> dict:
    rc, out, err = run(capsys, "check", "-o", "sarif", *argv)
    assert rc in (0, 1), err
    doc = json.loads(out)
    jsonschema.Draft4Validator(SCHEMA).validate(doc)
    return doc


def locations(doc: dict) -> list[dict]:
    return [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in doc["runs"][0]["results"]]


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_examples_validate_against_the_sarif_schema_with_relative_uris(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    doc = sarif(capsys, "examples")
    run0 = doc["runs"][0]
    assert run0["originalUriBaseIds"]["%SRCROOT%"]["uri"] == EXAMPLES.parent.as_uri() + "/"
    for loc in locations(doc):
        assert loc["uriBaseId"] == "%SRCROOT%" and loc["uri"].startswith("examples/"), loc
        assert (EXAMPLES.parent / loc["uri"]).is_file()


def test_the_schema_refuses_what_github_refuses():
    bad = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "guywire"}}, "results": [
        {"message": {"text": "x"}, "suppressions": [{"kind": "byAnnotation"}]}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(bad)


def test_dot_folders_keep_their_dot_and_absolute_paths_their_place(tmp_path, capsys, monkeypatch):
    write(tmp_path, ".deploy/app.yaml", SLOPPY)
    write(tmp_path, "my files/app.yaml", SLOPPY.replace("name: sloppy", "name: spaced"))
    monkeypatch.chdir(tmp_path)
    doc = sarif(capsys, ".deploy", tmp_path / "my files")
    uris = {loc["uri"] for loc in locations(doc)}
    assert uris == {".deploy/app.yaml", "my%20files/app.yaml"}
    assert all(URI_CHARS.match(u) for u in uris)
    # the same files given from another folder, with --source-root naming the repository
    monkeypatch.chdir(tmp_path / ".deploy")
    doc = sarif(capsys, "app.yaml", "--source-root", tmp_path)
    assert {loc["uri"] for loc in locations(doc)} == {".deploy/app.yaml"}
    # a file outside the source root keeps an absolute file URI rather than a wrong relative one
    other = write(tmp_path.parent / f"{tmp_path.name}-outside", "app.yaml", SLOPPY)
    doc = sarif(capsys, other, "--source-root", tmp_path)
    assert {loc["uri"] for loc in locations(doc)} == {other.as_uri()}
    assert all("uriBaseId" not in loc for loc in locations(doc))


HELM = """\
---
# Source: shop/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata: {name: shop}
---
# Source: shop/templates/api.yaml
""" + SLOPPY + """\
---
# Source: shop/charts/cache/templates/cache.yaml
""" + GOOD.replace("name: api\n  namespace", "name: cache\n  namespace").replace("shop/api:1.2.3", "redis")


def test_helm_template_output_is_placed_in_the_chart(tmp_path, capsys, monkeypatch):
    write(tmp_path, "deploy/charts/shop/Chart.yaml", "apiVersion: v2\nname: shop\nversion: 1.0.0\n")
    monkeypatch.chdir(tmp_path)
    stdin(monkeypatch, HELM)
    doc = sarif(capsys, "-")
    by_object = {r["locations"][0]["logicalLocations"][0]["name"]: r["locations"][0]["physicalLocation"]
                 for r in doc["runs"][0]["results"]}
    assert by_object["sloppy"]["artifactLocation"] == {"uri": "deploy/charts/shop/templates/api.yaml",
                                                       "uriBaseId": "%SRCROOT%"}
    assert by_object["sloppy"]["region"] == {"startLine": 1}
    assert by_object["cache"]["artifactLocation"]["uri"] == "deploy/charts/shop/charts/cache/templates/cache.yaml"
    # --chart-dir names the chart when it cannot be found by name
    stdin(monkeypatch, HELM)
    doc = sarif(capsys, "-", "--chart-dir", "elsewhere/shop")
    assert {loc["uri"] for loc in locations(doc)} >= {"elsewhere/shop/templates/api.yaml"}
    # the text and JSON outputs name the template too
    stdin(monkeypatch, HELM)
    rc, out, _ = run(capsys, "check", "-o", "json", "-")
    finding = next(f for f in json.loads(out)["findings"] if f["workload"]["name"] == "sloppy")
    assert finding["source"] == {"file": "<stdin>", "line": 8, "template": "shop/templates/api.yaml"}


def test_stdin_without_source_comments_gets_a_valid_relative_uri(capsys, monkeypatch):
    stdin(monkeypatch, SLOPPY)
    doc = sarif(capsys, "-")
    assert {(loc["uri"], loc.get("uriBaseId")) for loc in locations(doc)} == {("stdin", "%SRCROOT%")}


def test_exempted_findings_are_suppressed_results_and_counted(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "app.yaml", EXEMPT)
    doc = sarif(capsys, "app.yaml")
    results = {r["ruleId"]: r for r in doc["runs"][0]["results"]}
    assert "suppressions" not in results["GW-OBS-007"]
    (suppression,) = results["GW-OBS-002"]["suppressions"]
    assert suppression["kind"] == "inSource" and "TICKET-42" in suppression["justification"]
    rc, out, _ = run(capsys, "check", "-o", "json", "app.yaml")
    data = json.loads(out)
    assert rc == 1 and [f["rule"] for f in data["findings"]] == ["GW-OBS-007"]
    assert data["summary"]["exempted"] == 1
    (kept,) = data["exempted"]
    assert kept["rule"] == "GW-OBS-002" and kept["exemptReason"] == "batch worker without HTTP (TICKET-42)"
    rc, out, _ = run(capsys, "check", "app.yaml")
    assert "Exempted: 1 finding(s) on 1 object(s)" in out and "GW-OBS-002 1" in out


def test_exempted_findings_are_skipped_junit_testcases_with_the_reason(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    rc, out, _ = run(capsys, "check", "-o", "junit", write(tmp_path, "app.yaml", EXEMPT))
    root = ET.fromstring(out)
    cases = {c.get("name").split()[0]: c for c in root.iter("testcase")}
    skipped = cases["GW-OBS-002"].find("skipped")
    assert skipped is not None and skipped.get("message") == "exempted: batch worker without HTTP (TICKET-42)"
    assert cases["GW-OBS-002"].find("failure") is None and cases["GW-OBS-007"].find("skipped") is None
    assert root.get("skipped") == root.find("testsuite").get("skipped") == "1" and root.get("failures") == "1"


def test_an_exemption_without_a_reason_suppresses_nothing(tmp_path, capsys):
    path = write(tmp_path, "app.yaml", "\n".join(line for line in EXEMPT.splitlines() if "exempt-reason" not in line))
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    data = json.loads(out)
    assert "GW-OBS-002" in {f["rule"] for f in data["findings"]} and data["exempted"] == []


def test_sarif_of_input_errors_validates(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "a: [\n")
    rc, out, _ = run(capsys, "check", "-o", "sarif", tmp_path)
    assert rc == 2
    jsonschema.Draft4Validator(SCHEMA).validate(json.loads(out))


def test_the_readme_workflow_uploads_the_sarif_guywire_writes(capsys, monkeypatch):
    import yaml

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# \.github/workflows/guywire\.yaml\n.*?)```", readme, re.S)
    assert block, "README's CI section shows the GitHub Actions workflow"
    steps = yaml.safe_load(block.group(1))["jobs"]["check"]["steps"]
    uploads = [s["with"]["sarif_file"] for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif")]
    written = {}
    for step in steps:
        m = re.search(r"guywire check (.+?) > (\S+\.sarif)", step.get("run", ""))
        if m:
            written[m.group(2)] = m.group(1).split()
    assert uploads and set(uploads) == set(written)
    # GitHub runs each step with bash -e and skips the rest after a failing one: a check step exits 1 on findings,
    # so each goes on (continue-on-error), the uploads run, and a last step fails the job on any check's failure
    checks = [s for s in steps if "guywire check" in s.get("run", "")]
    assert all(s.get("continue-on-error") is True and s.get("id") for s in checks), checks
    last = steps[-1]
    assert "exit 1" in last.get("run", "") and all(f"steps.{s['id']}.outcome == 'failure'" in last.get("if", "")
                                                    for s in checks), last
    assert steps.index(last) > max(i for i, s in enumerate(steps) if s.get("uses", "").startswith(
        "github/codeql-action/upload-sarif"))
    monkeypatch.chdir(EXAMPLES.parent)
    for argv in written.values():  # the same flags on the bundled examples, read from stdin where the step pipes
        assert "--format" in argv and argv[argv.index("--format") + 1] == "sarif"
        paths = ["examples/rag-stack" if a != "-" and not a.startswith("-") and a not in ("sarif",) else a
                 for a in argv]
        if "-" in paths:
            stdin(monkeypatch, (EXAMPLES / "rag-stack/gateway.yaml").read_text())
        assert sarif(capsys, *paths)["runs"][0]["results"]
