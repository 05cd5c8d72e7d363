"""The command line: exit codes, inputs (files, directories, stdin, multi-document, List), every output format,
and bad input that is reported with file, line and field without stopping the other files."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from guywire.cli import main
from guywire.rules import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

GOOD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
  labels: {app.kubernetes.io/name: api}
spec:
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: shop/api:1.2.3
          ports: [{name: metrics, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /ready, port: 8080}}
          livenessProbe: {httpGet: {path: /health, port: 8080}}
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 64Mi}}
"""

#: One Deployment with one Low (missing liveness probe) and one Medium (mutable image) finding, nothing else.
SLOPPY = GOOD.replace("name: api\n  namespace", "name: sloppy\n  namespace").replace("shop/api:1.2.3", "shop/api:latest") \
    .replace("          livenessProbe: {httpGet: {path: /health, port: 8080}}\n", "")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def check_json(capsys, *argv) -> tuple[int, dict, str]:
    rc, out, err = run(capsys, "check", "-o", "json", *argv)
    return rc, json.loads(out), err


# ----- exit codes -------------------------------------------------------------------------------------


def test_clean_input_exits_0(tmp_path, capsys):
    rc, out, err = run(capsys, "check", write(tmp_path, "good.yaml", GOOD))
    assert rc == 0, out + err
    assert "No findings." in out and err == ""


def test_findings_exit_1_and_fail_on_raises_the_bar(tmp_path, capsys):
    path = write(tmp_path, "sloppy.yaml", SLOPPY)
    rc, data, _ = check_json(capsys, path)
    assert rc == 1
    assert {(f["rule"], f["severity"]) for f in data["findings"]} == {("GW-OBS-002", "Low"), ("GW-OBS-007", "Medium")}
    assert run(capsys, "check", "--fail-on", "low", path)[0] == 1
    assert run(capsys, "check", "--fail-on", "medium", path)[0] == 1
    assert run(capsys, "check", "--fail-on", "high", path)[0] == 0
    assert run(capsys, "check", "--fail-on", "critical", path)[0] == 0


def test_unreadable_input_exits_2_even_with_findings(tmp_path, capsys):
    write(tmp_path, "sloppy.yaml", SLOPPY)
    write(tmp_path, "broken.yaml", "kind: [\n")
    rc, out, err = run(capsys, "check", "--fail-on", "critical", tmp_path)
    assert rc == 2
    assert "broken.yaml" in err


def test_missing_path_exits_2(tmp_path, capsys):
    rc, _, err = run(capsys, "check", tmp_path / "nope.yaml")
    assert rc == 2 and "nope.yaml: no such file or directory." in err


def test_bad_flag_values_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", "--fail-on", "urgent", str(EXAMPLES)])
    assert exc.value.code == 2
    rc, _, err = run(capsys, "check", "--now", "yesterday", EXAMPLES / "clean")
    assert rc == 2 and "yesterday" in err


# ----- inputs ----------------------------------------------------------------------------------------------


def test_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SLOPPY.encode())))
    rc, data, _ = check_json(capsys, "-")
    assert rc == 1
    assert {f["rule"] for f in data["findings"]} == {"GW-OBS-002", "GW-OBS-007"}
    finding = next(f for f in data["findings"] if f["rule"] == "GW-OBS-007")
    assert finding["source"] == {"file": "<stdin>", "line": 1}


def test_directory_recursion_skips_hidden_and_other_files(tmp_path, capsys):
    write(tmp_path, "a/b/c/deep.yml", SLOPPY)
    write(tmp_path, "top.json", json.dumps(yaml.safe_load(GOOD)))
    write(tmp_path, ".git/ignored.yaml", "kind: [\n")
    write(tmp_path, "notes.txt", "kind: [\n")
    write(tmp_path, "README.md", "# hi\n")
    rc, data, _ = check_json(capsys, tmp_path)
    assert rc == 1
    assert data["summary"]["files"] == 2 and data["errors"] == []
    assert data["summary"]["workloads"] == 2
    assert {f["source"]["file"] for f in data["findings"]} == {str(tmp_path / "a/b/c/deep.yml")}


