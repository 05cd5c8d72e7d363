"""A dependency needed only at start-up (guywire.dev/depends-on: hf-mirror;startup) is resolved and drawn,
never judged as a request-path call: no amplification, depth, timeout inversion or simulated request."""
from __future__ import annotations

import json
from pathlib import Path

from guywire.views.annotations import parse_depends_on

from .test_cli import run

FIXTURE = Path(__file__).resolve().parents[1] / "rules/GW-RTY-002/pass-startup-dependency.yaml"
REQUEST_PATH = {"GW-RTY-002", "GW-RTY-004", "GW-DEP-003", "GW-DEP-006", "GW-ANN-001"}


def rules_found(capsys, path) -> set[str]:
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    return {f["rule"] for f in json.loads(out)["findings"]}


def test_the_annotation_reads_the_startup_flag():
    deps, errors = parse_depends_on("llm, hf-mirror;startup, models.store;STARTUP")
    assert errors == [] and [(d.name, d.startup) for d in deps] == [("llm", False), ("hf-mirror", True),
                                                                     ("models", True)]
    deps, (error,) = parse_depends_on("hf-mirror;boot")
    assert deps == [] and "the one flag is ;startup" in error.message
    for spaced in ("hf-mirror; startup", "hf-mirror ;startup", "hf-mirror  ;\tstartup, llm"):
        deps, errors = parse_depends_on(spaced)
        assert errors == [] and [(d.name, d.startup) for d in deps][0] == ("hf-mirror", True), spaced
    deps, (error,) = parse_depends_on("hf-mirror; boot")  # the flag named, not a dependency "boot"
    assert deps == [] and '"hf-mirror;boot": \'boot\' is not a dependency flag' in error.message


def test_a_startup_dependency_is_drawn_but_off_the_request_path(tmp_path, capsys):
    assert not rules_found(capsys, FIXTURE) & REQUEST_PATH
    rc, out, _ = run(capsys, "graph", "-o", "json", FIXTURE)
    edges = {(e["from"], e["to"]): e["flags"] for e in json.loads(out)["edges"]}
    assert edges[("ml/llm-server", "ml/hf-mirror")] == ["startup"]
    rc, out, _ = run(capsys, "simulate", FIXTURE, "--target", "hf-mirror", "--down")
    assert rc == 0 and "Breaks: ml/hf-mirror.\n" in out, "no request waits on the download"
    # the same stack without ;startup: the download is judged as a request-path call
    plain = tmp_path / "plain.yaml"
    plain.write_text(FIXTURE.read_text().replace("hf-mirror;startup", "hf-mirror"))
    assert {"GW-RTY-002", "GW-RTY-004"} <= rules_found(capsys, plain)


def test_an_unresolved_startup_dependency_is_still_reported(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text(FIXTURE.read_text().replace("hf-mirror;startup", "hf-mirorr;startup"))
    rc, out, _ = run(capsys, "check", "-o", "json", typo)
    (f,) = [f for f in json.loads(out)["findings"] if f["rule"] == "GW-DEP-001"]
    assert 'depends on "hf-mirorr" (at start-up), but no Service or workload hf-mirorr' in f["message"]


def test_the_text_graph_draws_the_startup_edge_and_counts_edges_as_json_does(capsys):
    rc, out, _ = run(capsys, "graph", FIXTURE)
    assert "└─ ml/hf-mirror (Deployment, worst Medium) [5x 10m/try startup]" in out
    rc, js, _ = run(capsys, "graph", "-o", "json", FIXTURE)
    graph = json.loads(js)
    assert len(graph["edges"]) == graph["stats"]["edges"] == 2
    assert "3 workload(s), 2 edge(s)," in out
