"""Human output: findings grouped by object, worst first, coloured on a terminal."""
from __future__ import annotations

from collections import Counter
from itertools import groupby

from ..model.kinds import NEVER_JUDGED_NAMESPACES
from ..model.severity import Severity
from .check_result import Report

COLOURS = {Severity.CRITICAL: "\033[1;31m", Severity.HIGH: "\033[31m", Severity.MEDIUM: "\033[33m",
           Severity.LOW: "\033[36m"}
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


def render_text(report: Report, colour: bool = False) -> str:
    def c(code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if colour else text

    lines: list[str] = []
    # one group per definition: the same object defined in two files is two groups, each with its source
    def definition(f):
        return (f.workload, f.source.file if f.source else "")

    findings = sorted(report.findings, key=lambda f: (f.workload.namespace or "", f.workload.kind,
                                                      f.workload.name, definition(f)[1], f.sort_key))
    worst_of: dict = {}
    for f in findings:
        cur = worst_of.get(definition(f))
        if cur is None or f.severity.rank > cur.rank:
            worst_of[definition(f)] = f.severity
    order = sorted(worst_of, key=lambda d: (-worst_of[d].rank, d[0].namespace or "", d[0].kind, d[0].name, d[1]))
    grouped = {d: list(items) for d, items in groupby(findings, key=definition)}
    for d in order:
        items = sorted(grouped[d], key=lambda f: f.sort_key)
        src = items[0].source
        lines.append(c(BOLD, str(d[0])) + (c(DIM, f"  ({src})") if src else ""))
        for f in items:
            sev = c(COLOURS[f.severity], f"{f.severity.value:<8}")
            lines.append(f"  {sev} {f.render()}")
        lines.append("")
    if report.evaluation_errors:
        n = len(report.evaluation_errors)
        lines.append(c(COLOURS[Severity.CRITICAL], f"{n} rule evaluation error(s): guywire could not evaluate "
                                                   "these, so the run is not clean (exit 2):"))
        for e in report.evaluation_errors:
            lines.append(f"  {c(COLOURS[Severity.CRITICAL], 'ERROR   ')} {e.render()}"
                         + (c(DIM, f"  ({e.source})") if e.source else ""))
        lines.append("")
    s = report.summary()
    sev = ", ".join(f"{n} {k.lower()}" for k, n in s["bySeverity"].items() if n)
    g = s["graph"]
    lines.append(
        f"{s['findings']} finding(s){' (' + sev + ')' if sev else ''} on {s['violatingObjects']} object(s); "
        f"{s['workloads']} workload(s) and {s['services']} Service(s) evaluated from {s['files']} file(s); "
        f"graph: {g['edges']} edge(s), {g['cycles']} cycle(s), max depth {g['maxDepth']}, "
        f"max amplification {g['maxAmplification']}x."
    )
    radii = s.get("blastRadius") or []
    if radii:
        shown = "; ".join(f"{r['workload']} ({r['entryPoints']} entry point(s), {r['workloads']} workload(s))"
                          for r in radii[:3])
        lines.append(f"Largest blast radius, if one workload is down: {shown}.")
    if report.baseline is not None:
        b = s["baseline"]
        lines.append(f"Against the baseline {b['source']}: {b['newOrWorse']} finding(s) new or worse shown; "
                     f"{b['unchangedOrBetter']} unchanged or better and {b['fixed']} fixed not shown.")
    if report.exempted:
        by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(Counter(f.rule for f in report.exempted).items()))
        lines.append(f"Exempted: {len(report.exempted)} finding(s) on {len({f.workload for f in report.exempted})} "
                     f"object(s) not counted above, by guywire.dev/exempt with a reason ({by_rule}); "
                     "--format json or sarif lists them.")
    if s["skippedWorkloads"]:
        lines.append(c(DIM, f"Not judged: {s['skippedWorkloads']} workload(s) in {', '.join(sorted(NEVER_JUDGED_NAMESPACES))}"
                            ", which guywire never judges (read for the graph only; -v names them)."))
    if s["skippedKinds"]:
        total = sum(s["skippedKinds"].values())
        kinds = ", ".join(f"{k} {n}" for k, n in list(s["skippedKinds"].items())[:8])
        lines.append(c(DIM, f"Skipped {total} object(s) of kinds guywire does not evaluate ({kinds}"
                             f"{', …' if len(s['skippedKinds']) > 8 else ''})."))
    if not report.findings and not report.failed:
        lines.append(c("\033[32m", "No findings."))
    return "\n".join(lines) + "\n"
