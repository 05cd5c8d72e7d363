"""A failure simulation as text (one screen), JSON, or one self-contained HTML page with an inline SVG."""
from __future__ import annotations

import html
import json
import textwrap

from ..graph.dependency_graph import Graph, WKey, wlabel
from ..model.messages import clip
from ..model.units import format_duration
from ..graph.simulate import ERROR, HANG, OK, SLOW, Hop, Simulation

STATE_COLOUR = {OK: "#e8f0e8", SLOW: "#ffe8a3", ERROR: "#ff9f8f", HANG: "#d7b5ff"}
TARGET_COLOUR = "#b3261e"
HOP_COLOURS = ["#b3261e", "#d9480f", "#e8590c", "#f08c00", "#f59f00", "#fab005"]  # hop 1, 2, 3...


def _d(seconds: float | None) -> str:
    return "never" if seconds is None else format_duration(seconds)


def _n(x: float) -> str:
    """A count: whole numbers with separators, others below 1,000 with up to 4 decimals (3.6, 12.96 and
    14.0625 calls, as ``guywire check`` writes them), larger ones rounded."""
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    return f"{x:.4f}".rstrip("0").rstrip(".") if x < 1000 else f"{x:,.0f}"


def _prob(x: float) -> str:
    if x <= 0:
        return "0%"
    pct = x * 100
    return f"{pct:.3g}%" if pct >= 0.001 else f"{pct:.2g}%"


def _plural(n: float, word: str) -> str:
    if abs(n - 1) < 1e-9:
        return f"{_n(n)} {word}"
    return f"{_n(n)} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def answer_text(sim: Simulation, key: WKey) -> str:
    a = sim.answers.get(key)
    if a is None or a.state == OK:
        return "unaffected"
    if a.state == HANG:
        return "NEVER ANSWERS (unbounded)"
    if a.state == SLOW:
        return f"slow: answers {_d(a.seconds)} late"
    return "FAILS at once" if a.seconds == 0 else f"FAILS after {_d(a.seconds)}"


def hop_text(sim: Simulation, h: Hop) -> str:
    """How the caller lives through one hop, in words."""
    r = h.edge.retry
    callee = sim.answers.get(h.target)
    tries = _plural(h.tries, "try")
    if h.outcome == SLOW:
        return f"{tries}, answered after {_d(h.seconds)} (slow, succeeds)"
    if h.outcome == HANG:
        return f"{tries}, no timeout: waits forever (unbounded)"
    each = "each " if h.tries > 1 else ""
    if h.each_try == "per-try timeout":
        text = f"{tries}, {each}cut by the {format_duration(r.per_try_timeout)} per-try timeout"
    elif h.each_try == "no answer":
        text = f"{tries}, no per-try timeout, no answer"
    elif h.each_try == "answered":
        text = f"{tries}; the answer would come after {_d(callee.seconds if callee else None)}"
    elif r.per_try_timeout is None and r.timeout is None:
        text = f"{tries}, gets an error at once" if h.seconds == 0 else \
            f"{tries}, no timeout: waits {_d(h.seconds)} for an error"
    else:
        wait = callee.seconds if callee else None
        text = f"{tries}, {each}gets an error " + ("at once" if wait == 0 else f"after {_d(wait)}")
    if h.cut_by_timeout:
        text += f"; the {format_duration(r.timeout)} timeout ends it at {_d(h.seconds)}"
    elif r.per_try_timeout is not None or r.timeout is not None:
        text += f"; gives up after {_d(h.seconds)}"
    if h.sidecar_tries:
        implicit = "; implicit mesh retry" if h.edge.implicit is not None else ""
        text += f" ({h.tries // h.sidecar_tries} in the application x {h.sidecar_tries} in the sidecar{implicit})"
    if h.calls != h.tries:
        text += f"; {_n(h.calls)} calls a request on average under the {h.edge.budget_source}"
    if h.expected_tries is not None:
        text += f" (expected tries {h.expected_tries:.3g}, fails {_prob(h.failure_probability or 0)})"
    return text


