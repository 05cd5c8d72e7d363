"""A call to a Service that is not among the inputs stays visible: an edge to an unresolved Service in the
graph, GW-DEP-001 when it is declared, GW-DEP-006 with an "unresolved" note when it is inferred from env."""
from __future__ import annotations

import json
from pathlib import Path

from .test_cli import run

FIXTURE = Path(__file__).resolve().parents[1] / "rules/GW-DEP-006/fail-unresolved-service.yaml"


def test_inferred_and_declared_unresolved_calls_are_edges_and_findings(tmp_path, capsys):
    text = FIXTURE.read_text().replace("  labels: {app.kubernetes.io/name: rag-api}\n",
                                       "  labels: {app.kubernetes.io/name: rag-api}\n  annotations:\n"
                                       "    guywire.dev/depends-on: qdrant-database\n", 1)
    path = tmp_path / "rag.yaml"
    path.write_text(text)
    rc, out, _ = run(capsys, "graph", "-o", "json", path)
    edges = {e["to"]: e for e in json.loads(out)["edges"]}
    assert set(edges) == {"ml/qdrant-database (unresolved)", "search/opensearch (unresolved)"}
    assert edges["ml/qdrant-database (unresolved)"]["declared"] is True
    assert "unresolved" in edges["search/opensearch (unresolved)"]["flags"]
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    found = sorted((f["rule"], f["message"]) for f in json.loads(out)["findings"]
                   if f["rule"] in ("GW-DEP-001", "GW-DEP-006"))
    assert [rule for rule, _ in found] == ["GW-DEP-001", "GW-DEP-006"], \
        "the declared call is GW-DEP-001 only, the inferred one GW-DEP-006"
    assert 'depends on "qdrant-database", but no Service or workload qdrant-database' in found[0][1]
    assert "calls Service search/opensearch (env SEARCH_ENDPOINT), which is not among the inputs (unresolved)" \
        in found[1][1]


def test_the_text_graph_says_unresolved_once(capsys):
    rc, out, _ = run(capsys, "graph", FIXTURE)
    assert "├─ ml/qdrant-database [unresolved undeclared]" in out
    assert out.count("unresolved") == 2, out
