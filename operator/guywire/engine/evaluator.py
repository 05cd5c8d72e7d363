"""Policies x workloads x graph -> findings. The one engine behind the CLI, the operator and the webhook.

The engine holds an inventory and its graph. ``evaluate_all`` judges everything;
a rule that raises on an object gives an :class:`EvaluationError`, kept apart from the
findings (``errors``, ``service_errors``, ``node_errors``): never a violation.
``upsert`` / ``remove`` change one object and judge again only the workloads the
change can affect (the object, its graph ancestors, the callers of a Service whose
backends changed, the workloads of a namespace whose labels changed).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..graph.dependency_graph import Graph, WKey, istio_meshed
from ..speed.gcpause import paused_gc
from ..views.inventory import Inventory
from ..model.kinds import NEVER_JUDGED_NAMESPACES
from ..model.evaluation import EvaluationError, unique_errors
from ..model.finding import Finding
from ..model.severity import Severity
from ..rules import REGISTRY, Context, Rule, all_rules
from ..rules.complexity import complexity_score
from ..views.workload import MESH_KINDS, MeshRoute, Monitor, Namespace, Node, Service, Workload

if TYPE_CHECKING:
    from ..model.policy import Policy

ALWAYS_SKIPPED = NEVER_JUDGED_NAMESPACES


@dataclass(slots=True)
class PolicyResult:
    policy: Policy
    matched: int = 0
    violating: int = 0
    findings: list[Finding] = field(default_factory=list)
    errors: list[EvaluationError] = field(default_factory=list)  # rules that could not evaluate an object


@dataclass(slots=True)
class Result:
    findings: list[Finding]
    policies: list[PolicyResult]
    evaluated: int
    skipped: int
    errors: list[EvaluationError] = field(default_factory=list)  # apart from findings: never a violation
    #: what ``guywire.dev/exempt`` (with its reason) kept out of ``findings``; only when the engine keeps them
    exempted: list[Finding] = field(default_factory=list)


def _in_scope(policy: Policy, kind: str, namespace: str, name: str, labels: dict[str, str], gpu: bool,
              inventory: Inventory) -> bool:
    """Whether ``policy`` looks at one object: its namespace (namespaced policies), match and exclude."""
    if policy.kind == "ComplexityPolicy" and namespace != policy.namespace:
        return False
    m, x = policy.spec.match, policy.spec.exclude
    if m.kinds and kind not in m.kinds:
        return False
    if m.namespaces and not m.namespace_matches(namespace):
        return False
    if m.namespace_selector is not None and not m.namespace_selector.matches(inventory.namespace_labels(namespace)):
        return False
    if m.selector is not None and not m.selector.matches(labels):
        return False
    if m.gpu_only and not gpu:
        return False
    if x.kinds and kind in x.kinds:
        return False
    if x.namespaces and x.namespace_matches(namespace):
        return False
    if x.names and x.name_matches(name):
        return False
    if x.selector is not None and (x.selector.match_labels or x.selector.match_expressions) \
            and x.selector.matches(labels):
        return False
    return True


def policy_matches(policy: Policy, w: Workload, inventory: Inventory) -> bool:
    """Whether ``policy`` looks at workload ``w``."""
    return _in_scope(policy, w.kind, w.namespace, w.name, w.labels, w.requests_gpu, inventory)


def service_matches(policy: Policy, svc: Service, inventory: Inventory) -> bool:
    """Whether ``policy`` looks at a Service (rules with target="service"). A policy whose ``match.kinds``
    lists kinds but not Service, or that is ``gpuOnly``, does not."""
    return _in_scope(policy, "Service", svc.namespace, svc.name, svc.labels, False, inventory)


def mesh_defaults(policies: Iterable[Policy]) -> bool:
    """Whether the graph counts Istio's default retries: unless every policy turns rules.retries.meshDefaults off."""
    policies = list(policies)
    return not policies or any(p.spec.rules.retries.mesh_defaults for p in policies)


def exempted(w: Workload, rule_id: str) -> bool:
    d = w.decl
    return bool(d.exempt and d.exempt_reason and any(fnmatch.fnmatchcase(rule_id, p) for p in d.exempt))


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.sort_key)


def merge_findings(groups: Iterable[Iterable[Finding]]) -> list[Finding]:
    """One finding per (rule, object, location, message, definition) across policies, keeping the worst severity.
    The definition (source) keeps apart the findings of two definitions of one object (see guywire.inputs.clusters)."""
    best: dict[tuple, Finding] = {}
    for group in groups:
        for f in group:
            k = (f.rule, f.workload, f.location, f.message, f.source)
            cur = best.get(k)
            if cur is None or f.severity.rank > cur.severity.rank:
                best[k] = f
    return worst_first(best.values())


