"""The dependency graph as text, DOT, Mermaid or JSON, with violating edges and cycles marked."""
from __future__ import annotations

import json
import re

from ..engine.evaluator import Engine
from ..graph.dependency_graph import Edge, WKey, wlabel
from ..model.severity import Severity

SEV_COLOUR = {None: "#d9f2d9", Severity.LOW: "#dceefc", Severity.MEDIUM: "#fff2b3", Severity.HIGH: "#ffc9a8",
              Severity.CRITICAL: "#ff9b9b"}


def _worst(engine: Engine) -> dict[WKey, Severity | None]:
    out: dict[WKey, Severity | None] = {}
    for key in engine.inventory.workloads:
        found = engine.findings_for(key)
        out[key] = found[0].severity if found else None
    return out


def _amplified_pairs(engine: Engine) -> set[tuple[str, str]]:
    pairs = set()
    for key in engine.inventory.workloads:
        for f in engine.findings_for(key):
            if f.rule in ("GW-RTY-002", "GW-DEP-004") and f.path:
                pairs.update(zip(f.path, f.path[1:]))
    return pairs


def edge_flags(engine: Engine, e: Edge, target: WKey | None, hot: set[tuple[str, str]]) -> list[str]:
    g = engine.graph
    flags = []
    if not e.resolved:
        flags.append("unresolved")
    if not e.declared:
        flags.append("undeclared")
    if e.startup:
        flags.append("startup")
        return flags
    if target is not None:
        a, b = g.analysis.get(e.source), g.analysis.get(target)
        if a and b and a.scc == b.scc and a.scc in g.sccs:
            flags.append("cycle")
        if (wlabel(e.source), wlabel(target)) in hot and "cycle" not in flags:
            flags.append("amplified")
    return flags


def graph_edges(engine: Engine):
    """(source, target label, target key or None, edge, flags) for every edge, targets expanded."""
    hot = _amplified_pairs(engine)
    g = engine.graph
    for src in sorted(g.out):
        for e in (*g.out[src], *g.startup.get(src, ())):
            targets = e.targets or (None,)
            for t in targets:
                yield src, (wlabel(t) if t else e.label), t, e, edge_flags(engine, e, t, hot)


def _retry_text(e: Edge) -> str:
    """The hop's label: its tries as the retry rules count them (the application's, each through the caller's
    sidecar, Istio's implicit default included), and the per-try timeout."""
    r = e.retry
    parts = []
    if e.tries.tries > 1:
        parts.append(f"{e.tries.tries}x")
    if r.per_try_timeout is not None:
        from ..model.units import format_duration
        parts.append(f"{format_duration(r.per_try_timeout)}/try")
    return " ".join(parts)


def render_graph_json(engine: Engine) -> str:
    worst = _worst(engine)
    g = engine.graph
    nodes = []
    for key, w in sorted(engine.inventory.workloads.items()):
        a = g.analysis.get(key)
        nodes.append({"id": wlabel(key), "kind": w.kind, "namespace": w.namespace, "name": w.name,
                      "gpu": w.requests_gpu, "worstSeverity": worst[key].value if worst.get(key) else None,
                      "depth": a.depth if a else 0, "amplification": a.amplification if a else 1,
                      "score": engine.score(key)})
    edges = [{"from": wlabel(s), "to": label, "dependency": e.dep.raw, "declared": e.declared,
              "inferredFrom": e.inferred_from, "service": f"{e.service[0]}/{e.service[1]}" if e.service else None,
              "attempts": e.retry.attempts, "perTryTimeout": e.retry.per_try_timeout, "timeout": e.retry.timeout,
              "backoff": e.retry.backoff, "flags": flags,
              "tries": e.tries.tries, "calls": e.tries.calls,
              "mesh": {"source": e.mesh.source, "attempts": e.mesh.attempts, "perTryTimeout": e.mesh.per_try_timeout,
                       "timeout": e.mesh.timeout, "applicationAttempts": e.app_retry.attempts} if e.mesh else
              {"source": e.implicit.source, "attempts": e.implicit.attempts, "implicit": True,
               "applicationAttempts": e.app_retry.attempts} if e.implicit else None}
             for s, label, _, e, flags in graph_edges(engine)]
    cycles = [[wlabel(k) for k in members] for members in g.sccs.values()]
    return json.dumps({"nodes": nodes, "edges": edges, "cycles": sorted(cycles), "stats": g.stats()}, indent=2) + "\n"