def assumptions(sim: Simulation) -> str:
    base, cap = format_duration(sim.backoff_base), format_duration(sim.backoff_cap)
    return (f"Assumes: every dependency is needed and called in turn; no cancellation (a callee finishes its "
            f"tries after its caller gives up); backoff exponential {base} x 2^(k-2) up to {cap} "
            f"(linear {base} x (k-1), fixed {base}, none 0).")


def render_simulation_text(sim: Simulation, graph: Graph, rps: float | None = None) -> str:
    t = wlabel(sim.target)
    lines = [f"What if {t} {sim.failure.describe()}?", ""]
    if not sim.entries:
        lines.append(f"Nothing calls {t}: no entry point is affected.")
    worst = max(sim.entries, key=lambda e: (e.calls, e.key), default=None)
    broken_names = [wlabel(e.key) for e in sim.broken_entries]
    if broken_names:
        when = f" in the worst case (every call to {t} fails)" if sim.failure.mode == "error-rate" else ""
        lines.append(f"Breaks{when}: {', '.join(broken_names)}.")
    if worst is not None and worst.calls > 1:
        lines.append(f"Retry storm: one request at {wlabel(worst.key)} sends up to {_n(worst.calls)} calls to {t}"
                     + (f" ({_n(worst.calls * rps)}/s at {_n(rps)} req/s)." if rps else "."))
    if broken_names or (worst is not None and worst.calls > 1):
        lines.append("")
    width = max([len(wlabel(e.key)) + len(e.key[1]) + 3 for e in sim.entries] + [20])
    broken = sim.broken_entries
    if sim.entries:
        lines.append(f"Entry points, worst case ({len(broken)} of {len(sim.entries)} break):")
    for e in sim.entries:
        name = f"{wlabel(e.key)} ({e.key[1]})"
        calls = f"{_plural(e.calls, 'call')} to {t} per request"
        if e.healthy_calls and e.calls != e.healthy_calls:
            calls += f" ({_n(e.amplification)}x)"
        if rps:
            calls += f" = {_n(e.calls * rps)}/s at {_n(rps)} req/s"
        lines.append(f"  {name:<{width}} {answer_text(sim, e.key):<26} {calls}")
        if e.expected_calls is not None:
            lines.append(f"  {'':<{width}} expected: {e.expected_calls:.3g} calls per request, "
                         f"{_prob(e.failure_probability or 0)} of requests fail")
        if len(e.path) > 1:
            lines.append(f"  {'':<{width}} " + wlabel(e.path[0][0])
                         + "".join(f" -({_n(n)}x)-> {wlabel(k)}" for k, n in e.path[1:]))
    affected = [h for h in sim.hops if h.outcome != OK]
    if affected:
        lines += ["", "Hop by hop, from the failure outwards:"]
        hw = max(len(f"{wlabel(h.source)} -> {wlabel(h.target)}") for h in affected)
        for h in affected:
            arrow = f"{wlabel(h.source)} -> {wlabel(h.target)}"
            lines.append(f"  {h.distance}  {arrow:<{hw}}  {hop_text(sim, h)}")
    entry_keys = {e.key for e in sim.entries}
    hung = sorted(k for k, a in sim.answers.items() if a.state == HANG and k != sim.target and k not in entry_keys)
    for k in hung:
        givers = [h for h in sim.hops if h.target == k and h.outcome != HANG]
        held = "; ".join(f"{wlabel(h.source)} gives up after {_d(h.seconds)}" for h in givers)
        lines.append(f"  {wlabel(k)} waits with no timeout, so it never answers"
                     + (f" ({held}, but {wlabel(k)} stays busy)" if held else "") + ".")
    storm = sorted(((k, v) for k, v in sim.load.items() if k not in entry_keys),
                   key=lambda kv: (kv[0] != sim.target, -kv[1], kv[0]))
    if storm:
        lines += ["", "Load from one request at each entry point (worst case), summed:"]
        lw = max(len(wlabel(k)) for k, _ in storm)
        for k, v in storm:
            healthy = sim.healthy_load.get(k, 0)
            text = f"  {wlabel(k):<{lw}}  {_plural(v, 'call')}"
            if healthy and v != healthy:
                text += f" (healthy {_n(healthy)}, {_n(v / healthy)}x)"
            if rps:
                text += f" = {_n(v * rps)}/s"
            if k == sim.target:
                text += "  <- the failing service"
            if k in sim.expected_load:
                text += f"; expected {sim.expected_load[k]:.3g}"
            lines.append(text)
        if rps:
            lines.append(f"  (at {_n(rps)} requests/s on each entry point)")
    if sim.cycle_edges:
        lines.append("")
    for src, dst in sim.cycle_edges:
        lines.append(f"Not followed: {wlabel(src)} -> {wlabel(dst)} goes back round a cycle; "
                     "figures on the cycle are a lower bound.")
    lines += ["", *textwrap.wrap(assumptions(sim), 100)]
    return "\n".join(lines) + "\n"