def run_rule(r: Rule, obj: Any, ref: Any, source: Any, params: Any, severity: Severity, ctx: Context,
             policy: Policy, errors: list[EvaluationError] | None) -> list[Finding]:
    """One rule's findings on one object. A rule that raises adds an EvaluationError to ``errors`` and gives
    no finding (a bug never hides the other rules' findings); with ``errors=None`` the exception propagates."""
    try:
        issues = list(r.check(obj, params, ctx))
    except Exception as exc:
        if errors is None:
            raise
        errors.append(EvaluationError.of(r.id, r.name, exc, ref, source, policy.name))
        return []
    return [Finding(rule=r.id, name=r.name, severity=issue.severity or severity, workload=ref, message=issue.message,
                    location=issue.location, path=issue.path, source=source, policy=policy.name,
                    observed=issue.observed, limit=issue.limit, unit=issue.unit)
            for issue in issues]


def per_policy(policies: Iterable[Policy], judge: Callable[[Policy, list[EvaluationError]], list[Finding]]
               ) -> tuple[dict[str, list[Finding]], dict[str, list[EvaluationError]]]:
    """Findings and evaluation errors of one object per policy ref (errors only for the policies that had some)."""
    per: dict[str, list[Finding]] = {}
    errs: dict[str, list[EvaluationError]] = {}
    for p in policies:
        sink: list[EvaluationError] = []
        per[p.ref] = judge(p, sink)
        if sink:
            errs[p.ref] = sink
    return per, errs


