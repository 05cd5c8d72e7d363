"""Pictures of the dependency graph: the self-contained HTML page (inline SVG laid out by depth) and Mermaid that
GitHub renders."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from guywire.cli import build, main
from guywire.engine.evaluator import Engine
from guywire.graph.dependency_graph import wlabel
from guywire.model.policy import baseline_policy
from guywire.render.graph_formats import SEV_COLOUR, render_mermaid
from guywire.render.html import BOX_H, BOX_W, layout_columns, render_html

from .manifests import container, deployment, inventory, service

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def judged(*objs) -> Engine:
    e = Engine([baseline_policy()], inventory(*objs))
    e.evaluate_all()
    return e


@pytest.fixture(scope="module")
def examples() -> Engine:
    inv, policies, diags, _, _ = build([str(ROOT / "examples")], [])
    assert not [d for d in diags if d.error]
    e = Engine(policies or [baseline_policy()], inv)
    e.evaluate_all()
    return e


def svg_of(page: str) -> ET.Element:
    return ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])


def node_groups(svg: ET.Element) -> dict[str, ET.Element]:
    """Workload boxes by the first line of their tooltip (Kind ns/name)."""
    out = {}
    for g in svg.iter(f"{SVG}g"):
        if "node" in g.get("class", "").split():
            out[g.find(f"{SVG}title").text.splitlines()[0]] = g
    return out


# ----- HTML --------------------------------------------------------------------------------------------------


def test_page_is_self_contained(examples):
    page = render_html(examples)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    urls = set(re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, f"nothing is fetched at view time: {urls}"
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert set(re.findall(r"url\(([^)]*)\)", page)) <= {"#arrow-plain", "#arrow-hot", "#arrow-soft"}
    svg_of(page)  # well-formed XML


def test_boxes_are_coloured_by_worst_severity_and_carry_their_findings(examples):
    svg = svg_of(render_html(examples))
    boxes = node_groups(svg)
    assert len(boxes) == len(examples.inventory.workloads)
    for key, w in examples.inventory.workloads.items():
        g = boxes[f"{w.kind} {w.namespace}/{w.name}"]
        found = examples.findings_for(key)
        worst = found[0].severity if found else None
        assert g.find(f"{SVG}rect").get("fill") == SEV_COLOUR[worst]
        tip = g.find(f"{SVG}title").text
        for f in found[:10]:
            assert f.render() in tip, "hover shows the findings"
        assert ("gpu" in g.get("class").split()) == w.requests_gpu
        badge = [t for t in g.iter(f"{SVG}text") if t.get("class") == "badge"]
        assert bool(badge) == w.requests_gpu, "GPU workloads carry a GPU badge"


def test_cycles_and_amplified_paths_are_red(examples):
    svg = svg_of(render_html(examples))
    boxes = node_groups(svg)
    for name in ("Deployment ml/retriever", "Deployment ml/reranker"):
        g = boxes[name]
        assert "cycle" in g.get("class").split() and g.find(f"{SVG}rect").get("stroke") == "#d62728"
    hot = [g.find(f"{SVG}title").text.splitlines()[0] for g in svg.iter(f"{SVG}g")
           if g.get("class") == "edge hot"]
    assert {"ml/gateway → ml/rag-orchestrator", "ml/rag-orchestrator → ml/retriever",
            "ml/retriever → data/vector-db", "ml/retriever → ml/reranker", "ml/reranker → ml/retriever"} <= set(hot)
    assert "ml/search-api → search/search-index" not in hot


def test_columns_follow_depth_and_cycles_share_one(examples):
    g = examples.graph
    cols = layout_columns(g)
    for src, edges in g.out.items():
        for e in edges:
            for t in e.targets:
                if g.analysis[src].scc == g.analysis[t].scc:
                    assert cols[src] == cols[t], "a cycle's members share a column"
                else:
                    assert cols[t] > cols[src], f"{wlabel(src)} -> {wlabel(t)} goes right"
            if not e.targets:
                assert cols[e.label] > cols[src]
    assert cols[("ml", "Deployment", "gateway")] == 0 and cols[("data", "StatefulSet", "vector-db")] == 3


def test_boxes_never_overlap(examples):
    svg = svg_of(render_html(examples))
    rects = []
    for g in svg.iter(f"{SVG}g"):
        if g.get("class", "").split()[:1] in (["node"], ["leaf"]):
            r = g.find(f"{SVG}rect")
            rects.append((float(r.get("x")), float(r.get("y")), float(r.get("width")), float(r.get("height"))))
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1], (a, b)


def test_an_edge_that_skips_columns_runs_between_rows():
    # a -> b -> c -> d and a -> d: the long edge passes columns 1 and 2 through the gaps, not across b or c
    e = judged(deployment("a", depends_on="b, d"), deployment("b", depends_on="c"), deployment("c", depends_on="d"),
               deployment("d"))
    svg = svg_of(render_html(e))
    (long_edge,) = [g for g in svg.iter(f"{SVG}g")
                    if g.get("class", "").startswith("edge") and g.find(f"{SVG}title").text.startswith("ml/a → ml/d")]
    d = long_edge.find(f"{SVG}path").get("d")
    boxes = {k.split("/")[-1]: g.find(f"{SVG}rect") for k, g in node_groups(svg).items()}
    for name in ("b", "c"):
        r = boxes[name]
        x, y = float(r.get("x")), float(r.get("y"))
        segments = re.findall(r"L(-?\d+),(-?\d+)", d)
        assert any(x <= float(px) <= x + BOX_W + 12 and not (y <= float(py) <= y + BOX_H) for px, py in segments)


def test_workloads_without_calls_stand_apart():
    e = judged(deployment("a", depends_on="b"), deployment("b"), deployment("lonely"))
    page = render_html(e)
    assert "no calls in or out" in page
    cols = {k.split("/")[-1]: float(g.find(f"{SVG}rect").get("x")) for k, g in node_groups(svg_of(page)).items()}
    assert cols["lonely"] > cols["b"] > cols["a"]


def test_text_from_manifests_is_escaped():
    e = judged(deployment("x", annotations={"guywire.dev/depends-on": "<script>alert(1)</script>"}))
    page = render_html(e)
    assert "<script>" not in page and "&lt;script&gt;" in page
    svg_of(page)


def test_html_is_deterministic(examples):
    assert render_html(examples) == render_html(examples)


def test_cli_writes_the_page(capsys):
    assert main(["graph", str(ROOT / "examples"), "--format", "html"]) == 0
    out = capsys.readouterr().out
    assert "<svg" in out and "rag-orchestrator" in out


# ----- Mermaid -----------------------------------------------------------------------------------------------

MERMAID_LINE = re.compile(
    r'^  (?:'
    r'n_[A-Za-z0-9_]+\["[^"<>{}|#;`]*(?:<br/>[^"<>{}|#;`]*)*"\]'  # a workload: quoted label, <br/> only
    r'|n_[A-Za-z0-9_]+\(\["[^"<>{}|#;`]*"\]\)'  # a leaf
    r'|class n_[A-Za-z0-9_]+ (?:clean|low|medium|high|critical)'
    r'|n_[A-Za-z0-9_]+ (?:-->|-\.->)(?:\|"[^"<>{}|#;`]*"\|)? n_[A-Za-z0-9_]+'  # an edge, label quoted
    r'|classDef (?:clean|low|medium|high|critical) fill:#[0-9a-f]{6},stroke:#555'
    r'|linkStyle [0-9,]+ stroke:#d62728,stroke-width:3px'
    r')$')


def test_mermaid_uses_only_what_github_renders(examples):
    text = render_mermaid(examples)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    bad = [line for line in lines[1:] if not MERMAID_LINE.match(line)]
    assert bad == [], "every line is a shape Mermaid on GitHub accepts"
    links = sum(1 for line in lines if re.search(r" (-->|-\.->)", line))
    styled = [int(i) for line in lines if line.startswith("  linkStyle ") for i in line.split()[1].split(",")]
    assert styled and max(styled) < links, "linkStyle indexes name existing links"
    assert "n_ml_2f_gateway" in text and "GPU" in text


def test_mermaid_ids_are_distinct_for_names_that_differ_only_in_punctuation():
    e = judged(deployment("a.b"), deployment("a-b"), deployment("caller", depends_on="a-b, external:api.example.com"),
               service("a-b"))
    text = render_mermaid(e)
    ids = re.findall(r"^  (n_[A-Za-z0-9_]+)\[", text, re.M)
    assert len(ids) == len(set(ids)) == 3


def test_readme_shows_the_mermaid_picture_of_the_example(examples):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The dependency graph of the example", 1)
    assert len(section) == 2, "README has the section"
    block = re.search(r"```mermaid\n(.*?)```", section[1], re.S)
    assert block, "with a mermaid block"
    assert block.group(1) == render_mermaid(examples), \
        "regenerate it with: guywire graph examples/ --format mermaid"


@pytest.mark.parametrize("fmt", ["text", "dot", "json", "mermaid", "html"])
def test_graph_formats_read_containers_with_gpu(fmt, capsys, tmp_path):
    import yaml
    path = tmp_path / "x.yaml"
    gpu = container(resources={"requests": {"cpu": "1", "memory": "1Gi"},
                               "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})
    path.write_text(yaml.safe_dump_all([deployment("llm", containers=[gpu]), deployment("ui", depends_on="llm")]))
    assert main(["graph", str(path), "--format", fmt]) == 0
    assert "llm" in capsys.readouterr().out
