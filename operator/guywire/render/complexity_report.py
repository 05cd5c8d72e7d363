"""``guywire report``: cluster complexity figures, what changed, and the GW-SMP suggestions, as text or JSON."""
from __future__ import annotations

import json

from ..engine.insights import Change, ComplexityReport, Figures, describe_changes

COLUMNS = [("namespace", "{ns}"), ("workloads", "{f.workloads}"), ("edges", "{f.edges}"),
           ("chain", "{f.longest_chain}"), ("cycles", "{f.cycles}"), ("amp", "{f.worst_amplification}x"),
           ("score mean/max", "{f.mean_score:.1f}/{f.max_score}"), ("undeclared", "{f.undeclared_calls}"),
           ("blast", "{f.largest_blast_radius}"), ("findings", "{f.findings}")]


def _cluster_lines(f: Figures) -> list[str]:
    lines = [f"Cluster: {f.workloads} workload(s), {f.services} Service(s), {f.edges} dependency edge(s) "
             f"({f.undeclared_calls} undeclared), {f.entry_points} entry point(s), {f.cycles} cycle(s)."]
    if f.longest_chain:
        lines.append(f"  Longest chain: {f.longest_chain} hop(s): {' -> '.join(f.longest_chain_path)}.")
    if f.worst_amplification > 1:
        lines.append(f"  Worst retry amplification: {f.worst_amplification}x: {' -> '.join(f.worst_amplification_path)}.")
    if f.max_score_workload:
        lines.append(f"  Complexity score: mean {f.mean_score:.1f}, max {f.max_score} ({f.max_score_workload}).")
    if f.largest_blast_radius:
        lines.append(f"  Largest blast radius: {f.largest_blast_radius_workload} down fails "
                     f"{f.largest_blast_radius} other workload(s).")
    if f.findings_by_category:
        cats = ", ".join(f"{k} {v}" for k, v in sorted(f.findings_by_category.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  Findings by category: {cats}.")
    return lines


def render_report_text(rep: ComplexityReport, changes: list[Change] | None = None) -> str:
    lines = _cluster_lines(rep.cluster)
    if rep.namespaces:
        rows = [[h for h, _ in COLUMNS]]
        for ns, f in sorted(rep.namespaces.items()):
            rows.append([fmt.format(ns=ns, f=f) for _, fmt in COLUMNS])
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines.append("")
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                                          enumerate(zip(r, widths))).rstrip())
    if changes is not None:
        lines += ["", *describe_changes(changes)]
    lines += ["", f"Simplification suggestions (GW-SMP, listed whatever the policy): {len(rep.suggestions)}"]
    for s in rep.suggestions:
        lines.append(f"  {s.render()}")
    if not rep.suggestions:
        lines.append("  None: nothing found that can safely be removed.")
    return "\n".join(lines) + "\n"


def render_report_json(rep: ComplexityReport, changes: list[Change] | None = None) -> str:
    doc = rep.to_dict()
    if changes is not None:
        doc["changes"] = [{"scope": c.scope, "metric": c.metric, "old": c.old, "new": c.new} for c in changes]
        doc["changeSummary"] = describe_changes(changes)
    return json.dumps(doc, indent=2) + "\n"
