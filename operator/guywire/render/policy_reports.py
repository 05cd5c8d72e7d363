"""Findings as ``wgpolicyk8s.io/v1alpha2`` PolicyReports, or as ``openreports.io/v1alpha1`` Reports (the
same API moved to the OpenReports project: Kyverno 1.15 writes it, Policy Reporter 3 reads it), the
formats Policy Reporter and Kyverno users read.

``api`` picks one: ``wgpolicyk8s`` (PolicyReport, ClusterPolicyReport) or ``openreports`` (Report,
ClusterReport, with ``source: guywire`` on the report as well as on each result). The results are the
same in both: OpenReports kept the result schema (``resources``, ``result``, ``severity``...).

``policy_reports(engine, now)`` is pure: it turns the engine's current results into one
PolicyReport per namespace that holds evaluated workloads (results for namespaced objects) and
a ClusterPolicyReport for Node findings, and returns them as plain dicts ready to apply.

- One result per object (workload or Service) x rule: several findings of one rule on one workload (one per
  container, say) are one result whose message lists them; ``policy`` is the guywire policy
  whose finding is the worst, ``rule`` the rule id, ``result`` ``fail`` (``skip`` for a rule the
  workload exempts with a reason), ``severity`` lowercased (low, medium, high, critical),
  ``category`` the rule's category, ``source``
  ``guywire``, ``resources`` the object with apiVersion, kind, name, namespace and (in a
  cluster) uid, ``properties`` the rule's name and, for graph rules, the path.
- A rule that raised on an object (an evaluation error, never a violation) is one result with
  ``result: error``, no severity, a message with the exception's class and message, and
  ``properties.exception`` the class.
- ``pass`` results (every rule a matched policy runs that found nothing) are left out unless
  ``include_pass=True``: they are workloads x rules, twenty-odd per workload, and would
  dominate the reports' size. ``summary.pass`` counts only the pass results present.
- Bounded size: at most ``max_results`` results per report; past that a namespace's results
  continue in ``guywire-<ns>-2``, ``-3``… Messages are cut at ``MAX_MESSAGE`` characters.
- Deterministic: results are ordered by object and rule, so the same findings give the same
  reports. Only the timestamps change from one evaluation to the next; the annotation
  ``guywire.dev/results-digest`` hashes everything else, so a writer compares it with what is
  stored and writes only when results change (keeping the stored timestamps otherwise).
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Iterable

from ..clock import seconds_and_nanos
from ..engine.evaluator import Engine, exempted, merge_findings
from ..model.evaluation import EvaluationError, unique_errors
from ..model.finding import Finding
from ..model.messages import clip
from ..model.severity import Severity
from ..rules import REGISTRY

API_VERSION = "wgpolicyk8s.io/v1alpha2"
#: api -> (apiVersion, namespaced kind, cluster kind)
REPORT_APIS = {
    "wgpolicyk8s": (API_VERSION, "PolicyReport", "ClusterPolicyReport"),
    "openreports": ("openreports.io/v1alpha1", "Report", "ClusterReport"),
}
SOURCE = "guywire"
NAME_PREFIX = "guywire"
CLUSTER_NAME = "guywire-cluster"
MAX_RESULTS = 500
MAX_MESSAGE = 1024
DIGEST_ANNOTATION = "guywire.dev/results-digest"
MANAGED_BY = {"app.kubernetes.io/managed-by": "guywire"}
SEVERITY = {Severity.LOW: "low", Severity.MEDIUM: "medium", Severity.HIGH: "high", Severity.CRITICAL: "critical"}
RESULT_KEYS = ("pass", "fail", "warn", "error", "skip")


def _category(rule_id: str) -> str:
    r = REGISTRY.get(rule_id)
    return r.category.capitalize() if r else "Evaluation"


def _resource(kind: str, namespace: str | None, name: str, api_version: str, uid: str | None) -> dict:
    ref = {"apiVersion": api_version or "v1", "kind": kind, "name": name}
    if namespace:
        ref["namespace"] = namespace
    if uid:
        ref["uid"] = uid
    return ref


def _message(findings: list[Finding]) -> str:
    return clip(" ".join(f"{f.location}: {f.message}" if f.location else f.message for f in findings), MAX_MESSAGE)


def _group(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    by_rule: dict[str, list[Finding]] = {}
    for f in sorted(findings, key=lambda f: (f.rule, f.location or "", f.message)):
        by_rule.setdefault(f.rule, []).append(f)
    return by_rule


def _result(rule_id: str, findings: list[Finding], resource: dict, ts: dict) -> dict:
    worst = min(findings, key=lambda f: (-f.severity.rank, f.policy or ""))
    props = {"ruleName": worst.name}
    if len(findings) > 1:
        props["findings"] = str(len(findings))
    if worst.path:
        props["path"] = " -> ".join(worst.path)
    return {
        "policy": worst.policy or SOURCE,
        "rule": rule_id,
        "result": "fail",
        "severity": SEVERITY[worst.severity],
        "category": _category(rule_id),
        "message": _message(findings),
        "resources": [dict(resource)],
        "properties": props,
        "source": SOURCE,
        "scored": True,
        "timestamp": dict(ts),
    }


def _errors(errors: Iterable[EvaluationError], resource: dict, ts: dict) -> list[dict]:
    """One ``result: error`` per rule that could not evaluate the object (several causes in one message)."""
    by_rule: dict[str, list[EvaluationError]] = {}
    for e in unique_errors(errors):
        by_rule.setdefault(e.rule, []).append(e)
    out = []
    for rule_id, errs in sorted(by_rule.items()):
        first = min(errs, key=lambda e: e.policy or "")
        out.append({
            "policy": first.policy or SOURCE,
            "rule": rule_id,
            "result": "error",
            "category": _category(rule_id),
            "message": clip("The rule could not evaluate: " + "; ".join(e.cause for e in errs) + ".", MAX_MESSAGE),
            "resources": [dict(resource)],
            "properties": {"ruleName": first.name, "exception": first.error},
            "source": SOURCE,
            "scored": True,
            "timestamp": dict(ts),
        })
    return out


def _plain(rule_id: str, outcome: str, policy: str, message: str, resource: dict, ts: dict) -> dict:
    r = REGISTRY[rule_id]
    return {"policy": policy, "rule": rule_id, "result": outcome, "severity": SEVERITY[r.severity],
            "category": _category(rule_id), "message": message, "resources": [dict(resource)],
            "properties": {"ruleName": r.name}, "source": SOURCE, "scored": True, "timestamp": dict(ts)}


def _rules_run(engine: Engine, refs: tuple[str, ...], cache: dict) -> dict[str, str]:
    """Rule id -> the first (by name) of the matched policies ``refs`` that runs it; cached per set of policies."""
    ran = cache.get(refs)
    if ran is None:
        ran = {}
        for p in sorted((p for p in engine.policies if p.ref in refs), key=lambda p: p.name):
            for r in engine.rules:
                if r.target == "workload" and r.id not in ran and r.enabled_in(p):
                    ran[r.id] = p.name
        cache[refs] = ran
    return ran


def _workload_results(engine: Engine, key, ts: dict, include_pass: bool, cache: dict) -> list[dict]:
    per = engine.results.get(key) or {}
    w = engine.inventory.workloads.get(key)
    if not per or w is None:
        return []
    resource = _resource(w.kind, w.namespace, w.name, w.api_version, w.uid)
    by_rule = _group(engine.findings_for(key))  # one finding per (rule, location, message), worst severity kept
    out = [_result(rid, found, resource, ts) for rid, found in by_rule.items()]
    raised = engine.errors_for(key) if engine.errors else []
    out += _errors(raised, resource, ts)
    if not include_pass and not w.decl.exempt:
        return out
    failed = {e.rule for e in raised}
    for rid, pname in sorted(_rules_run(engine, tuple(sorted(per)), cache).items()):
        if rid in by_rule or rid in failed:
            continue
        if exempted(w, rid):
            out.append(_plain(rid, "skip", pname, clip(f"Exempted: {w.decl.exempt_reason}", MAX_MESSAGE), resource, ts))
        elif include_pass:
            out.append(_plain(rid, "pass", pname, "No finding.", resource, ts))
    return out


def _service_results(engine: Engine, skey: tuple[str, str], ts: dict) -> list[dict]:
    """Results of the rules that judge Services (GW-SMP-003), when a policy turns them on."""
    found = merge_findings((engine.service_results.get(skey) or {}).values())
    raised = [e for errs in (engine.service_errors.get(skey) or {}).values() for e in errs]
    if not found and not raised:
        return []
    resource = _resource("Service", skey[0], skey[1], "v1", None)
    return [_result(rid, fs, resource, ts) for rid, fs in _group(found).items()] + _errors(raised, resource, ts)


def _node_results(engine: Engine, ts: dict) -> list[dict]:
    out = []
    for name in sorted(engine.node_results):
        found = merge_findings(engine.node_results[name].values())
        resource = _resource("Node", None, name, "v1", None)
        out += [_result(rid, fs, resource, ts) for rid, fs in _group(found).items()]
        out += _errors((e for errs in (engine.node_errors.get(name) or {}).values() for e in errs), resource, ts)
    return out


def _sort_key(result: dict) -> tuple:
    ref = result["resources"][0]
    return (ref.get("namespace", ""), ref["kind"], ref["name"], result["rule"], result["result"])


def results_digest(report: dict) -> str:
    """A hash of a report's results and summary without their timestamps: equal when nothing changed."""
    results = [{k: v for k, v in r.items() if k != "timestamp"} for r in report.get("results", ())]
    body = json.dumps({"results": results, "summary": report.get("summary")}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _reports(kind: str, base: str, namespace: str | None, results: list[dict], max_results: int,
             api: str = "wgpolicyk8s") -> list[dict]:
    chunks = [results[i:i + max_results] for i in range(0, len(results), max_results)] or [[]]
    out = []
    for i, chunk in enumerate(chunks):
        summary = {k: sum(1 for r in chunk if r["result"] == k) for k in RESULT_KEYS}
        meta: dict = {"name": base if i == 0 else f"{base}-{i + 1}"}
        if namespace is not None:
            meta["namespace"] = namespace
        meta["labels"] = dict(MANAGED_BY)
        report = {"apiVersion": REPORT_APIS[api][0], "kind": kind, "metadata": meta,
                  **({"source": SOURCE} if api == "openreports" else {}), "results": chunk, "summary": summary}
        meta["annotations"] = {DIGEST_ANNOTATION: results_digest(report)}
        out.append(report)
    return out


def policy_reports(engine: Engine, now: datetime, *, max_results: int = MAX_RESULTS, include_pass: bool = False,
                   namespaces: Iterable[str] | None = None, also: Iterable[Engine] = (),
                   api: str = "wgpolicyk8s") -> list[dict]:
    """PolicyReports (one per namespace with evaluated workloads, chunked past ``max_results``) then
    ClusterPolicyReports (Node findings), for the results ``engine`` holds now.

    ``namespaces`` limits the output to those namespaces' PolicyReports (no ClusterPolicyReport):
    what a writer rebuilds after an incremental change. Call ``engine.evaluate_all()`` (or let
    ``upsert`` / ``remove`` keep results current) first. ``also``: more engines whose workload and
    Service results join the same namespaces' reports (other clusters, earlier definitions of an
    object: guywire.inputs.clusters).
    """
    if max_results < 1:
        raise ValueError(f"max_results must be at least 1, got {max_results}.")
    if api not in REPORT_APIS:
        raise ValueError(f"report api {api!r} is not one of {', '.join(REPORT_APIS)}.")
    _, kind, cluster_kind = REPORT_APIS[api]
    ts = seconds_and_nanos(now)
    wanted = set(namespaces) if namespaces is not None else None
    by_ns: dict[str, list[dict]] = {}
    cache: dict = {}
    for e in (engine, *also):
        for key in sorted(e.results):
            ns = key[0]
            if wanted is not None and ns not in wanted:
                continue
            if not e.results[key]:
                continue  # skipped namespace or no policy matched: nothing was judged
            by_ns.setdefault(ns, []).extend(_workload_results(e, key, ts, include_pass, cache))
        for skey in sorted(e.service_results):
            if wanted is None or skey[0] in wanted:
                results = _service_results(e, skey, ts)
                if results:
                    by_ns.setdefault(skey[0], []).extend(results)
    out: list[dict] = []
    for ns in sorted(by_ns):
        results = sorted(by_ns[ns], key=_sort_key)
        out += _reports(kind, f"{NAME_PREFIX}-{ns}", ns, results, max_results, api)
    if wanted is None:
        cluster = sorted(_node_results(engine, ts), key=_sort_key)
        if cluster or engine.inventory.nodes:
            out += _reports(cluster_kind, CLUSTER_NAME, None, cluster, max_results, api)
    return out


__all__ = ["API_VERSION", "REPORT_APIS", "DIGEST_ANNOTATION", "MAX_RESULTS", "policy_reports", "results_digest"]
