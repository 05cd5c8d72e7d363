"""Machine output: JSON, SARIF 2.1.0 (GitHub code scanning) and JUnit XML."""
from __future__ import annotations

import json

from .. import __version__
from ..clock import SYSTEM, Clock
from ..model.severity import Severity
from ..rules import REGISTRY
from .locations import SourceRoot
from .check_result import Report

SARIF_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "2.0"}
INFO_URI = "https://github.com/guywire/guywire/blob/main/docs/rules.md"


def render_json(report: Report) -> str:
    """Indented JSON with one finding or error per line: as easy to read and grep as ``indent=2``, and
    written by the C encoder (``json.dumps`` with an indent falls back to the pure-Python one, which was a
    tenth of ``guywire check``'s time on a few hundred findings)."""
    def items(key: str, values: list[dict]) -> str:
        if not values:
            return f'  "{key}": []'
        return f'  "{key}": [\n' + ",\n".join("    " + json.dumps(v) for v in values) + "\n  ]"

    summary = json.dumps(report.summary(), indent=2).replace("\n", "\n  ")
    errors = [d.to_dict() for d in report.diagnostics] + [e.to_dict() for e in report.evaluation_errors]
    return ("{\n" + items("findings", [f.to_dict() for f in report.findings]) + ",\n"
            + items("exempted", [{**f.to_dict(), "exemptReason": report.exempt_reason(f)}
                                 for f in report.exempted]) + ",\n"
            + f'  "summary": {summary},\n'
            + items("errors", errors) + "\n}\n")


def render_sarif(report: Report, locations: SourceRoot | None = None) -> str:
    """SARIF 2.1.0 for GitHub code scanning: paths relative to ``%SRCROOT%`` (``locations``: the source
    root and chart folder, default the working directory), Helm-rendered objects placed in their chart
    files, and exempted findings as results with an in-source suppression that gives the reason."""
    import hashlib

    locations = locations or SourceRoot()
    rules = sorted({f.rule for f in report.findings} | {f.rule for f in report.exempted} | set(REGISTRY))
    index = {rid: i for i, rid in enumerate(rules)}
    rule_meta = []
    for rid in rules:
        r = REGISTRY.get(rid)
        name = r.name if r else rid.lower()
        summary = r.summary if r else f"Rule {rid}."
        rule_meta.append({
            "id": rid,
            "name": name,
            "shortDescription": {"text": summary},
            "fullDescription": {"text": (r.doc if r else summary) or summary},
            "help": {"text": r.remediation if r else summary,
                     "markdown": f"**{summary}**\n\n{r.remediation if r else ''}"},
            "helpUri": f"{INFO_URI}#{rid.lower()}",
            "defaultConfiguration": {"level": SARIF_LEVEL[r.severity] if r else "note"},
            "properties": {"tags": ["kubernetes", r.category if r else "error"],
                           "security-severity": SECURITY_SEVERITY[r.severity] if r else "2.0"},
        })
    results = []
    exempted = [(f, report.exempt_reason(f)) for f in report.exempted]
    for f, reason in [(f, None) for f in report.findings] + exempted:
        fp = hashlib.sha256(f"{f.rule}|{f.workload}|{f.location}|{f.message}".encode()).hexdigest()[:32]
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": SARIF_LEVEL[f.severity],
            "message": {"text": f.render()},
            "locations": [{
                "physicalLocation": {"artifactLocation": locations.artifact(f.source),
                                     "region": {"startLine": locations.line(f.source)}},
                "logicalLocations": [{"name": f.workload.name, "fullyQualifiedName": str(f.workload),
                                      "kind": "resource"}],
            }],
            "partialFingerprints": {"guywireFinding/v1": fp},
            "properties": {"severity": f.severity.value, "path": f.path, "observed": f.observed, "limit": f.limit,
                           "unit": f.unit, "location": f.location,
                           "workload": {"kind": f.workload.kind, "namespace": f.workload.namespace,
                                        "name": f.workload.name}},
        }
        if reason is not None:
            result["suppressions"] = [{"kind": "inSource", "status": "accepted",
                                       "justification": f"guywire.dev/exempt-reason: {reason}"}]
        results.append(result)
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "guywire", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFO_URI, "rules": rule_meta}},
            "originalUriBaseIds": locations.base_ids(),
            "results": results,
            "invocations": [{"executionSuccessful": not report.failed,
                             "toolExecutionNotifications": [
                                 {"level": "error" if d.error else "note", "message": {"text": d.render()}}
                                 for d in report.diagnostics] + [
                                 _sarif_notification(e, index, locations) for e in report.evaluation_errors]}],
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


def _sarif_notification(e, index: dict[str, int], locations: SourceRoot) -> dict:
    """A rule that raised: a tool execution notification (level error), never a result."""
    note: dict = {"level": "error", "message": {"text": e.render()},
                  "exception": {"kind": e.error, "message": e.detail},
                  "properties": {"object": str(e.object), **({"policy": e.policy} if e.policy else {})}}
    ref: dict = {"id": e.rule}
    if e.rule in index:
        ref["index"] = index[e.rule]
    note["associatedRule"] = ref
    if e.source:
        note["locations"] = [{"physicalLocation": {"artifactLocation": locations.artifact(e.source),
                                                   "region": {"startLine": locations.line(e.source)}},
                              "logicalLocations": [{"name": e.object.name, "fullyQualifiedName": str(e.object),
                                                    "kind": "resource"}]}]
    return note