class Engine:
    def __init__(self, policies: Iterable[Policy], inventory: Inventory | None = None, *,
                 now: datetime | None = None, skip_namespaces: Iterable[str] = (),
                 rules: Iterable[Rule] | None = None, keep_exempted: bool = False):
        self.policies: list[Policy] = list(policies)
        # keep_exempted: also run the rules a workload exempts itself from, and keep what they find apart
        # (``exempted_results``), so a CI report can show them as suppressed instead of dropping them
        self.keep_exempted = keep_exempted
        self.exempted_results: dict[WKey, dict[str, list[Finding]]] = {}
        self.inventory = inventory or Inventory()
        self.graph = Graph(self.inventory, mesh_defaults=mesh_defaults(self.policies))
        self.now = now
        self.skip_namespaces = ALWAYS_SKIPPED | set(skip_namespaces)
        self.rules = list(rules) if rules is not None else all_rules()
        self.node_health: dict[str, Any] = {}
        self.gpu_pods: dict[WKey, set[str]] = {}
        # workload key -> policy ref -> findings; None when no policy matched
        self.results: dict[WKey, dict[str, list[Finding]]] = {}
        self.node_results: dict[str, dict[str, list[Finding]]] = {}
        self._plans: dict[tuple[str, int], list[tuple[Rule, Any, Severity]]] = {}
        # Service key -> policy ref -> findings of the rules with target="service" (GW-SMP-003)
        self.service_results: dict[tuple[str, str], dict[str, list[Finding]]] = {}
        # the same keys -> policy ref -> rules that raised; only objects with an error have an entry
        self.errors: dict[WKey, dict[str, list[EvaluationError]]] = {}
        self.node_errors: dict[str, dict[str, list[EvaluationError]]] = {}
        self.service_errors: dict[tuple[str, str], dict[str, list[EvaluationError]]] = {}

    # ----- judging -----------------------------------------------------------------------------
    def context(self, policy: Policy, graph: Graph | None = None) -> Context:
        """What the rules read; on ``graph`` (and its inventory) when given, e.g. a Graph.preview."""
        graph = graph or self.graph
        return Context(inventory=graph.inv, graph=graph, policy=policy, now=self.now,
                       node_health=self.node_health, gpu_pods=self.gpu_pods)

    def skipped(self, w: Workload) -> bool:
        return w.namespace in self.skip_namespaces

    def judge(self, w: Workload, policy: Policy, ctx: Context | None = None,
              rules: Iterable[Rule] | None = None, errors: list[EvaluationError] | None = None,
              exempted_out: list[Finding] | None = None) -> list[Finding]:
        """Every finding ``policy`` has on ``w`` (from ``rules``, default all). Assumes the policy matches.
        A rule that raises adds an EvaluationError to ``errors`` instead; with ``errors=None`` it propagates.
        The rules ``w`` exempts itself from are skipped, or, with ``exempted_out``, run into that list."""
        ctx = ctx or self.context(policy)
        out: list[Finding] = []
        plan = self._plan(policy) if rules is None else [
            (r, r.params(policy), r.severity_in(policy)) for r in rules
            if r.target == "workload" and r.enabled_in(policy)]
        has_exemptions = bool(w.decl.exempt)
        has_edges = bool(ctx.graph.out.get(w.key) or ctx.graph.startup.get(w.key))
        ref, source, name = w.ref, w.source, policy.name
        for r, params, severity in plan:  # run_rule, inlined: this loop runs rules x workloads times
            if r.needs_edges and not has_edges:
                continue
            into = out
            if has_exemptions and exempted(w, r.id):
                if exempted_out is None:
                    continue
                into = exempted_out
            try:
                issues = list(r.check(w, params, ctx))
            except Exception as exc:  # a bug in one rule never hides the others' findings, nor becomes one
                if errors is None:
                    raise
                errors.append(EvaluationError.of(r.id, r.name, exc, ref, source, name))
                continue
            for issue in issues:
                into.append(Finding(rule=r.id, name=r.name, severity=issue.severity or severity, workload=ref,
                                   message=issue.message, location=issue.location, path=issue.path, source=source,
                                   policy=name, observed=issue.observed, limit=issue.limit, unit=issue.unit))
        return out

    def _plan(self, policy: Policy) -> list[tuple[Rule, Any, Severity]]:
        """The workload rules ``policy`` runs, with their params and severity, worked out once per policy
        (overrides are globs: asking them per workload was a third of a full evaluation)."""
        key = (policy.ref, id(policy))
        plan = self._plans.get(key)
        if plan is None:
            plan = [(r, r.params(policy), r.severity_in(policy)) for r in self.rules
                    if r.target == "workload" and r.enabled_in(policy)]
            self._plans[key] = plan
        return plan

    def judge_node(self, node: Node, policy: Policy, ctx: Context,
                   errors: list[EvaluationError] | None = None) -> list[Finding]:
        out: list[Finding] = []
        for r in self.rules:
            if r.target == "node" and r.enabled_in(policy):
                out += run_rule(r, node, node.ref, node.source, r.params(policy), r.severity_in(policy), ctx, policy,
                                errors)
        return out

    def judge_service(self, svc: Service, policy: Policy, ctx: Context | None = None,
                      rules: Iterable[Rule] | None = None,
                      errors: list[EvaluationError] | None = None) -> list[Finding]:
        ctx = ctx or self.context(policy)
        out: list[Finding] = []
        for r in self.rules if rules is None else rules:
            if r.target == "service" and r.enabled_in(policy):
                out += run_rule(r, svc, svc.ref, svc.source, r.params(policy), r.severity_in(policy), ctx, policy,
                                errors)
        return out

    def _evaluate_services(self, skeys: Iterable[tuple[str, str]]) -> None:
        """Judge Services with the service rules, when a policy turns one on."""
        active = [p for p in self.policies
                  if any(r.target == "service" and r.enabled_in(p) for r in self.rules)]
        if not active:
            self.service_results.clear()
            self.service_errors.clear()
            return
        ctxs = {p.ref: self.context(p) for p in active}
        for skey in skeys:
            svc = self.inventory.services.get(skey)
            self.service_errors.pop(skey, None)
            if svc is None or skey[0] in self.skip_namespaces or svc.backend is not None:
                self.service_results.pop(skey, None)  # a Service a workload's controller makes is its business
                continue
            per, errs = per_policy([p for p in active if service_matches(p, svc, self.inventory)],
                                   lambda p, sink: self.judge_service(svc, p, ctxs[p.ref], errors=sink))
            self.service_results[skey] = per
            if errs:
                self.service_errors[skey] = errs

    def _evaluate_services_near(self, keys: Iterable[WKey], namespaces: Iterable[str] = ()) -> None:
        """After a change: judge again the Services of the namespaces it touched (their backends may differ)."""
        nss = {k[0] for k in keys} | set(namespaces)
        if nss:
            self._evaluate_services([s for s in self.inventory.services if s[0] in nss] +
                                    [s for s in self.service_results if s[0] in nss])

    def _evaluate(self, keys: Iterable[WKey]) -> None:
        ctxs = {p.ref: self.context(p) for p in self.policies}
        errors = self.errors
        sink: list[EvaluationError] = []  # filled only when a rule raises: one list for the whole pass
        for key in keys:
            if errors:
                errors.pop(key, None)
            w = self.inventory.workloads.get(key)
            if w is None or self.skipped(w):
                self.exempted_results.pop(key, None)
                if w is None:
                    self.results.pop(key, None)
                else:
                    self.results[key] = {}
                continue
            per: dict[str, list[Finding]] = {}
            kept: dict[str, list[Finding]] = {}
            keep = self.keep_exempted and bool(w.decl.exempt and w.decl.exempt_reason)
            for p in self.policies:
                if policy_matches(p, w, self.inventory):
                    per[p.ref] = self.judge(w, p, ctxs[p.ref], errors=sink,
                                            exempted_out=kept.setdefault(p.ref, []) if keep else None)
                    if sink:
                        errors.setdefault(key, {})[p.ref] = sink
                        sink = []
            self.results[key] = per
            if keep:
                self.exempted_results[key] = kept
            else:
                self.exempted_results.pop(key, None)

    def evaluate_nodes(self) -> None:
        self.node_results = {}
        self.node_errors = {}
        cluster = [p for p in self.policies if p.kind == "ClusterComplexityPolicy"]
        if not any(r.target == "node" for r in self.rules):
            return
        for node in self.inventory.nodes.values():
            per, errs = per_policy(cluster, lambda p, sink: self.judge_node(node, p, self.context(p), errors=sink))
            self.node_results[node.name] = per
            if errs:
                self.node_errors[node.name] = errs

    def evaluate_all(self) -> Result:
        for p in self.policies:  # every plan now, also of a policy nothing matches yet: judging a request only reads
            self._plan(p)
        self.results = {}
        self.errors = {}
        self.exempted_results = {}
        with paused_gc():
            self._evaluate(list(self.inventory.workloads))
            self.evaluate_nodes()
        self.service_results = {}
        self.service_errors = {}
        self._evaluate_services(list(self.inventory.services))
        return self.result()

    def evaluate_only(self, keys: Iterable[WKey], services: Iterable[tuple[str, str]] = ()) -> Result:
        """Judge only these workloads and Services (nodes not at all): an engine that holds a whole cluster for
        the graph but reports on a few of its objects (an earlier definition of one, guywire.inputs.clusters)."""
        self.results = {}
        self.errors = {}
        self.exempted_results = {}
        with paused_gc():
            self._evaluate(list(keys))
        self.service_results = {}
        self.service_errors = {}
        self._evaluate_services(list(services))
        return self.result()

    # ----- reading results ---------------------------------------------------------------------
    def findings_for(self, key: WKey) -> list[Finding]:
        return merge_findings(self.results.get(key, {}).values())

    def errors_for(self, key: WKey) -> list[EvaluationError]:
        """The rules that could not evaluate workload ``key``, one per rule and cause across policies."""
        return unique_errors(e for errs in self.errors.get(key, {}).values() for e in errs)

    def all_errors(self, policy_ref: str | None = None) -> list[EvaluationError]:
        """Every evaluation error the engine holds (workloads, Services, Nodes), or those of one policy."""
        stores = (self.errors, self.service_errors, self.node_errors)
        if policy_ref is None:
            return unique_errors(e for store in stores for per in store.values() for errs in per.values()
                                 for e in errs)
        return unique_errors(e for store in stores for per in store.values() for e in per.get(policy_ref, ()))

    def matched_policies(self, key: WKey) -> list[Policy]:
        refs = self.results.get(key, {})
        return [p for p in self.policies if p.ref in refs]

    def score(self, key: WKey) -> int:
        w = self.inventory.workloads[key]
        return complexity_score(w, self.graph)

    def policy_result(self, policy: Policy) -> PolicyResult:
        pr = PolicyResult(policy=policy)
        for per in self.results.values():
            found = per.get(policy.ref)
            if found is None:
                continue
            pr.matched += 1
            if found:
                pr.violating += 1
                pr.findings.extend(found)
        for per in self.node_results.values():
            pr.findings.extend(per.get(policy.ref, ()))
        for per in self.service_results.values():
            pr.findings.extend(per.get(policy.ref, ()))
        pr.findings = worst_first(pr.findings)
        pr.errors = self.all_errors(policy.ref)
        return pr

    def result(self) -> Result:
        groups = [f for per in self.results.values() for f in per.values()]
        groups += [f for per in self.node_results.values() for f in per.values()]
        groups += [f for per in self.service_results.values() for f in per.values()]
        evaluated = sum(1 for per in self.results.values() if per)
        exempted = merge_findings(f for per in self.exempted_results.values() for f in per.values())
        return Result(findings=merge_findings(groups), policies=[self.policy_result(p) for p in self.policies],
                      evaluated=evaluated, skipped=len(self.results) - evaluated, errors=self.all_errors(),
                      exempted=exempted)

    # ----- incremental changes -----------------------------------------------------------------
    def upsert(self, view: Any) -> set[WKey]:
        """Add or replace one object; judge again what it can affect; return those workload keys."""
        if isinstance(view, Workload):
            if view.owner is not None:
                return set()
            affected = self.graph.upsert_workload(view)
        elif isinstance(view, Service):
            affected = self.graph.upsert_service(view)
            # its labels decide which ServiceMonitors reach its backends (GW-OBS-003), even when they are unchanged
            affected |= set(self.graph.backends.get(view.key, ()))
        elif isinstance(view, MeshRoute):
            affected = self.graph.upsert_mesh(view)
        elif isinstance(view, Namespace):
            old = self.inventory.namespaces.get(view.name)
            self.inventory.namespaces[view.name] = view
            affected = {k for k in self.inventory.workloads if k[0] == view.name}
            if istio_meshed(old.labels if old else None) != istio_meshed(view.labels):
                affected |= self.graph.rebuild(affected)  # its calls gain or lose Istio's default retries
        elif isinstance(view, Monitor):
            self.inventory.add(view)
            affected = {k for k in self.inventory.workloads if view.covers_namespace(k[0])}
        elif isinstance(view, Node):
            self.inventory.nodes[view.name] = view
            self.evaluate_nodes()
            affected = {k for k, nodes in self.gpu_pods.items() if view.name in nodes}
            affected |= {k for k, w in self.inventory.workloads.items() if w.requests_gpu
                         and any(t.node_name == view.name or t.node_selector or t.node_affinity for t in w.templates)}
        else:
            return set()
        self._evaluate(affected)
        if isinstance(view, (Workload, Service, Namespace)):
            self._evaluate_services_near(affected, [view.name if isinstance(view, Namespace) else view.namespace])
        return affected

    def reevaluate(self, keys: set[WKey]) -> set[WKey]:
        """Judge ``keys`` again after a change the graph does not see (where GPU pods run)."""
        keys = {k for k in keys if k in self.inventory.workloads}
        self._evaluate(keys)
        return keys

    def remove(self, kind: str, namespace: str | None, name: str) -> set[WKey]:
        if kind == "Service":
            affected = self.graph.remove_service((namespace or "default", name))
        elif kind == "Namespace":
            old = self.inventory.namespaces.pop(name, None)
            affected = {k for k in self.inventory.workloads if k[0] == name}
            if istio_meshed(old.labels if old else None):
                affected |= self.graph.rebuild(affected)
        elif kind in MESH_KINDS:
            affected = self.graph.remove_mesh((namespace or "default", kind, name))
        elif kind == "Node":
            self.inventory.nodes.pop(name, None)
            self.node_results.pop(name, None)
            self.node_errors.pop(name, None)
            affected = set()
        elif kind in ("ServiceMonitor", "PodMonitor", "PodMonitoring", "ClusterPodMonitoring"):
            m = self.inventory.monitors.pop((namespace or "default", kind, name), None)
            affected = {k for k in self.inventory.workloads if m and m.covers_namespace(k[0])}
        else:
            key = (namespace or "default", kind, name)
            affected = self.graph.remove_workload(key)
            self.results.pop(key, None)
            self.errors.pop(key, None)
            self.exempted_results.pop(key, None)
        self._evaluate(affected)
        if kind not in ("Node", "ServiceMonitor", "PodMonitor", "PodMonitoring", "ClusterPodMonitoring") \
                and kind not in MESH_KINDS:
            self._evaluate_services_near(affected, [name if kind == "Namespace" else namespace or "default"])
        return affected

    def set_policies(self, policies: Iterable[Policy]) -> None:
        self.policies = list(policies)
        self._plans = {}
        if mesh_defaults(self.policies) != self.graph.mesh_defaults:
            self.graph = Graph(self.inventory, mesh_defaults=mesh_defaults(self.policies))
        self.evaluate_all()


__all__ = ["Engine", "EvaluationError", "PolicyResult", "Result", "exempted", "merge_findings", "policy_matches",
           "service_matches", "worst_first",
           "REGISTRY"]