def simulation_dict(sim: Simulation, rps: float | None = None) -> dict:
    def ans(k: WKey) -> dict:
        a = sim.answers.get(k)
        return {"state": a.state if a else OK, "seconds": a.seconds if a else 0.0}

    return {
        "target": wlabel(sim.target),
        "failure": {"mode": sim.failure.mode, "latency": sim.failure.latency if sim.failure.mode == "latency" else None,
                    "errorRate": sim.failure.error_rate if sim.failure.mode == "error-rate" else None,
                    "text": sim.failure.describe()},
        "rps": rps,
        "entries": [{
            "workload": wlabel(e.key), "kind": e.key[1], **{"answer": ans(e.key)},
            "broken": e.answer.failed, "callsToTarget": e.calls, "healthyCallsToTarget": e.healthy_calls,
            "amplification": e.amplification,
            "callsToTargetPerSecond": e.calls * rps if rps else None,
            "path": [{"workload": wlabel(k), "calls": n} for k, n in e.path],
            "expectedCallsToTarget": e.expected_calls, "expectedFailureProbability": e.failure_probability,
        } for e in sim.entries],
        "hops": [{
            "from": wlabel(h.source), "to": wlabel(h.target), "distance": h.distance, "tries": h.tries,
            "outcome": h.outcome, "timedOut": h.timed_out, "seconds": h.seconds, "eachTry": h.each_try,
            "calls": h.calls, "cutByTimeout": h.cut_by_timeout, "attempts": h.edge.tries.tries,
            "perTryTimeout": h.edge.retry.per_try_timeout, "timeout": h.edge.retry.timeout,
            "backoff": h.edge.retry.backoff, "expectedTries": h.expected_tries,
            "failureProbability": h.failure_probability,
        } for h in sim.hops],
        "workloads": [{
            "workload": wlabel(k), "answer": ans(k), "calls": sim.load.get(k, 0),
            "healthyCalls": sim.healthy_load.get(k, 0),
            "expectedCalls": sim.expected_load.get(k), "failureProbability": sim.failure_probability.get(k),
        } for k in sorted(sim.answers)],
        "cycleEdgesNotFollowed": [[wlabel(a), wlabel(b)] for a, b in sim.cycle_edges],
        "assumptions": {"backoffBase": sim.backoff_base, "backoffCap": sim.backoff_cap, "text": assumptions(sim)},
    }


def render_simulation_json(sim: Simulation, graph: Graph, rps: float | None = None) -> str:
    return json.dumps(simulation_dict(sim, rps), indent=2) + "\n"


# ----- HTML --------------------------------------------------------------------------------------
BOX_W, BOX_H, COL_GAP, ROW_GAP, PAD = 220, 78, 130, 30, 30


