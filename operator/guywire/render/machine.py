"""Machine output: JSON, SARIF 2.1.0 (GitHub code scanning) and JUnit XML."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from .. import __version__
from ..model.severity import Severity
from ..rules import REGISTRY
from .report import Report

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
    return ("{\n" + items("findings", [f.to_dict() for f in report.findings]) + ",\n"
            + f'  "summary": {summary},\n'
            + items("errors", [d.to_dict() for d in report.diagnostics]) + "\n}\n")


def render_sarif(report: Report) -> str:
    import hashlib

    rules = sorted({f.rule for f in report.findings} | set(REGISTRY))
    index = {rid: i for i, rid in enumerate(rules)}
    rule_meta = []
    for rid in rules:
        r = REGISTRY.get(rid)
        name = r.name if r else "evaluation-error"
        summary = r.summary if r else "A rule could not evaluate."
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
    for f in report.findings:
        uri = (f.source.file if f.source else "stdin").replace("\\", "/").lstrip("./") or "stdin"
        region = {"startLine": f.source.line or 1} if f.source else {"startLine": 1}
        fp = hashlib.sha256(f"{f.rule}|{f.workload}|{f.location}|{f.message}".encode()).hexdigest()[:32]
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": SARIF_LEVEL[f.severity],
            "message": {"text": f.render()},
            "locations": [{
                "physicalLocation": {"artifactLocation": {"uri": uri}, "region": region},
                "logicalLocations": [{"name": f.workload.name, "fullyQualifiedName": str(f.workload),
                                      "kind": "resource"}],
            }],
            "partialFingerprints": {"guywireFinding/v1": fp},
            "properties": {"severity": f.severity.value, "path": f.path},
        })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "guywire", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFO_URI, "rules": rule_meta}},
            "results": results,
            "invocations": [{"executionSuccessful": not report.errors,
                             "toolExecutionNotifications": [
                                 {"level": "error" if d.error else "note", "message": {"text": d.render()}}
                                 for d in report.diagnostics]}],
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


def render_junit(report: Report) -> str:
    """One testsuite per object evaluated, one testcase per rule the matching policies run on it."""
    from xml.sax.saxutils import escape, quoteattr  # imports urllib.request, http and email: only for JUnit

    engine = report.engine
    by_obj: dict = {}
    for f in report.findings:
        by_obj.setdefault((f.workload, f.rule), []).append(f)
    suites = []
    total = failures = 0
    for key, w in sorted(engine.inventory.workloads.items()):
        policies = engine.matched_policies(key)
        if not policies:
            continue
        rule_ids = sorted({r.id for r in engine.rules if r.target == "workload"
                           and any(r.enabled_in(p) for p in policies)})
        cases = []
        fails = 0
        for rid in rule_ids:
            r = REGISTRY[rid]
            found = by_obj.get((w.ref, rid), [])
            body = ""
            if found:
                fails += 1
                msgs = "\n".join(f.render() for f in found)
                body = (f"<failure message={quoteattr(found[0].render())} type={quoteattr(found[0].severity.value)}>"
                        f"{escape(msgs)}</failure>")
            cases.append(f'    <testcase classname={quoteattr(str(w.ref))} name={quoteattr(f"{rid} {r.name}")}>'
                         f"{body}</testcase>")
        total += len(cases)
        failures += fails
        file = w.source.file if w.source else ""
        suites.append(f'  <testsuite name={quoteattr(str(w.ref))} tests="{len(cases)}" failures="{fails}" '
                      f'errors="0" file={quoteattr(file)}>\n' + "\n".join(cases) + "\n  </testsuite>")
    errors = len(report.errors)
    if errors:
        cases = "\n".join(f'    <testcase classname="input" name={quoteattr(d.render())}>'
                          f'<error message={quoteattr(d.message)}/></testcase>' for d in report.errors)
        suites.append(f'  <testsuite name="input" tests="{errors}" failures="0" errors="{errors}">\n{cases}\n'
                      "  </testsuite>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites name="guywire" tests="{total + errors}" failures="{failures}" errors="{errors}">\n'
            + "\n".join(suites) + "\n</testsuites>\n")


def render_policyreports(report: Report) -> str:
    """The PolicyReports the operator would write, as multi-document YAML (timestamps from --now)."""
    import yaml

    from ..policyreport import policy_reports

    now = report.engine.now or datetime.now(timezone.utc)
    docs = policy_reports(report.engine, now)
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=120) if docs else ""
