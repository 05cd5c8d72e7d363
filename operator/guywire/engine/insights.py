"""Cluster complexity as numbers people can track, what changed between two states, and regressions.

Pure: reads an evaluated :class:`~guywire.engine.evaluator.Engine` (call ``evaluate_all()`` first), does no I/O.

* :func:`complexity_report` — per namespace and for the cluster: workloads, dependency edges,
  the longest chain, cycles, the worst retry amplification, mean and max complexity score,
  undeclared calls, findings by category (what the policies found), and the largest blast radius.
  A namespace's figures count what starts in it: its workloads, their edges, the chains and
  amplification that start at them, and every cycle with a member in it (so a cycle that spans
  two namespaces counts once in each, and once for the cluster).
* :func:`simplify_suggestions` — every GW-SMP suggestion, whatever the policies say.
* :func:`diff_reports` / :func:`describe_changes` — "this change adds 2 edges and raises the
  longest chain from 3 to 5 hops".
* :func:`new_or_worse` — the findings that are new or got worse against a baseline, so CI can
  gate on regressions without fixing history. Findings are matched by rule, object and location;
  "worse" is read from their figures (``observed`` against ``limit``), never from message text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .evaluator import Engine, merge_findings
from ..graph.dependency_graph import WKey, wlabel
from ..model.evaluation import EvaluationError, unique_errors
from ..model.finding import Finding
from ..model.policy import Policy, PolicySpec, Rules, SimplifyRules
from ..model.severity import Severity
from ..model.units import figure_with_unit, render_figure
from ..rules import REGISTRY
from ..graph.simulate import BlastRadius, blast_radius

SIMPLIFY = "simplify"


# ----- figures -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Figures:
    """Complexity figures for one namespace or for the cluster."""

    workloads: int = 0
    services: int = 0
    edges: int = 0
    undeclared_calls: int = 0
    longest_chain: int = 0
    longest_chain_path: list[str] = field(default_factory=list)
    cycles: int = 0
    worst_amplification: int = 1
    worst_amplification_path: list[str] = field(default_factory=list)
    mean_score: float = 0.0
    max_score: int = 0
    max_score_workload: str | None = None
    entry_points: int = 0
    largest_blast_radius: int = 0  # workloads that fail when the worst single workload is down
    largest_blast_radius_workload: str | None = None
    findings_by_category: dict[str, int] = field(default_factory=dict)

    @property
    def findings(self) -> int:
        return sum(self.findings_by_category.values())

    def gauges(self) -> dict[str, float]:
        """The figures as numbers (Prometheus gauges): name -> value; findings by category apart."""
        return {"workloads": self.workloads, "services": self.services, "dependency_edges": self.edges,
                "undeclared_calls": self.undeclared_calls, "longest_chain": self.longest_chain,
                "cycles": self.cycles, "worst_retry_amplification": self.worst_amplification,
                "complexity_score_mean": self.mean_score, "complexity_score_max": self.max_score,
                "entry_points": self.entry_points, "largest_blast_radius": self.largest_blast_radius}

    def to_dict(self) -> dict:
        return {"workloads": self.workloads, "services": self.services, "edges": self.edges,
                "undeclaredCalls": self.undeclared_calls, "longestChain": self.longest_chain,
                "longestChainPath": self.longest_chain_path, "cycles": self.cycles,
                "worstAmplification": self.worst_amplification,
                "worstAmplificationPath": self.worst_amplification_path,
                "meanScore": round(self.mean_score, 2), "maxScore": self.max_score,
                "maxScoreWorkload": self.max_score_workload, "entryPoints": self.entry_points,
                "largestBlastRadius": self.largest_blast_radius,
                "largestBlastRadiusWorkload": self.largest_blast_radius_workload,
                "findings": self.findings, "findingsByCategory": dict(sorted(self.findings_by_category.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> "Figures":
        return cls(workloads=d.get("workloads", 0), services=d.get("services", 0), edges=d.get("edges", 0),
                   undeclared_calls=d.get("undeclaredCalls", 0), longest_chain=d.get("longestChain", 0),
                   longest_chain_path=list(d.get("longestChainPath") or []), cycles=d.get("cycles", 0),
                   worst_amplification=d.get("worstAmplification", 1),
                   worst_amplification_path=list(d.get("worstAmplificationPath") or []),
                   mean_score=float(d.get("meanScore", 0.0)), max_score=d.get("maxScore", 0),
                   max_score_workload=d.get("maxScoreWorkload"), entry_points=d.get("entryPoints", 0),
                   largest_blast_radius=d.get("largestBlastRadius", 0),
                   largest_blast_radius_workload=d.get("largestBlastRadiusWorkload"),
                   findings_by_category=dict(d.get("findingsByCategory") or {}))


@dataclass(slots=True)
class ComplexityReport:
    cluster: Figures
    namespaces: dict[str, Figures]
    suggestions: list[Finding] = field(default_factory=list)
    blast_radius: dict[WKey, BlastRadius] = field(default_factory=dict)
    errors: list[EvaluationError] = field(default_factory=list)  # rules that could not evaluate an object

    def to_dict(self) -> dict:
        out = {"cluster": self.cluster.to_dict(),
               "namespaces": {ns: f.to_dict() for ns, f in sorted(self.namespaces.items())},
               "suggestions": [f.to_dict() for f in self.suggestions]}
        if self.errors:
            out["errors"] = [e.to_dict() for e in self.errors]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ComplexityReport":
        return cls(cluster=Figures.from_dict(d.get("cluster") or {}),
                   namespaces={ns: Figures.from_dict(f) for ns, f in (d.get("namespaces") or {}).items()})


def category_of(rule_id: str) -> str:
    r = REGISTRY.get(rule_id)
    return r.category if r else "annotations"


def all_findings(engine: Engine) -> list[Finding]:
    """Every finding the engine holds (workloads, Services, Nodes), one per rule, object, location and message."""
    groups = [f for per in engine.results.values() for f in per.values()]
    groups += [f for per in getattr(engine, "service_results", {}).values() for f in per.values()]
    groups += [f for per in engine.node_results.values() for f in per.values()]
    return merge_findings(groups)


def complexity_report(engine: Engine, *, suggestions: bool = False) -> ComplexityReport:
    """Figures per namespace and for the cluster (see the module doc); GW-SMP suggestions when asked."""
    g = engine.graph
    keys = sorted(k for k, w in engine.inventory.workloads.items() if not engine.skipped(w))
    radii = blast_radius(engine)
    per_ns: dict[str, Figures] = {}
    cluster = Figures()
    scores: dict[str, list[int]] = {}

    def fig(ns: str) -> Figures:
        return per_ns.setdefault(ns, Figures())

    for key in keys:
        ns = key[0]
        f = fig(ns)
        edges = g.out.get(key, ())
        a = g.analysis.get(key)
        score = engine.score(key)
        radius = radii.get(key)
        for target in (f, cluster):
            target.workloads += 1
            target.edges += len(edges)
            target.undeclared_calls += sum(1 for e in edges if not e.declared)
            if not (g.callers.get(key, set()) - {key}):
                target.entry_points += 1
            if a and a.depth > target.longest_chain:
                target.longest_chain, target.longest_chain_path = a.depth, g.depth_path(key)
            if a and a.amplification > target.worst_amplification:
                target.worst_amplification = a.amplification
                target.worst_amplification_path = [f"{name} ({n}x)" if i else name for i, (name, n)
                                                   in enumerate(g.amplification_path(key))]
            if score > target.max_score or target.max_score_workload is None:
                target.max_score, target.max_score_workload = score, wlabel(key)
            if radius and radius.workloads > target.largest_blast_radius:
                target.largest_blast_radius, target.largest_blast_radius_workload = radius.workloads, wlabel(key)
        scores.setdefault(ns, []).append(score)
    for ns, values in scores.items():
        per_ns[ns].mean_score = sum(values) / len(values)
    every = [s for values in scores.values() for s in values]
    cluster.mean_score = sum(every) / len(every) if every else 0.0
    for skey in engine.inventory.services:
        if skey[0] in engine.skip_namespaces:
            continue
        fig(skey[0]).services += 1
        cluster.services += 1
    for members in g.sccs.values():
        cluster.cycles += 1
        for ns in {m[0] for m in members}:
            if ns in per_ns:
                per_ns[ns].cycles += 1
    for f in all_findings(engine):
        cat = category_of(f.rule)
        cluster.findings_by_category[cat] = cluster.findings_by_category.get(cat, 0) + 1
        if f.workload.namespace and f.workload.namespace in per_ns:
            d = per_ns[f.workload.namespace].findings_by_category
            d[cat] = d.get(cat, 0) + 1
    errors = engine.all_errors()
    report = ComplexityReport(cluster=cluster, namespaces=per_ns, blast_radius=radii, errors=errors)
    if suggestions:
        report.suggestions = simplify_suggestions(engine, errors)
        report.errors = unique_errors(errors)
    return report


def suggestion_policy() -> Policy:
    """The built-in baseline with the GW-SMP suggestions switched on."""
    return Policy(kind="ClusterComplexityPolicy", name="guywire-suggestions",
                  spec=PolicySpec(rules=Rules(simplify=SimplifyRules(enabled=True))))


def simplify_suggestions(engine: Engine, errors: list[EvaluationError] | None = None) -> list[Finding]:
    """Every GW-SMP suggestion on the engine's objects, whatever the policies say (exemptions still count).
    A suggestion rule that raises adds to ``errors`` (with ``errors=None``, the exception propagates)."""
    rules = [r for r in engine.rules if r.category == SIMPLIFY]
    if not rules:
        return []
    policy = suggestion_policy()
    ctx = engine.context(policy)
    found: list[Finding] = []
    for key, w in sorted(engine.inventory.workloads.items()):
        if not engine.skipped(w):
            found += engine.judge(w, policy, ctx, rules=rules, errors=errors)
    if any(r.target == "service" for r in rules):
        for skey, svc in sorted(engine.inventory.services.items()):
            if skey[0] not in engine.skip_namespaces:
                found += engine.judge_service(svc, policy, ctx, rules=rules, errors=errors)
    return merge_findings([found])


# ----- what changed ------------------------------------------------------------------------------
#: (field, noun, kind): "count" changes say adds/removes, "max" changes say raises/lowers from .. to ..
_TRACKED = [
    ("workloads", "workload", "count"),
    ("edges", "dependency edge", "count"),
    ("undeclared_calls", "undeclared call", "count"),
    ("cycles", "cycle", "count"),
    ("longest_chain", "the longest chain", "max"),
    ("worst_amplification", "the worst retry amplification", "max"),
    ("max_score", "the highest complexity score", "max"),
    ("mean_score", "the mean complexity score", "max"),
    ("largest_blast_radius", "the largest blast radius", "max"),
    ("findings", "finding", "count"),
]


@dataclass(frozen=True, slots=True)
class Change:
    scope: str  # "cluster" or a namespace
    metric: str
    old: float
    new: float


def diff_reports(old: ComplexityReport, new: ComplexityReport) -> list[Change]:
    """Every tracked figure that differs, for the cluster and then for each namespace (added or removed too)."""
    out: list[Change] = []
    scopes = [("cluster", old.cluster, new.cluster)]
    for ns in sorted(set(old.namespaces) | set(new.namespaces)):
        scopes.append((ns, old.namespaces.get(ns, Figures()), new.namespaces.get(ns, Figures())))
    for scope, a, b in scopes:
        for name, _, _ in _TRACKED:
            va, vb = getattr(a, name), getattr(b, name)
            if name == "mean_score":
                va, vb = round(va, 1), round(vb, 1)
            if va != vb:
                out.append(Change(scope, name, va, vb))
    return out


def _unit(metric: str, value: float) -> str:
    if metric == "longest_chain":
        return f"{value:g} hop{'s' if value != 1 else ''}"
    if metric == "worst_amplification":
        return f"{value:g}x"
    if metric == "largest_blast_radius":
        return f"{value:g} workload{'s' if value != 1 else ''}"
    return f"{value:g}"


def _phrase(c: Change) -> str:
    noun, kind = next((n, k) for f, n, k in _TRACKED if f == c.metric)
    if kind == "count":
        n = abs(c.new - c.old)
        word = f"{n:g} {noun}{'s' if n != 1 else ''}"
        return f"adds {word}" if c.new > c.old else f"removes {word}"
    verb = "raises" if c.new > c.old else "lowers"
    return f"{verb} {noun} from {_unit(c.metric, c.old)} to {_unit(c.metric, c.new)}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_changes(changes: list[Change]) -> list[str]:
    """Sentences: one for the cluster ("This change adds 2 dependency edges and raises ..."), one per namespace."""
    if not changes:
        return ["This change leaves every complexity figure as it was."]
    lines = []
    by_scope: dict[str, list[Change]] = {}
    for c in changes:
        by_scope.setdefault(c.scope, []).append(c)
    for scope, items in by_scope.items():
        text = _join([_phrase(c) for c in items])
        lines.append(f"This change {text}." if scope == "cluster" else f"  {scope}: {text}.")
    return lines


# ----- regressions against a baseline --------------------------------------------------------------
#: Reports written before findings carried their figures: the figure is read out of the message text.
_FIGURE = re.compile(r"(?<![\w./:-])(\d+(?:\.\d+)?)(?![\w./-])")
REGENERATE = "save it again with `guywire check OLD_PATH --format json > BASELINE.json`"


@dataclass(frozen=True, slots=True)
class Known:
    """A finding as a baseline remembers it."""

    rule: str
    kind: str
    namespace: str | None
    name: str
    location: str | None
    severity: Severity
    message: str  # the rendered message
    observed: float | None = None
    limit: float | None = None
    unit: str | None = None
    legacy: bool = False  # from a saved report without observed/limit: only its message holds the figure

    @property
    def key(self) -> tuple:
        return (self.rule, self.kind, self.namespace or "", self.name, self.location or "")

    @property
    def body(self) -> str:
        """The message without the ``[rule name] Kind ns/name location:`` prefix."""
        ref = f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
        where = f" {self.location}" if self.location else ""
        head = f"] {ref}{where}: "
        i = self.message.find(head)
        return self.message[i + len(head):] if i >= 0 else self.message


def known_from_finding(f: Finding) -> Known:
    return Known(rule=f.rule, kind=f.workload.kind, namespace=f.workload.namespace, name=f.workload.name,
                 location=f.location, severity=f.severity, message=f.render(), observed=f.observed, limit=f.limit,
                 unit=f.unit)


def _figure(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"its {what} is {value!r}, not a number or null")
    return value


#: How each report format names a finding's fields, for the message that refuses one.
JSON_FIELDS = {"rule": "rule", "workload": "workload", "severity": "severity"}
SARIF_FIELDS = {"rule": "ruleId", "workload": "properties.workload", "severity": "properties.severity"}


def measures(rule: str) -> bool:
    """Whether ``rule`` measures something (has a unit): only its findings carry observed and limit."""
    found = REGISTRY.get(rule)
    return found is not None and found.unit is not None


def _known(i: int, rule: Any, workload: Any, location: Any, severity: Any, message: Any, figures: dict | None,
           what: str, fields: dict[str, str] = JSON_FIELDS) -> Known:
    """One saved finding; ValueError naming it (counted from 1) and the field it lacks."""
    def refused(field: str, value: Any, want: str) -> ValueError:
        why = f"it has no {field} ({want})" if value is None else \
            f"its {field} is {_shown(value)}, not {want}"
        return ValueError(f"{what} {i + 1} is not a guywire finding: {why}.")

    if not isinstance(rule, str) or not rule:
        raise refused(fields["rule"], rule, "a rule id")
    if not isinstance(workload, dict):
        raise refused(fields["workload"], workload, "an object with kind and name")
    for key in ("kind", "name"):
        if not isinstance(workload.get(key), str) or not workload[key]:
            raise refused(f"{fields['workload']}.{key}", workload.get(key), "a string")
    if workload.get("namespace") is not None and not isinstance(workload["namespace"], str):
        raise refused(f"{fields['workload']}.namespace", workload["namespace"], "a string")
    try:
        level = Severity.parse(severity) if isinstance(severity, str) else None
    except ValueError:
        level = None
    if level is None:
        raise refused(fields["severity"], severity, "low, medium, high or critical")
    figures = figures or {}
    try:
        observed, limit = _figure(figures.get("observed"), "observed"), _figure(figures.get("limit"), "limit")
    except ValueError as exc:
        raise ValueError(f"{what} {i + 1} is not a guywire finding: {exc}.") from None
    return Known(rule=rule, kind=workload["kind"], namespace=workload.get("namespace"), name=workload["name"],
                 location=location if isinstance(location, str) else None, severity=level,
                 message=str(message or ""), observed=observed, limit=limit,
                 unit=figures.get("unit") if isinstance(figures.get("unit"), str) else None,
                 legacy="observed" not in figures and measures(rule))


def _shown(value: Any) -> str:
    return f"a {type(value).__name__}" if isinstance(value, (dict, list)) else repr(value)


def known_from_json(data: Any) -> list[Known]:
    """The findings of a saved ``guywire check --format json`` report; ValueError when it is not one.

    A report saved before findings carried ``observed``/``limit`` still loads: its findings are marked
    ``legacy`` and compared by the first figure of their message, as guywire did then."""
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ValueError("is not a guywire JSON report: it has no \"findings\" list "
                         "(save one with guywire check --format json).")
    out = []
    for i, f in enumerate(data["findings"]):
        if not isinstance(f, dict):
            raise ValueError(f"finding {i + 1} is not a guywire finding (it is {type(f).__name__}).")
        out.append(_known(i, f.get("rule"), f.get("workload"), f.get("location"), f.get("severity"),
                          f.get("message", ""), f, "finding"))
    return out


def is_sarif(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("runs"), list) and "version" in data


def known_from_sarif(data: Any) -> list[Known]:
    """The findings of a saved ``guywire check --format sarif`` report (suppressed results, the exempted
    findings, left out), read from each result's ``properties`` (which name the object, the location and the figures); ValueError when the SARIF
    was not written by guywire, or by a guywire that did not record them."""
    out = []
    for run in data.get("runs") or []:
        driver = ((run or {}).get("tool") or {}).get("driver") or {}
        if driver.get("name") != "guywire":
            raise ValueError(f"is a SARIF log from {driver.get('name') or 'an unnamed tool'}, not from guywire; "
                             f"{REGENERATE}.")
        for i, r in enumerate(run.get("results") or []):
            if (r or {}).get("suppressions"):
                continue  # an exempted finding: not among a JSON report's findings either
            props = (r or {}).get("properties") or {}
            if "workload" not in props:
                raise ValueError("is a SARIF log from a guywire that did not record each finding's object in "
                                 f"its properties; {REGENERATE} (or --format sarif).")
            out.append(_known(i, r.get("ruleId"), props["workload"], props.get("location"), props.get("severity"),
                              (r.get("message") or {}).get("text", ""), props, "result", SARIF_FIELDS))
    return out


def first_figure(text: str) -> float | None:
    """The first number standing on its own in a message (27 in "can send 27 calls"), or None.
    Only for baselines saved before findings carried their figures."""
    m = _FIGURE.search(text)
    return float(m.group(1)) if m else None


@dataclass(slots=True)
class Regression:
    finding: Finding
    reason: str  # "new", or what got worse


@dataclass(slots=True)
class Comparison:
    regressions: list[Regression]
    baseline: int  # findings in the baseline
    unchanged: int  # current findings that match one in the baseline and are no worse
    fixed: int  # baseline findings with no current match
    legacy: int = 0  # baseline findings without figures, compared by the figures in their messages

    @property
    def findings(self) -> list[Finding]:
        return [r.finding for r in self.regressions]

    def to_dict(self) -> dict:
        return {"baselineFindings": self.baseline, "newOrWorse": len(self.regressions),
                "unchangedOrBetter": self.unchanged, "fixed": self.fixed,
                "regressions": [{"rule": r.finding.rule, "workload": str(r.finding.workload), "reason": r.reason}
                                for r in self.regressions]}


def _past(observed: float, limit: float | None) -> float:
    """How far a figure is past its limit (the figure itself for a rule without a limit)."""
    return observed - limit if limit is not None else observed


def _figures(observed: float, limit: float | None, unit: str) -> str:
    return figure_with_unit(observed, unit) + (f" (limit {render_figure(limit, unit)})" if limit is not None else "")


def worse_than(f: Finding, was: Known) -> str | None:
    """Why ``f`` is worse than the baseline finding it matched, or None when it is not.

    Worse: a higher severity, or its observed figure further past its limit than before (for a rule
    without a limit, a larger figure), in the same unit. The message text plays no part, except for a
    ``legacy`` baseline finding, whose first message figure is compared with the current one's."""
    if f.severity.rank > was.severity.rank:
        return f"severity {was.severity.value} -> {f.severity.value}"
    if f.severity.rank < was.severity.rank:
        return None
    if was.legacy:
        a, b = first_figure(was.body), first_figure(f.message)
        return f"{a:g} -> {b:g}" if a is not None and b is not None and b > a else None
    if f.observed is None or was.observed is None or f.unit != was.unit or f.unit is None:
        return None
    if _past(f.observed, f.limit) > _past(was.observed, was.limit) + 1e-9:
        return f"{_figures(was.observed, was.limit, f.unit)} -> {_figures(f.observed, f.limit, f.unit)}"
    return None


