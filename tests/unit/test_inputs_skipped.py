"""Nothing vanishes silently: unrendered Helm templates are skipped with one line saying how to render them,
--exclude leaves paths out, and -v lists every dot-folder, excluded path and skipped document."""
from __future__ import annotations

import json

from .test_cli import GOOD, SLOPPY, run, write

TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-api
  labels:
    {{- include "shop.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
"""
QUOTED_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: "{{ .Release.Name }}-api"
spec:
  template:
    spec:
      containers: [{name: api, image: "{{ .Values.image }}"}]
"""


def chart(tmp_path):
    write(tmp_path, "charts/shop/Chart.yaml", "apiVersion: v2\nname: shop\nversion: 1.0.0\n")
    write(tmp_path, "charts/shop/values.yaml", "replicas: 2\n")
    write(tmp_path, "charts/shop/templates/api.yaml", TEMPLATE)
    write(tmp_path, "charts/shop/templates/quoted.yaml", QUOTED_TEMPLATE)
    write(tmp_path, "deploy/app.yaml", SLOPPY)


def test_a_charts_templates_are_skipped_with_one_line(tmp_path, capsys):
    chart(tmp_path)
    rc, out, err = run(capsys, "check", "-o", "json", tmp_path)
    data = json.loads(out)
    assert rc == 1, err  # the findings of deploy/app.yaml; no YAML syntax error from the templates
    assert [e for e in data["errors"] if e["level"] == "error"] == []
    assert {f["workload"]["name"] for f in data["findings"]} == {"sloppy"}
    (line,) = [x for x in err.splitlines() if "templates" in x]
    assert "charts/shop/templates" in line and f"helm template RELEASE {tmp_path}/charts/shop | guywire check -" in line
    # a template named on the command line is recognised too
    rc, out, err = run(capsys, "check", tmp_path / "charts/shop/templates/api.yaml")
    assert rc == 0 and "Helm chart templates" in err and "YAML syntax error" not in err


def test_an_unrendered_object_outside_a_chart_is_not_judged(tmp_path, capsys):
    path = write(tmp_path, "loose.yaml", QUOTED_TEMPLATE)
    rc, out, err = run(capsys, "check", "-o", "json", path)
    data = json.loads(out)
    assert rc == 0 and data["findings"] == [] and data["summary"]["workloads"] == 0
    assert "'{{ .Release.Name }}-api': an unrendered template" in err
    path = write(tmp_path, "broken.yaml", TEMPLATE)
    rc, out, err = run(capsys, "check", path)
    assert rc == 2 and "YAML syntax error" in err and "unrendered template? Render it first" in err


def test_exclude_leaves_out_files_and_folders(tmp_path, capsys):
    write(tmp_path, "deploy/app.yaml", SLOPPY)
    write(tmp_path, "deploy/old/legacy.yaml", "kind: [\n")
    write(tmp_path, "deploy/prod-values.yaml", "kind: [\n")
    rc, out, err = run(capsys, "check", tmp_path, "--exclude", "old", "--exclude", "*-values.yaml")
    assert rc == 1 and err == ""
    rc, out, err = run(capsys, "check", tmp_path, "--exclude", f"{tmp_path}/deploy/*", "-v")
    assert rc == 0
    assert f"{tmp_path}/deploy/old: matches --exclude {tmp_path}/deploy/*; skipped." in err
    assert "deploy/app.yaml: matches --exclude" in err


def test_verbose_lists_dot_folders_and_every_skipped_document(tmp_path, capsys):
    write(tmp_path, ".deploy/app.yaml", SLOPPY)
    write(tmp_path, "app.yaml", GOOD + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n")
    rc, out, err = run(capsys, "check", tmp_path)
    assert rc == 0 and err == ""
    rc, out, err = run(capsys, "check", tmp_path, "-v")
    assert f"{tmp_path}/.deploy: dot-folder; skipped" in err
    assert "app.yaml:19: ConfigMap settings: a kind guywire does not evaluate; skipped." in err
    rc, out, _ = run(capsys, "check", "-o", "json", tmp_path, "-v")
    assert json.loads(out)["errors"] == [], "what -v lists is no error in the report"