def test_several_paths(tmp_path, capsys):
    a, b = write(tmp_path, "a.yaml", GOOD), write(tmp_path, "b.yaml", SLOPPY)
    rc, data, _ = check_json(capsys, a, b)
    assert rc == 1 and data["summary"]["files"] == 2 and data["summary"]["workloads"] == 2


def test_multi_document_files_and_lists_keep_line_numbers(tmp_path, capsys):
    listed = {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(SLOPPY.replace("sloppy", "in-list"))]}
    text = "# leading comment\n---\n" + GOOD + "---\n" + SLOPPY + "---\n---\n" + yaml.safe_dump(listed)
    path = write(tmp_path, "multi.yaml", text)
    rc, data, _ = check_json(capsys, path)
    assert rc == 1 and data["errors"] == []
    assert data["summary"]["workloads"] == 3
    lines = {f["workload"]["name"]: f["source"]["line"] for f in data["findings"]}
    all_lines = text.splitlines()
    separators = [i + 1 for i, line in enumerate(all_lines) if line == "---"]  # 1-based line numbers
    assert lines["sloppy"] == separators[1] + 1, "the line the document starts on"
    assert all_lines[lines["sloppy"] - 1] == "apiVersion: apps/v1"
    assert lines["in-list"] == separators[-1] + 1, "items of a List carry the List's line"


def test_deployment_list_kind(tmp_path, capsys):
    listed = {"apiVersion": "apps/v1", "kind": "DeploymentList",
              "items": [yaml.safe_load(SLOPPY), "not an object", yaml.safe_load(GOOD)]}
    rc, data, err = check_json(capsys, write(tmp_path, "list.yaml", yaml.safe_dump(listed)))
    assert data["summary"]["workloads"] == 2
    assert rc == 2 and "items[1] is a string, not a Kubernetes object." in err


def test_policies_among_inputs_and_from_policy_files(tmp_path, capsys):
    policy = {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "lax"},
              "spec": {"rules": {"observability": {"livenessProbe": False, "mutableImageTags": True}}}}
    pfile = write(tmp_path, "policies/lax.yaml", yaml.safe_dump(policy))
    manifest = write(tmp_path, "app/sloppy.yaml", SLOPPY)
    rc, data, _ = check_json(capsys, manifest, "--policy", pfile)
    assert rc == 0 and data["findings"] == [] and data["summary"]["policies"] == ["ClusterComplexityPolicy/lax"]
    rc, data, _ = check_json(capsys, tmp_path)
    assert rc == 0 and data["summary"]["policies"] == ["ClusterComplexityPolicy/lax"]
    rc, data, _ = check_json(capsys, manifest)
    assert rc == 1 and data["summary"]["policies"] == ["ClusterComplexityPolicy/guywire-baseline"]


def test_bad_policy_names_the_field(tmp_path, capsys):
    policy = {"kind": "ClusterComplexityPolicy", "metadata": {"name": "typo"},
              "spec": {"rules": {"retries": {"maxAtempts": 2}}}}
    rc, _, err = run(capsys, "check", write(tmp_path, "app.yaml", GOOD),
                     "--policy", write(tmp_path, "p.yaml", "# policy\n" + yaml.safe_dump(policy)))
    assert rc == 2
    assert "p.yaml:2" in err and "spec.rules.retries.maxAtempts: unknown field." in err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_when_every_policy_file_is_refused_nothing_is_judged(tmp_path, capsys, fmt):
    policy = {"kind": "ClusterComplexityPolicy", "metadata": {"name": "bad"},
              "spec": {"rules": {"dependencies": {"maxFanOut": True}}}}
    rc, out, err = run(capsys, "check", write(tmp_path, "app.yaml", SLOPPY), "--format", fmt,
                       "--policy", write(tmp_path, "p.yaml", yaml.safe_dump(policy)))
    assert rc == 2 and out == "", "findings judged by the built-in baseline would pass for the policy's"
    lines = err.splitlines()
    assert "spec.rules.dependencies.maxFanOut: Input should be a valid integer." in lines[0]
    assert lines[1] == ("guywire: no --policy file could be used (1 given, none holds a policy guywire accepts; "
                        "see above); nothing judged. Fix the policy, or leave --policy out to judge with the "
                        "built-in baseline.")