def new_or_worse(current: Iterable[Finding], baseline: Iterable[Known]) -> Comparison:
    """The current findings that are new or got worse than the baseline.

    Findings are matched by rule + object + location. Within one such key, a finding with the
    same message is matched first; the rest are paired in order (worst first). A paired finding is
    worse as :func:`worse_than` says: by severity and by its figures (``observed`` against ``limit``),
    never by the wording of its message. Current findings left unpaired are new."""
    base: dict[tuple, list[Known]] = {}
    n_base = n_legacy = 0
    for k in baseline:
        base.setdefault(k.key, []).append(k)
        n_base += 1
        n_legacy += k.legacy
    cur: dict[tuple, list[Finding]] = {}
    for f in current:
        cur.setdefault(known_from_finding(f).key, []).append(f)
    regressions: list[Regression] = []
    unchanged = 0
    matched_base = 0
    for key, items in cur.items():
        old = sorted(base.get(key, []), key=lambda k: -k.severity.rank)
        pairs: list[tuple[Finding, Known]] = []
        rest: list[Finding] = []
        for f in sorted(items, key=lambda f: f.sort_key):
            msg = f.render()
            same = next((k for k in old if k.message == msg), None)
            if same is None:
                rest.append(f)
            else:
                old.remove(same)
                pairs.append((f, same))
        for f in rest:
            if old:
                pairs.append((f, old.pop(0)))
            else:
                regressions.append(Regression(f, "new"))
        for f, was in pairs:
            matched_base += 1
            why = worse_than(f, was)
            if why is None:
                unchanged += 1
            else:
                regressions.append(Regression(f, why))
    regressions.sort(key=lambda r: r.finding.sort_key)
    return Comparison(regressions=regressions, baseline=n_base, unchanged=unchanged, fixed=n_base - matched_base,
                      legacy=n_legacy)


__all__ = ["Change", "Comparison", "ComplexityReport", "Figures", "Known", "Regression", "all_findings",
           "complexity_report", "describe_changes", "diff_reports", "first_figure", "is_sarif", "known_from_finding",
           "known_from_json", "known_from_sarif", "new_or_worse", "simplify_suggestions", "suggestion_policy",
           "worse_than"]