def _dot_id(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def render_dot(engine: Engine) -> str:
    worst = _worst(engine)
    lines = ["digraph guywire {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    leaves = set()
    for key, w in sorted(engine.inventory.workloads.items()):
        label = f"{w.name}\\n{w.kind} · {w.namespace}" + ("\\n[GPU]" if w.requests_gpu else "")
        lines.append(f"  {_dot_id(wlabel(key))} [label={_dot_id(label)}, fillcolor=\"{SEV_COLOUR[worst.get(key)]}\"];")
    for s, label, t, e, flags in graph_edges(engine):
        if t is None and label not in leaves:
            leaves.add(label)
            lines.append(f"  {_dot_id(label)} [shape=ellipse, style=dashed];")
        attrs = []
        text = " ".join([_retry_text(e), *flags]).strip()
        if text:
            attrs.append(f"label={_dot_id(text)}")
        if "cycle" in flags or "amplified" in flags:
            attrs.append('color="#d62728", penwidth=2')
        elif "unresolved" in flags or "undeclared" in flags:
            attrs.append('style=dashed, color="#ff7f0e"')
        lines.append(f"  {_dot_id(wlabel(s))} -> {_dot_id(label)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(text: str) -> str:
    """A Mermaid node id: letters, digits and _ only, distinct for distinct names (a.b and a-b differ)."""
    return "n_" + re.sub(r"[^A-Za-z0-9]", lambda m: f"_{ord(m.group()):x}_", text)


def _mtext(text: str) -> str:
    """Text inside a quoted Mermaid label: no quotes, and no characters Mermaid reads as markup."""
    return re.sub(r'["<>{}|#;`]', "", text)


def render_mermaid(engine: Engine) -> str:
    """A Mermaid flowchart that GitHub renders: quoted labels, ids of plain characters, <br/> only."""
    worst = _worst(engine)
    lines = ["flowchart LR"]
    for key, w in sorted(engine.inventory.workloads.items()):
        gpu = " · GPU" if w.requests_gpu else ""
        lines.append(f'  {_mid(wlabel(key))}["{_mtext(w.name)}<br/>{_mtext(w.kind)} · {_mtext(w.namespace)}{gpu}"]')
        sev = worst.get(key)
        lines.append(f"  class {_mid(wlabel(key))} {sev.value.lower() if sev else 'clean'}")
    leaves = set()
    red = []
    for i, (s, label, t, e, flags) in enumerate(graph_edges(engine)):
        if t is None and label not in leaves:
            leaves.add(label)
            lines.append(f'  {_mid(label)}(["{_mtext(label)}"])')
        text = " ".join([_retry_text(e), *flags]).strip()
        arrow = "-.->" if ("unresolved" in flags or "undeclared" in flags) else "-->"
        lines.append(f"  {_mid(wlabel(s))} {arrow}{'|' + chr(34) + _mtext(text) + chr(34) + '|' if text else ''} "
                     f"{_mid(label)}")
        if "cycle" in flags or "amplified" in flags:
            red.append(str(i))
    for sev, colour in SEV_COLOUR.items():
        lines.append(f"  classDef {sev.value.lower() if sev else 'clean'} fill:{colour},stroke:#555")
    if red:
        lines.append(f"  linkStyle {','.join(red)} stroke:#d62728,stroke-width:3px")
    return "\n".join(lines) + "\n"


def render_graph_text(engine: Engine) -> str:
    """An indented tree from each entry point (workloads nobody calls), cycles cut and marked."""
    g = engine.graph
    worst = _worst(engine)
    hot = _amplified_pairs(engine)
    lines: list[str] = []
    def calls(key: WKey) -> tuple[Edge, ...]:
        return (*g.out.get(key, ()), *g.startup.get(key, ()))

    roots = [k for k in sorted(g.out) if not g.callers.get(k) and calls(k)]
    in_cycles = {k for members in g.sccs.values() for k in members}
    roots += [k for k in sorted(in_cycles) if all(c in in_cycles for c in g.callers.get(k, ()))
              and not any(k in g.sccs[sid] and k != min(g.sccs[sid]) for sid in g.sccs)]

    def tag(key: WKey) -> str:
        w = engine.inventory.workloads[key]
        sev = worst.get(key)
        bits = [w.kind]
        if w.requests_gpu:
            bits.append("GPU")
        if sev:
            bits.append(f"worst {sev.value}")
        return f"{wlabel(key)} ({', '.join(bits)})"

    expanded: set[WKey] = set()

    def walk(key: WKey, prefix: str, seen: tuple[WKey, ...]) -> None:
        expanded.add(key)
        items = [(e, t) for e in calls(key) for t in (e.targets or (None,))]
        for i, (e, t) in enumerate(items):
            last = i == len(items) - 1
            branch = "└─" if last else "├─"
            flags = edge_flags(engine, e, t, hot)
            note = " ".join([_retry_text(e), *flags]).strip()
            note = f" [{note}]" if note else ""
            if t is None:  # the flag says "unresolved"; the label need not say it again
                lines.append(f"{prefix}{branch} {e.label.removesuffix(' (unresolved)')}{note}")
            elif t in seen:
                lines.append(f"{prefix}{branch} {wlabel(t)}{note} ↺ cycle")
            elif t in expanded and calls(t):
                lines.append(f"{prefix}{branch} {tag(t)}{note} (dependencies shown above)")
            else:
                lines.append(f"{prefix}{branch} {tag(t)}{note}")
                walk(t, prefix + ("   " if last else "│  "), seen + (t,))

    for r in roots:
        lines.append(tag(r))
        walk(r, "", (r,))
        lines.append("")
    s = g.stats()
    lines.append(f"{s['workloads']} workload(s), {s['edges']} edge(s), {s['cycles']} cycle(s), "
                 f"max depth {s['maxDepth']}, max amplification {s['maxAmplification']}x.")
    return "\n".join(lines) + "\n"