def test_policy_file_without_policies(tmp_path, capsys):
    rc, _, err = run(capsys, "check", write(tmp_path, "app.yaml", GOOD), "--policy", write(tmp_path, "p.yaml", GOOD))
    assert rc == 2 and "holds no ComplexityPolicy or ClusterComplexityPolicy." in err


# ----- output formats -----------------------------------------------------------------------------------


def test_json_shape(capsys):
    rc, data, _ = check_json(capsys, EXAMPLES)
    assert rc == 1
    assert set(data) == {"findings", "exempted", "summary", "errors"}
    assert data["errors"] == []
    for f in data["findings"]:
        assert {"rule", "name", "severity", "workload", "message", "path"} <= set(f)
        assert set(f["workload"]) == {"kind", "namespace", "name"}
        assert f["rule"] in REGISTRY and f["name"] == REGISTRY[f["rule"]].name
        assert f["severity"] in {"Low", "Medium", "High", "Critical"}
        assert f["message"].startswith(f"[{f['rule']} {f['name']}] ") and f["message"].endswith(".")
        assert isinstance(f["path"], list)
    s = data["summary"]
    for key in ("files", "workloads", "services", "findings", "bySeverity", "byRule", "policies", "graph", "errors"):
        assert key in s, key
    assert s["findings"] == len(data["findings"])
    assert sum(s["bySeverity"].values()) == s["findings"] == sum(s["byRule"].values())
    amplification = next(f for f in data["findings"] if f["rule"] == "GW-RTY-002")
    assert amplification["path"][0] == "ml/gateway" and len(amplification["path"]) >= 3


def test_json_errors_entries(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "a: [\n")
    _, data, _ = check_json(capsys, tmp_path)
    (err,) = data["errors"]
    assert set(err) == {"file", "line", "message", "level"} and err["level"] == "error" and err["line"] == 2


def test_sarif(capsys):
    rc, out, _ = run(capsys, "check", "-o", "sarif", EXAMPLES)
    assert rc == 1
    doc = json.loads(out)
    assert doc["version"] == "2.1.0" and "sarif" in doc["$schema"]
    run0 = doc["runs"][0]
    driver = run0["tool"]["driver"]
    assert driver["name"] == "guywire"
    ids = [r["id"] for r in driver["rules"]]
    assert set(REGISTRY) <= set(ids)
    for r in driver["rules"]:
        assert r["shortDescription"]["text"] and r["helpUri"]
    assert run0["results"]
    for res in run0["results"]:
        assert res["ruleId"] in ids
        assert ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in {"error", "warning", "note"}
        assert res["message"]["text"]
        phys = res["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"].endswith(".yaml")
        assert not phys["artifactLocation"]["uri"].startswith("/")
        assert isinstance(phys["region"]["startLine"], int) and phys["region"]["startLine"] >= 1
    fingerprints = [r["partialFingerprints"]["guywireFinding/v1"] for r in run0["results"]]
    assert len(fingerprints) == len(set(fingerprints))
    assert run0["invocations"][0]["executionSuccessful"] is True