def render_junit(report: Report) -> str:
    """One testsuite per object evaluated, one testcase per rule the matching policies run on it: a
    ``<failure>`` per finding, a ``<skipped message="exempted: REASON">`` where guywire.dev/exempt keeps the
    finding out, an ``<error>`` where the rule raised."""
    from xml.sax.saxutils import escape, quoteattr  # imports urllib.request, http and email: only for JUnit

    by_obj: dict = {}
    for f in report.findings:
        by_obj.setdefault((f.workload, f.source.file if f.source else "", f.rule), []).append(f)
    exempted: dict = {}  # (object, file, rule) -> why guywire.dev/exempt keeps it out: a JUnit <skipped>
    for f in report.exempted:
        exempted.setdefault((f.workload, f.source.file if f.source else "", f.rule), report.exempt_reason(f))
    raised: dict = {}  # (object, rule) -> evaluation errors: a JUnit <error>, never a <failure>
    for e in report.evaluation_errors:
        raised.setdefault((e.object, e.rule), []).append(e)

    def error_element(errs: list) -> str:
        return (f"<error message={quoteattr(errs[0].render())} type={quoteattr(errs[0].error)}>"
                f"{escape(chr(10).join(e.render() for e in errs))}</error>")

    suites = []
    total = failures = errors = skipped = 0
    judged = sorted(((key, w, engine) for engine in report.engines for key, w in engine.inventory.workloads.items()
                     if key in engine.results), key=lambda x: (x[0], str(x[1].source or "")))
    for key, w, engine in judged:
        policies = engine.matched_policies(key)
        if not policies:
            continue
        rule_ids = sorted({r.id for r in engine.rules if r.target == "workload"
                           and any(r.enabled_in(p) for p in policies)})
        cases = []
        fails = errs = skips = 0
        for rid in rule_ids:
            r = REGISTRY[rid]
            found = by_obj.get((w.ref, w.source.file if w.source else "", rid), [])
            reason = exempted.get((w.ref, w.source.file if w.source else "", rid))
            body = ""
            if (w.ref, rid) in raised:
                errs += 1
                body = error_element(raised.pop((w.ref, rid)))
            if found:
                fails += 1
                msgs = "\n".join(f.render() for f in found)
                body += (f"<failure message={quoteattr(found[0].render())} type={quoteattr(found[0].severity.value)}>"
                         f"{escape(msgs)}</failure>")
            elif reason is not None and not body:
                skips += 1
                body = f"<skipped message={quoteattr(f'exempted: {reason}')}/>"
            cases.append(f'    <testcase classname={quoteattr(str(w.ref))} name={quoteattr(f"{rid} {r.name}")}>'
                         f"{body}</testcase>")
        total += len(cases)
        failures += fails
        errors += errs
        skipped += skips
        file = w.source.file if w.source else ""
        suites.append(f'  <testsuite name={quoteattr(str(w.ref))} tests="{len(cases)}" failures="{fails}" '
                      f'errors="{errs}" skipped="{skips}" file={quoteattr(file)}>\n' + "\n".join(cases)
                      + "\n  </testsuite>")
    by_ref: dict = {}  # errors on Services and Nodes (no workload suite above)
    for (ref, rid), errs in raised.items():
        by_ref.setdefault(ref, []).append((rid, errs))
    for ref, items in sorted(by_ref.items(), key=lambda kv: str(kv[0])):
        cases = [f'    <testcase classname={quoteattr(str(ref))} name={quoteattr(f"{rid} {errs[0].name}")}>'
                 f"{error_element(errs)}</testcase>" for rid, errs in sorted(items, key=lambda it: it[0])]
        total += len(cases)
        errors += len(cases)
        suites.append(f'  <testsuite name={quoteattr(str(ref))} tests="{len(cases)}" failures="0" '
                      f'errors="{len(cases)}">\n' + "\n".join(cases) + "\n  </testsuite>")
    unread = len(report.errors)
    if unread:
        cases = "\n".join(f'    <testcase classname="input" name={quoteattr(d.render())}>'
                          f'<error message={quoteattr(d.message)}/></testcase>' for d in report.errors)
        suites.append(f'  <testsuite name="input" tests="{unread}" failures="0" errors="{unread}">\n{cases}\n'
                      "  </testsuite>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites name="guywire" tests="{total + unread}" failures="{failures}" '
            f'errors="{errors + unread}" skipped="{skipped}">\n' + "\n".join(suites) + "\n</testsuites>\n")


def render_policyreports(report: Report, clock: Clock = SYSTEM, api: str = "wgpolicyk8s") -> str:
    """The PolicyReports (``api="openreports"``: the openreports.io Reports) the operator would write, as
    multi-document YAML (timestamps from --now, else the clock's time)."""
    import yaml

    from .policy_reports import policy_reports

    now = report.engine.now or clock.now()
    docs = policy_reports(report.engine, now, also=report.engines[1:], api=api)
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=120) if docs else ""
