"""The dependency graph as one self-contained HTML page: inline SVG laid out here, no script, no network.

Workloads are boxes coloured by their worst finding, in columns by depth: entry points
(workloads nobody calls) on the left, each workload one column right of its deepest caller,
the members of a cycle side by side in one column. Edges on a cycle or on an amplified retry
path are red, undeclared and unresolved ones dashed; GPU workloads carry a GPU badge.
Hovering a box or an edge shows its findings or its retry policy (SVG ``<title>`` tooltips);
clicking a box jumps to its findings, listed under the picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .. import __version__
from ..engine.evaluator import Engine
from ..graph.dependency_graph import Edge, Graph, WKey, wlabel
from ..model.messages import clip
from ..model.severity import Severity
from ..model.units import format_duration
from .graph_formats import SEV_COLOUR, _retry_text, _worst, graph_edges

BOX_W, BOX_H, COL_GAP, ROW_GAP, PAD, HEAD = 230, 58, 150, 34, 24, 34
RED, ORANGE, GREY = "#d62728", "#ff7f0e", "#6b6b6b"
MAX_TOOLTIP_FINDINGS = 15

Node = WKey | str  # a workload, or the label of a leaf (an outside host, an unresolved name)


def layout_columns(graph: Graph) -> dict[Node, int]:
    """Column of every workload and leaf: one right of its deepest caller (the longest path from an entry
    point), over the graph's strongly connected components, so the members of a cycle share a column."""
    scc: dict[WKey, object] = {k: graph.analysis[k].scc if k in graph.analysis else ("alone", k) for k in graph.out}
    succ: dict[object, set] = {c: set() for c in scc.values()}
    indeg: dict[object, int] = {c: 0 for c in scc.values()}
    for src, edges in graph.out.items():
        for e in edges:
            for t in e.targets:
                a, b = scc[src], scc.get(t)
                if b is None or a == b or b in succ[a]:
                    continue
                succ[a].add(b)
                indeg[b] += 1
    rank = {c: 0 for c in succ}
    ready = [c for c, n in indeg.items() if n == 0]
    while ready:  # Kahn's order; the longest path does not depend on which ready component goes first
        c = ready.pop()
        for d in succ[c]:
            rank[d] = max(rank[d], rank[c] + 1)
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    cols: dict[Node, int] = {k: rank[c] for k, c in scc.items()}
    for src, edges in graph.out.items():
        for e in edges:
            if not e.targets:
                cols[e.label] = max(cols.get(e.label, 0), cols[src] + 1)
    return cols


@dataclass
class Box:
    node: Node
    col: int
    x: float = 0
    y: float = 0