def test_sarif_reports_input_errors(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "a: [\n")
    rc, out, _ = run(capsys, "check", "-o", "sarif", tmp_path)
    doc = json.loads(out)
    assert rc == 2
    inv = doc["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert "bad.yaml" in inv["toolExecutionNotifications"][0]["message"]["text"]


def test_junit_has_one_testcase_per_workload_and_rule(capsys):
    rc, out, _ = run(capsys, "check", "-o", "junit", EXAMPLES)
    assert rc == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites"
    _, data, _ = check_json(capsys, EXAMPLES)
    workload_rules = [r for r in REGISTRY.values() if r.target == "workload"]
    suites = root.findall("testsuite")
    assert len(suites) == data["summary"]["workloads"]
    cases = root.findall("testsuite/testcase")
    assert int(root.get("tests")) == len(cases)
    names = set()
    for suite in suites:
        suite_cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(suite_cases)
        assert len(suite_cases) <= len(workload_rules)
        for case in suite_cases:
            key = (case.get("classname"), case.get("name"))
            assert key not in names
            names.add(key)
    failed = {(c.get("classname"), c.get("name").split()[0]) for c in cases if c.find("failure") is not None}
    expected = {(f"{f['workload']['kind']} {f['workload']['namespace']}/{f['workload']['name']}", f["rule"])
                for f in data["findings"]}
    assert failed == expected
    assert int(root.get("failures")) == len(failed)


def test_junit_with_default_policy_runs_every_workload_rule(tmp_path, capsys):
    rc, out, _ = run(capsys, "check", "-o", "junit", write(tmp_path, "app.yaml", GOOD + "---\n" + SLOPPY))
    root = ET.fromstring(out)
    from guywire.model.policy import baseline_policy
    n_rules = sum(1 for r in REGISTRY.values() if r.target == "workload" and r.enabled_in(baseline_policy()))
    assert len(root.findall("testsuite/testcase")) == 2 * n_rules
    assert int(root.get("failures")) == 2


def test_junit_reports_input_errors(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "a: [\n")
    write(tmp_path, "good.yaml", GOOD)
    rc, out, _ = run(capsys, "check", "-o", "junit", tmp_path)
    root = ET.fromstring(out)
    assert rc == 2 and int(root.get("errors")) == 1
    assert root.find("testsuite[@name='input']/testcase/error") is not None


def test_text_output(capsys):
    rc, out, _ = run(capsys, "check", "--color", "never", EXAMPLES)
    assert rc == 1
    assert "\033[" not in out
    assert "[GW-RTY-002 retry-amplification] Deployment ml/gateway" in out
    assert "(examples/" in out or str(EXAMPLES) in out
    assert "finding(s)" in out.splitlines()[-1] or "finding(s)" in out
    rc, coloured, _ = run(capsys, "check", "--color", "always", EXAMPLES)
    assert "\033[" in coloured


@pytest.mark.parametrize("fmt, marker", [("dot", "digraph guywire {"), ("mermaid", "flowchart LR"),
                                         ("text", "workload(s)")])
def test_graph_formats(fmt, marker, capsys):
    rc, out, err = run(capsys, "graph", "-o", fmt, EXAMPLES)
    assert rc == 0 and err == ""
    assert marker in out
    assert "gateway" in out and "rag-orchestrator" in out


def test_graph_dot_marks_cycles_and_unresolved(capsys):
    _, out, _ = run(capsys, "graph", "-o", "dot", EXAMPLES)
    assert out.rstrip().endswith("}")
    assert "cycle" in out and "undeclared" in out
    assert out.count("{") == out.count("}")


def test_graph_json(capsys):
    rc, out, _ = run(capsys, "graph", "-o", "json", EXAMPLES)
    assert rc == 0
    g = json.loads(out)
    assert set(g) == {"nodes", "edges", "cycles", "stats"}
    ids = {n["id"] for n in g["nodes"]}
    assert "ml/gateway" in ids and len(ids) == len(g["nodes"]) == g["stats"]["workloads"]
    for e in g["edges"]:
        assert e["from"] in ids
        assert {"to", "dependency", "declared", "attempts", "flags"} <= set(e)
    assert g["cycles"] == [["ml/reranker", "ml/retriever"]]
    gateway = next(n for n in g["nodes"] if n["id"] == "ml/gateway")
    assert gateway["amplification"] == 27 and gateway["depth"] == 3


def test_graph_with_bad_input_exits_2(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "a: [\n")
    write(tmp_path, "good.yaml", GOOD)
    rc, out, err = run(capsys, "graph", "-o", "json", tmp_path)
    assert rc == 2 and "bad.yaml:2" in err
    assert json.loads(out)["stats"]["workloads"] == 1


def test_rules_json(capsys):
    rc, out, _ = run(capsys, "rules", "-o", "json")
    assert rc == 0
    rules = json.loads(out)
    assert [r["id"] for r in rules] == sorted(REGISTRY)
    for r in rules:
        assert {"id", "name", "category", "severity", "summary", "remediation"} <= set(r)
        assert r["remediation"].strip()
    rc, out, _ = run(capsys, "rules")
    assert rc == 0 and all(rid in out for rid in REGISTRY)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("guywire ")


# ----- bad input: named, and never stops the other files ------------------------------------------------------

DEPLOYMENT_HEAD = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: NAME, namespace: shop}\n"