def _layout(sim: Simulation, graph: Graph) -> tuple[dict[WKey, int], list[tuple[WKey, WKey, Hop | None]]]:
    """Columns by depth: entry points at 0, each workload one column right of its deepest caller."""
    nodes = set(sim.answers)
    edges: list[tuple[WKey, WKey, Hop | None]] = [(h.source, h.target, h) for h in sim.hops]
    followed = {(h.source, h.target) for h in sim.hops}
    for k in sorted(sim.answers):  # unaffected direct dependencies, greyed, for context
        for e in graph.out.get(k, ()):
            for t in e.targets:
                if t not in nodes and t in graph.out:
                    edges.append((k, t, None))
                    followed.add((k, t))
    nodes |= {t for _, t, _ in edges}
    entries = {e.key for e in sim.entries}
    col = {k: 0 if k in entries else 1 for k in nodes}  # a cycle member nobody else calls stays off column 0
    for _ in range(len(nodes)):  # longest path over a DAG (followed hops never cycle): at most |nodes| rounds
        changed = False
        for s, t, _ in edges:
            if col[t] < col[s] + 1:
                col[t] = col[s] + 1
                changed = True
        if not changed:
            break
    return col, edges


def render_simulation_html(sim: Simulation, graph: Graph, rps: float | None = None) -> str:
    col, edges = _layout(sim, graph)
    columns: dict[int, list[WKey]] = {}
    for k in sorted(col, key=lambda k: (col[k], k)):
        columns.setdefault(col[k], []).append(k)
    pos: dict[WKey, tuple[int, int]] = {}
    for c, keys in columns.items():
        for i, k in enumerate(keys):
            pos[k] = (PAD + c * (BOX_W + COL_GAP), PAD + 40 + i * (BOX_H + ROW_GAP))
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = PAD * 2 + 40 + max((len(v) for v in columns.values()), default=1) * (BOX_H + ROW_GAP)
    esc = html.escape
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="failure propagation">',
           "<defs>"]
    for i, colour in enumerate(HOP_COLOURS + ["#adb5bd"]):
        svg.append(f'<marker id="a{i}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
                   f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    svg.append("</defs>")
    for c in columns:
        x = PAD + c * (BOX_W + COL_GAP)
        svg.append(f'<text x="{x}" y="{PAD + 8}" class="col">{"entry points" if c == 0 else f"depth {c}"}</text>')
    for s, t, h in edges:
        (x1, y1), (x2, y2) = pos[s], pos[t]
        sx, sy, tx, ty = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
        if h is not None and h.outcome != OK:
            idx = min(h.distance - 1, len(HOP_COLOURS) - 1)
            colour, width_px, marker = HOP_COLOURS[idx], 3, idx
            label = f"#{h.distance} {_n(h.calls)}x {h.outcome}"
        else:
            colour, width_px, marker, label = "#adb5bd", 1.5, len(HOP_COLOURS), ""
        lx, ly = (sx + tx) / 2, (sy + ty) / 2 - 6
        if tx <= sx:  # same or earlier column: loop below
            path = f"M{sx},{sy} C{sx + 60},{sy + 90} {tx - 60},{ty + 90} {tx},{ty}"
        elif tx - sx > COL_GAP + 1:  # skips columns: run along the gap above the higher row, between the boxes
            gap = min(y1, y2) - ROW_GAP / 2
            path = (f"M{sx},{sy} C{sx + 30},{sy} {sx + 30},{gap} {sx + 60},{gap} L{tx - 60},{gap} "
                    f"C{tx - 30},{gap} {tx - 30},{ty} {tx},{ty}")
            lx, ly = sx + COL_GAP / 2 + 10, gap + 4
        else:
            mid = (sx + tx) / 2
            path = f"M{sx},{sy} C{mid},{sy} {mid},{ty} {tx},{ty}"
        title = esc(f"{wlabel(s)} -> {wlabel(t)}" + (f": {hop_text(sim, h)}" if h is not None and h.outcome != OK
                                                       else ""))
        svg.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{width_px}" '
                   f'marker-end="url(#a{marker})"><title>{title}</title></path>')
        if label:
            svg.append(f'<rect x="{lx - len(label) * 3.1 - 3}" y="{ly - 11}" width="{len(label) * 6.2 + 6}" '
                       f'height="15" rx="3" fill="#fff" opacity="0.9"/>'
                       f'<text x="{lx}" y="{ly}" class="hop" fill="{colour}" text-anchor="middle">{esc(label)}</text>')
    for (src, dst) in sim.cycle_edges:
        if src in pos and dst in pos:
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            svg.append(f'<path d="M{x1 + BOX_W / 2},{y1} C{x1 + BOX_W / 2},{y1 - 40} {x2 + BOX_W / 2},{y2 - 40} '
                       f'{x2 + BOX_W / 2},{y2}" fill="none" stroke="#868e96" stroke-dasharray="5,4" '
                       f'marker-end="url(#a{len(HOP_COLOURS)})"><title>{esc(wlabel(src))} -> {esc(wlabel(dst))}: '
                       f'closes a cycle, not followed</title></path>')
    entry_keys = {e.key for e in sim.entries}
    for k, (x, y) in pos.items():
        a = sim.answers.get(k)
        state = a.state if a else OK
        fill = TARGET_COLOUR if k == sim.target else STATE_COLOUR[state]
        ink = "#fff" if k == sim.target else "#212529"
        opacity = "1" if a is not None else "0.55"
        load = sim.load.get(k)
        line2 = f"{k[1]} · {k[0]}" + (" · entry" if k in entry_keys else "")
        line3 = sim.failure.describe() if k == sim.target else answer_text(sim, k)
        line4 = ""
        if load and k not in entry_keys:
            healthy = sim.healthy_load.get(k, 0)
            line4 = f"{_plural(load, 'call')} per request" + (f" ({_n(load / healthy)}x)" if healthy and
                                                                  load != healthy else "")
        svg.append(f'<g opacity="{opacity}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" '
                   f'fill="{fill}" stroke="#495057"/>'
                   f'<text x="{x + 10}" y="{y + 19}" class="name" fill="{ink}">{esc(clip(k[2], 26))}</text>'
                   f'<text x="{x + 10}" y="{y + 36}" class="meta" fill="{ink}">{esc(clip(line2, 38))}</text>'
                   f'<text x="{x + 10}" y="{y + 52}" class="meta" fill="{ink}">{esc(clip(line3, 38))}</text>'
                   f'<text x="{x + 10}" y="{y + 68}" class="meta" fill="{ink}">{esc(clip(line4, 38))}</text>'
                   f"<title>{esc(wlabel(k))}: {esc(line3)}{esc(' · ' + line4 if line4 else '')}</title></g>")
    svg.append("</svg>")
    legend = "".join(f'<span class="sw" style="background:{c}"></span>{esc(name)} '
                     for name, c in (("the failing service", TARGET_COLOUR), ("fails", STATE_COLOUR[ERROR]),
                                     ("never answers", STATE_COLOUR[HANG]), ("slow", STATE_COLOUR[SLOW]),
                                     ("unaffected", STATE_COLOUR[OK])))
    hops_legend = "".join(f'<span class="sw" style="background:{c}"></span>hop {i + 1} '
                          for i, c in enumerate(HOP_COLOURS[:max((h.distance for h in sim.hops), default=1)]))
    title = f"What if {wlabel(sim.target)} {sim.failure.describe()}?"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>guywire · {esc(title)}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #212529; }}
h1 {{ font-size: 20px; }}
.legend {{ font-size: 13px; margin: 6px 0 12px; }}
.sw {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #495057; margin: 0 4px 0 10px;
       vertical-align: middle; }}
svg text.name {{ font-size: 14px; font-weight: 600; }}
svg text.meta {{ font-size: 11px; }}
svg text.hop {{ font-size: 11px; font-weight: 600; }}
svg text.col {{ font-size: 12px; fill: #868e96; }}
.scroll {{ overflow-x: auto; border: 1px solid #dee2e6; border-radius: 6px; padding: 6px; }}
pre {{ background: #f8f9fa; padding: 12px; border-radius: 6px; font-size: 12px; overflow-x: auto; }}
</style></head>
<body>
<h1>{esc(title)}</h1>
<div class="legend">{legend}</div>
<div class="legend">edges, coloured by hops from the failure: {hops_legend}
<span class="sw" style="background:#adb5bd"></span>unaffected</div>
<div class="scroll">{"".join(svg)}</div>
<pre>{esc(render_simulation_text(sim, graph, rps))}</pre>
<p class="legend">Generated by guywire simulate. Self-contained: no scripts, no network.</p>
</body></html>
"""