def _order(cols: dict[Node, int], edges: list[tuple[Node, Node]],
           group: dict[Node, object] | None = None) -> tuple[dict[Node, Box], dict[int, str], int]:
    """Place every box: rows within each column by the mean row of its neighbours (left to right by
    callers, back by callees, and again by callers) to cut crossings, the members of a cycle next to
    each other. Workloads with no call in or out go in columns of their own at the right.
    Returns the boxes, the column titles and the number of rows."""
    group = group or {}
    preds: dict[Node, list[Node]] = {n: [] for n in cols}
    succs: dict[Node, list[Node]] = {n: [] for n in cols}
    for a, b in edges:
        if a in cols and b in cols and a != b:
            succs[a].append(b)
            preds[b].append(a)
    alone = sorted((n for n in cols if not preds[n] and not succs[n]), key=_sort_name)
    by_col: dict[int, list[Node]] = {}
    for n in sorted(cols, key=_sort_name):
        if n not in alone:
            by_col.setdefault(cols[n], []).append(n)
    pos = {n: i for col in by_col.values() for i, n in enumerate(col)}

    def sort_col(c: int, neighbours: dict[Node, list[Node]]) -> None:
        def key(n: Node) -> tuple:
            near = [pos[m] for m in neighbours[n] if cols[m] != c]
            return (sum(near) / len(near) if near else pos[n], _sort_name(n))
        col = sorted(by_col[c], key=key)
        first: dict[object, int] = {}
        for i, n in enumerate(col):
            first.setdefault(group.get(n, n), i)
        col.sort(key=lambda n: (first[group.get(n, n)], key(n)))
        by_col[c] = col
        pos.update({n: i for i, n in enumerate(col)})

    order = sorted(by_col)
    for c in order[1:]:
        sort_col(c, preds)
    for c in reversed(order[:-1]):
        sort_col(c, succs)
    for c in order[1:]:
        sort_col(c, preds)
    rows = max((len(col) for col in by_col.values()), default=0)
    titles = {c: "entry points" if c == 0 else f"depth {c}" for c in order}
    nxt = (max(order) + 1) if order else 0
    if alone:  # wrapped into columns as tall as the graph (at least 4 rows)
        height = max(rows, 4, -(-len(alone) // 6))
        for i in range(0, len(alone), height):
            c = nxt + i // height
            by_col[c] = alone[i:i + height]
            titles[c] = "no calls in or out" if i == 0 else ""
        rows = max(rows, min(height, len(alone)))
    boxes: dict[Node, Box] = {}
    for c, col in by_col.items():
        for i, n in enumerate(col):
            boxes[n] = Box(n, c, PAD + c * (BOX_W + COL_GAP), PAD + HEAD + i * (BOX_H + ROW_GAP))
    return boxes, titles, max(rows, 1)


def _sort_name(node: Node) -> tuple:
    return (1, node, "") if isinstance(node, str) else (0, node[0], node[2])


def _anchor(key: WKey) -> str:
    return "w-" + "-".join(key).replace("/", "-").replace(".", "-")


def _retry_detail(e: Edge) -> str:
    r = e.retry

    def d(v: float | None) -> str:
        return format_duration(v) if v is not None else "none"
    text = (f"{r.attempts} attempt(s), perTryTimeout {d(r.per_try_timeout)}, timeout {d(r.timeout)}, "
            f"backoff {r.backoff or 'none'}")
    if e.mesh is not None:
        text += (f"\nmesh: {e.mesh.source}, {e.mesh.attempts} tries (application: {e.app_retry.attempts} "
                 "attempt(s))")
    elif e.implicit is not None:
        text += (f"\nimplicit mesh retry: {e.implicit.source}, {e.implicit.attempts} tries per application "
                 f"attempt; {e.tries.tries} tries in all")
    return text


def _gap_y(row: int) -> float:
    """The middle of the gap above row ``row`` (row == rows: below the last)."""
    return PAD + HEAD + row * (BOX_H + ROW_GAP) - ROW_GAP / 2


def _edge_path(a: Box, b: Box, rows: int) -> tuple[str, float, float, str]:
    """An SVG path from box a to box b, where its label goes and how the label is anchored.

    Forward edges leave a box on the right and enter the next on the left; an edge that skips
    columns runs through the gaps between rows of the columns it crosses, never across a box.
    Calls between members of one cycle (one column) go straight up or down between neighbours,
    or bulge out on the right."""
    if a.node == b.node:  # self-loop: a small loop on the right
        x, y = a.x + BOX_W, a.y + BOX_H / 2
        return (f"M{x:.0f},{y - 10:.0f} C{x + 45:.0f},{y - 40:.0f} {x + 45:.0f},{y + 40:.0f} {x + 2:.0f},{y + 10:.0f}",
                x + 40, y - 26, "middle")
    if b.col <= a.col:
        step = BOX_H + ROW_GAP
        if abs(b.y - a.y) <= step + 1:  # neighbours: straight down on the left third, up on the right third
            if b.y > a.y:
                x = a.x + BOX_W * 0.4
                return (f"M{x:.0f},{a.y + BOX_H:.0f} L{x:.0f},{b.y - 2:.0f}", x - 6, a.y + BOX_H + ROW_GAP / 2 + 8,
                        "end")
            x = a.x + BOX_W * 0.6
            return f"M{x:.0f},{a.y:.0f} L{x:.0f},{b.y + BOX_H + 2:.0f}", x + 6, b.y + BOX_H + ROW_GAP / 2 + 8, "start"
        x1, y1 = a.x + BOX_W, a.y + BOX_H / 2 + (6 if b.y > a.y else -6)
        x2, y2 = b.x + BOX_W + 2, b.y + BOX_H / 2 + (-6 if b.y > a.y else 6)
        bulge = 50 + abs(y2 - y1) / 6
        return (f"M{x1:.0f},{y1:.0f} C{x1 + bulge:.0f},{y1:.0f} {x2 + bulge:.0f},{y2:.0f} {x2:.0f},{y2:.0f}",
                x1 + bulge * 0.8, (y1 + y2) / 2, "start")
    x1, y1 = a.x + BOX_W, a.y + BOX_H / 2
    x2, y2 = b.x - 2, b.y + BOX_H / 2
    points: list[tuple[float, float]] = [(x1, y1)]
    span = b.col - a.col
    for i in range(1, span):  # through the gaps of the columns in between
        line_y = y1 + (y2 - y1) * i / span
        row = min(range(rows + 1), key=lambda r: (abs(_gap_y(r) - line_y), r))
        cx = a.x + i * (BOX_W + COL_GAP)
        points += [(cx - 12, _gap_y(row)), (cx + BOX_W + 12, _gap_y(row))]
    points.append((x2, y2))
    d = [f"M{x1:.0f},{y1:.0f}"]
    for i in range(1, len(points)):
        (px, py), (qx, qy) = points[i - 1], points[i]
        if i % 2:  # across a gap between columns: a smooth S
            dx = (qx - px) / 2
            d.append(f"C{px + dx:.0f},{py:.0f} {qx - dx:.0f},{qy:.0f} {qx:.0f},{qy:.0f}")
        else:  # along a gap between rows
            d.append(f"L{qx:.0f},{qy:.0f}")
    (px, py), (qx, qy) = points[0], points[1]
    return " ".join(d), (px + qx) / 2, (py + qy) / 2, "middle"


def render_html(engine: Engine) -> str:
    g = engine.graph
    inv = engine.inventory
    worst = _worst(engine)
    findings = {k: engine.findings_for(k) for k in inv.workloads}
    edges = list(graph_edges(engine))
    cols = layout_columns(g)
    group = {k: a.scc for k, a in g.analysis.items() if a.scc in g.sccs}
    boxes, titles, rows = _order(cols, [(s, t if t is not None else label) for s, label, t, _, _ in edges], group)
    in_cycle = {k for members in g.sccs.values() for k in members}
    on_hot_path = {n for s, label, t, _, flags in edges if "amplified" in flags for n in (s, t) if n is not None}

    width = PAD * 2 + (max(titles, default=0) + 1) * (BOX_W + COL_GAP) - COL_GAP + 60
    height = PAD * 2 + HEAD + rows * (BOX_H + ROW_GAP)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph">',
           "<defs>"]
    for name, colour in (("plain", GREY), ("hot", RED), ("soft", ORANGE)):
        svg.append(f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" '
                   f'markerWidth="10" markerHeight="10" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
                   "</marker>")
    svg.append("</defs>")
    for c, title in sorted(titles.items()):
        if title:
            svg.append(f'<text class="col" x="{PAD + c * (BOX_W + COL_GAP)}" y="{PAD + 12}">{title}</text>')

    # edges first, so boxes sit on top of them
    for s, label, t, e, flags in edges:
        a, b = boxes[s], boxes[t if t is not None else label]
        path, lx, ly, anchor = _edge_path(a, b, rows)
        hot = "cycle" in flags or "amplified" in flags
        soft = "unresolved" in flags or "undeclared" in flags
        kind = "hot" if hot else "soft" if soft else "plain"
        colour = RED if hot else ORANGE if soft else GREY
        dash = ' stroke-dasharray="6 4"' if soft else ""
        tip = f"{wlabel(s)} → {label}\ndependency: {e.dep.raw} ({'declared' if e.declared else 'inferred from env ' + str(e.inferred_from)})"
        tip += "\n" + _retry_detail(e)
        if flags:
            tip += "\n" + ", ".join(flags)
        text = " ".join([_retry_text(e), *(f for f in flags if f in ("cycle", "amplified"))]).strip()
        svg.append(f'<g class="edge {kind}"><title>{escape(tip)}</title>'
                   f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{3 if hot else 1.6}"{dash} '
                   f'marker-end="url(#arrow-{kind})"/>')
        if text:
            svg.append(f'<text class="elabel" x="{lx:.0f}" y="{ly - 4:.0f}" text-anchor="{anchor}">'
                       f"{escape(text)}</text>")
        svg.append("</g>")

    for node, box in sorted(boxes.items(), key=lambda kv: _sort_name(kv[0])):
        if isinstance(node, str):  # a leaf: an outside host or a name that resolves to nothing
            unresolved = node.endswith("(unresolved)")
            svg.append(f'<g class="leaf"><title>{escape(node)}</title>'
                       f'<rect x="{box.x}" y="{box.y + 8}" width="{BOX_W}" height="{BOX_H - 16}" rx="21" '
                       f'fill="#ffffff" stroke="{ORANGE if unresolved else GREY}" stroke-dasharray="5 4"/>'
                       f'<text class="leaf" x="{box.x + BOX_W / 2}" y="{box.y + BOX_H / 2 + 4}" '
                       f'text-anchor="middle">{escape(clip(node, 34))}</text></g>')
            continue
        w = inv.workloads[node]
        sev = worst.get(node)
        found = findings.get(node, [])
        a = g.analysis.get(node)
        tip = [f"{w.kind} {w.namespace}/{w.name}", f"worst: {sev.value if sev else 'no finding'}"]
        if w.requests_gpu:
            gpus = sum(c.gpu_count for c in w.containers)
            tip.append(f"GPU: {gpus:g} requested")
        if a is not None:
            tip.append(f"depth {a.depth}, amplification {a.amplification}x")
        if node in in_cycle:
            tip.append("on a dependency cycle")
        tip += [""] + [f.render() for f in found[:MAX_TOOLTIP_FINDINGS]]
        if len(found) > MAX_TOOLTIP_FINDINGS:
            tip.append(f"… and {len(found) - MAX_TOOLTIP_FINDINGS} more below the picture")
        stroke, sw, dash = "#555555", 1.2, ""
        if node in in_cycle:
            stroke, sw, dash = RED, 3, ' stroke-dasharray="7 3"'
        elif node in on_hot_path:
            stroke, sw = RED, 2.4
        classes = "node" + (" gpu" if w.requests_gpu else "") + (" cycle" if node in in_cycle else "")
        svg.append(f'<a href="#{_anchor(node)}"><g class="{classes}" data-severity="{sev.value if sev else "none"}">'
                   f"<title>{escape(chr(10).join(tip))}</title>"
                   f'<rect x="{box.x}" y="{box.y}" width="{BOX_W}" height="{BOX_H}" rx="8" '
                   f'fill="{SEV_COLOUR[sev]}" stroke="{stroke}" stroke-width="{sw}"{dash}/>'
                   f'<text class="name" x="{box.x + 10}" y="{box.y + 22}">{escape(clip(w.name, 25))}</text>'
                   f'<text class="meta" x="{box.x + 10}" y="{box.y + 41}">{escape(_meta(w.kind, w.namespace, len(found)))}'
                   "</text>")
        if w.requests_gpu:
            svg.append(f'<rect class="gpu" x="{box.x + BOX_W - 44}" y="{box.y - 9}" width="40" height="18" rx="4" '
                       f'fill="#76b900"/><text class="badge" x="{box.x + BOX_W - 24}" y="{box.y + 4}" '
                       'text-anchor="middle">GPU</text>')
        svg.append("</g></a>")
    svg.append("</svg>")
    return _page(engine, "\n".join(svg), findings, worst)


def _meta(kind: str, namespace: str, findings: int) -> str:
    text = f"{kind} · {namespace}"
    more = f" · {findings} finding{'s' if findings != 1 else ''}" if findings else ""
    return text + more if len(text + more) <= 38 else clip(text, 38)


def _legend() -> str:
    items = [f'<span class="sw" style="background:{SEV_COLOUR[s]}"></span>{s.value if s else "no finding"}'
             for s in (None, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)]
    items += [f'<span class="ln" style="border-top:3px solid {RED}"></span>cycle or amplified retry path',
              f'<span class="ln" style="border-top:2px dashed {ORANGE}"></span>undeclared or unresolved call',
              '<span class="badge-l">GPU</span>requests GPUs']
    return " ".join(f'<span class="item">{i}</span>' for i in items)


def _page(engine: Engine, svg: str, findings: dict, worst: dict) -> str:
    s = engine.graph.stats()
    total = sum(len(v) for v in findings.values())
    rows = []
    order = sorted((k for k, v in findings.items() if v),
                   key=lambda k: (-(worst[k].rank if worst.get(k) else 0), k[0], k[2]))
    for key in order:
        w = engine.inventory.workloads[key]
        items = "".join(f'<li><span class="sev" style="background:{SEV_COLOUR[f.severity]}">{f.severity.value}</span> '
                        f"{escape(f.render())}</li>" for f in findings[key])
        src = f' <span class="src">{escape(str(w.source))}</span>' if w.source else ""
        rows.append(f'<section id="{_anchor(key)}"><h3>{escape(f"{w.kind} {w.namespace}/{w.name}")}{src}</h3>'
                    f"<ul>{items}</ul></section>")
    summary = (f"{s['workloads']} workload(s), {s['edges']} edge(s), {s['cycles']} cycle(s), max depth "
               f"{s['maxDepth']}, max amplification {s['maxAmplification']}x; {total} finding(s).")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="guywire {escape(__version__)}">
<title>guywire dependency graph</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 16px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.summary {{ color: #444; margin: 0 0 8px; }}
.legend .item {{ display: inline-flex; align-items: center; gap: 4px; margin-right: 14px; font-size: 13px; }}
.legend .sw {{ display: inline-block; width: 14px; height: 14px; border: 1px solid #555; border-radius: 3px; }}
.legend .ln {{ display: inline-block; width: 26px; }}
.badge-l {{ background: #76b900; color: #fff; font-size: 11px; font-weight: 700; padding: 1px 5px; border-radius: 4px; }}
.canvas {{ overflow: auto; border: 1px solid #ddd; border-radius: 6px; margin: 10px 0 18px; background: #fcfcfc; }}
svg text {{ font-family: inherit; fill: #222; }}
svg text.name {{ font-size: 14px; font-weight: 600; }}
svg text.meta {{ font-size: 11px; fill: #444; }}
svg text.leaf {{ font-size: 12px; font-weight: 600; }}
svg text.col {{ font-size: 12px; fill: #777; text-transform: uppercase; letter-spacing: .05em; }}
svg text.elabel {{ font-size: 11px; fill: #333; paint-order: stroke; stroke: #fcfcfc; stroke-width: 4px; }}
svg text.badge {{ font-size: 11px; font-weight: 700; fill: #fff; }}
svg .node:hover rect {{ filter: brightness(0.93); stroke-width: 3; }}
svg .edge:hover path {{ stroke-width: 4; }}
section h3 {{ font-size: 15px; margin: 14px 0 4px; }}
section ul {{ margin: 0; padding-left: 18px; }}
section li {{ margin: 2px 0; font-size: 13px; }}
.sev {{ display: inline-block; min-width: 56px; text-align: center; border: 1px solid #999; border-radius: 3px; font-size: 11px; }}
.src {{ color: #777; font-weight: 400; font-size: 12px; }}
:target {{ background: #fff8d6; }}
</style>
</head>
<body>
<h1>guywire dependency graph</h1>
<p class="summary">{escape(summary)} Hover a box or an arrow for details; click a box for its findings.</p>
<div class="legend">{_legend()}</div>
<div class="canvas">
{svg}
</div>
<h2>Findings</h2>
{"".join(rows) or "<p>No findings.</p>"}
</body>
</html>
"""


__all__ = ["layout_columns", "render_html"]