BAD_INPUTS = {
    "binary.yaml": (b"\x00\x01\x02\xff binary", None, "is a binary file, not YAML or JSON."),
    "latin1.yaml": ("kind: Deployment\nmetadata: {name: caf\xe9}\n".encode("latin-1"), None, "is not UTF-8 text"),
    "syntax.yaml": ("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels: {a: [}\n", 5, "YAML syntax error"),
    "tabs.yaml": ("apiVersion: v1\nkind: Service\n\tmetadata: {}\n", 3, "YAML syntax error"),
    "badjson.json": ('{"kind": "Service",\n "metadata": }', 2, "JSON syntax error"),
    "a-list.yaml": ("- a\n- b\n", 1, "document is a list, not a Kubernetes object."),
    "a-string.yaml": ("just words\n", 1, "document is a string, not a Kubernetes object."),
    "a-number.yaml": ("---\n42\n", 2, "document is a number, not a Kubernetes object."),
    "no-name.yaml": ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {namespace: shop}\n"
                     "spec: {template: {spec: {containers: []}}}\n", 1, "Deployment ?: metadata.name is missing."),
    "template-string.yaml": (DEPLOYMENT_HEAD.replace("NAME", "t") + "spec: {template: oops}\n", 1,
                             "Deployment t: spec.template is missing or not an object."),
    "no-spec.yaml": (DEPLOYMENT_HEAD.replace("NAME", "s"), 1, "Deployment s: spec is missing or not an object."),
    "cronjob.yaml": ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: x}\n", 1,
                     "CronJob c: spec.jobTemplate.spec.template is missing or not an object."),
    "policy.yaml": ("apiVersion: guywire.dev/v1alpha1\nkind: ClusterComplexityPolicy\nmetadata: {name: p}\n"
                    "spec: {enforcement: Block}\n", 1, "ClusterComplexityPolicy p: spec.enforcement:"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_named_and_the_good_file_is_still_evaluated(name, tmp_path, capsys):
    content, line, fragment = BAD_INPUTS[name]
    write(tmp_path, name, content)
    write(tmp_path, "zz-sloppy.yaml", SLOPPY)
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 2, err
    errors = [e for e in data["errors"] if e["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["file"] == str(tmp_path / name)
    assert errors[0]["line"] == line
    assert fragment in errors[0]["message"]
    assert errors[0]["message"].endswith(".")
    where = f"{tmp_path / name}:{line}" if line else str(tmp_path / name)
    assert f"guywire: {where}: " in err
    assert {f["workload"]["name"] for f in data["findings"]} == {"sloppy"}, "the good file is still judged"
    assert data["summary"]["files"] == 2


def test_empty_file_is_a_skip_not_an_error(tmp_path, capsys):
    empty = write(tmp_path, "empty.yaml", "")
    write(tmp_path, "comments.yaml", "# nothing here\n---\n")
    write(tmp_path, "good.yaml", GOOD)
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 0 and err == ""
    assert data["summary"]["files"] == 3
    skipped = {e["file"]: e for e in data["errors"]}
    assert skipped[str(empty)]["level"] == "skipped" and "holds no objects." in skipped[str(empty)]["message"]
    rc, _, err = run(capsys, "check", "-v", tmp_path)
    assert rc == 0 and f"{empty}: holds no objects." in err


def test_object_without_kind_is_skipped_not_an_error(tmp_path, capsys):
    write(tmp_path, "values.yaml", "replicaCount: 2\nimage: {tag: latest}\n")
    write(tmp_path, "good.yaml", GOOD)
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 0 and err == ""
    (skip,) = data["errors"]
    assert skip["level"] == "skipped" and "no kind" in skip["message"] and skip["line"] == 1


def test_unknown_kinds_are_counted_not_errors(tmp_path, capsys):
    write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n")
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 0 and data["errors"] == []
    assert data["summary"]["skippedKinds"] == {"ConfigMap": 1}


def test_odd_field_shapes_never_crash(tmp_path, capsys):
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: odd
  namespace: shop
  labels: [not, a, map]
  annotations:
    guywire.dev/depends-on: 12
    guywire.dev/retry: "attempts=99999999999999999999999999, timeout=-5s, backoff=" 
    guywire.dev/exempt: [1, 2]
spec:
  template:
    metadata: {labels: "app=odd"}
    spec:
      nodeSelector: [a]
      affinity: {nodeAffinity: 3}
      containers:
        - name: app
          image: 7
          ports: {metrics: 9090}
          env:
            - {name: PORT, value: 8080}
            - {name: FLAG, value: true}
            - {name: NOTHING, value: null}
            - 5
            - {value: no-name}
          resources: {requests: "lots", limits: [1]}
        - "a string container"
"""
    write(tmp_path, "odd.yaml", text)
    rc, data, err = check_json(capsys, tmp_path)
    assert "Traceback" not in err and "could not be read" not in err
    assert rc == 1 and data["errors"] == [], "odd shapes are read as absent, never a crash"
    rules = {f["rule"] for f in data["findings"] if f["workload"]["name"] == "odd"}
    assert "GW-ANN-001" in rules, "the unreadable annotations are findings that quote them"
    ann = [f["message"] for f in data["findings"] if f["rule"] == "GW-ANN-001"]
    assert any("attempts=" in m and len(m) < 600 for m in ann)


def test_absurd_annotation_values_are_quoted_briefly(tmp_path, capsys):
    huge = ", ".join(f"svc-{i}" for i in range(10_000))
    text = DEPLOYMENT_HEAD.replace("NAME", "huge").replace("namespace: shop}", "namespace: shop, annotations: {a: b}}")
    obj = yaml.safe_load(text)
    obj["metadata"]["annotations"] = {"guywire.dev/depends-on": huge, "guywire.dev/retry": "x" * 100_000}
    obj["spec"] = yaml.safe_load(GOOD)["spec"]
    write(tmp_path, "huge.yaml", yaml.safe_dump(obj))
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 1 and data["errors"] == []
    for f in data["findings"]:
        assert len(f["message"]) < 2000, f["message"][:200]
    msgs = " ".join(f["message"] for f in data["findings"] if f["rule"] == "GW-ANN-001")
    assert "10000 dependencies" in msgs


def test_containers_that_is_a_mapping_is_reported(tmp_path, capsys):
    write(tmp_path, "c.yaml", DEPLOYMENT_HEAD.replace("NAME", "c")
          + "spec: {template: {spec: {containers: {name: a, image: b}}}}\n")
    write(tmp_path, "good.yaml", GOOD)
    rc, data, err = check_json(capsys, tmp_path)
    assert rc == 2
    assert "spec.template.spec.containers" in err


def test_directory_with_one_bad_and_one_good_file(tmp_path, capsys):
    write(tmp_path, "bad.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: [x\n")
    write(tmp_path, "good.yaml", SLOPPY)
    rc, out, err = run(capsys, "check", "--color", "never", tmp_path)
    assert rc == 2
    assert "[GW-OBS-007 mutable-image] Deployment shop/sloppy" in out
    assert f"guywire: {tmp_path / 'bad.yaml'}:" in err and "YAML syntax error" in err
    assert "GW-" not in err, "findings on stdout, diagnostics on stderr"


# ----- the examples ---------------------------------------------------------------------------------------------


def test_clean_example_has_no_findings(capsys):
    rc, data, err = check_json(capsys, EXAMPLES / "clean")
    assert rc == 0, data["findings"]
    assert data["findings"] == [] and data["errors"] == [] and err == ""
    assert data["summary"]["workloads"] >= 3


def test_examples_report_the_documented_problems(capsys):
    rc, data, err = check_json(capsys, EXAMPLES)
    assert rc == 1 and data["errors"] == [] and err == ""
    rules = {f["rule"] for f in data["findings"]}
    assert {"GW-RTY-002", "GW-RTY-004", "GW-DEP-004", "GW-DEP-006", "GW-OBS-005"} <= rules
    assert not any(f["workload"]["namespace"] == "search" for f in data["findings"]), "the clean stack stays clean"
    cycle = next(f for f in data["findings"] if f["rule"] == "GW-DEP-004")
    assert "ml/retriever" in cycle["message"] and "ml/reranker" in cycle["message"]


def test_console_script_runs_as_a_real_process(tmp_path):
    exe = Path(sys.executable).with_name("guywire")
    assert exe.exists(), f"the guywire console script is not installed next to {sys.executable}"
    clean = subprocess.run([str(exe), "check", str(EXAMPLES / "clean")], capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No findings." in clean.stdout
    piped = subprocess.run([str(exe), "check", "-o", "json", "-"], input=SLOPPY, capture_output=True, text=True,
                           timeout=60)
    assert piped.returncode == 1, piped.stderr
    assert {f["rule"] for f in json.loads(piped.stdout)["findings"]} == {"GW-OBS-002", "GW-OBS-007"}
    write(tmp_path, "bad.yaml", "kind: [\n")
    bad = subprocess.run([str(exe), "check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "bad.yaml" in bad.stderr


KUBE_SYSTEM_DNS = """apiVersion: apps/v1
kind: Deployment
metadata: {name: dns, namespace: kube-system}
spec:
  selector: {matchLabels: {app: dns}}
  template:
    metadata: {labels: {app: dns}}
    spec:
      containers: [{name: c, image: "x:latest"}]
"""


def test_workloads_in_kube_system_are_left_out_out_loud(tmp_path, capsys):
    path = write(tmp_path, "dns.yaml", KUBE_SYSTEM_DNS)
    rc, out, err = run(capsys, "check", path)
    assert rc == 0 and "Not judged: 1 workload(s) in kube-system, which guywire never judges" in out
    rc, out, err = run(capsys, "check", path, "-v")
    assert "Deployment kube-system/dns: in kube-system, whose workloads guywire never judges" in err


def test_a_kube_system_workload_defined_twice_is_not_said_to_be_judged(tmp_path, capsys):
    write(tmp_path, "a/dns.yaml", KUBE_SYSTEM_DNS)
    write(tmp_path, "b/dns.yaml", KUBE_SYSTEM_DNS)
    rc, out, err = run(capsys, "check", tmp_path)
    assert "is defined again" in err and "neither is judged (kube-system never is)" in err
    assert "both are judged" not in err
