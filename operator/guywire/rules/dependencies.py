"""Dependency rules: every call resolvable, declared, and the graph small enough to reason about."""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Iterator

from ..model.severity import Severity
from ..views.workload import Workload
from .base import Context, Issue, measured, rule

if TYPE_CHECKING:
    from ..model.policy import DependencyRules


@rule(id="GW-DEP-001", name="unresolved-dependency", severity=Severity.MEDIUM,
      needs_edges=True, section="dependencies",
      switch="require_resolvable",
      summary="A declared dependency does not resolve to a Service or workload.",
      remediation="Fix the name in guywire.dev/depends-on (name, name.namespace or name.namespace.svc.cluster.local), "
                  "create the Service, or write external:HOST for a host outside the cluster.")
def unresolved_dependency(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """A dependency nobody can find is either a typo, a Service that was deleted, or a call that
    goes somewhere the graph cannot see. Every rule that walks the graph (depth, amplification,
    timeouts) is blind past it."""
    for e in (*ctx.graph.out.get(w.key, ()), *ctx.graph.startup.get(w.key, ())):
        if e.declared and not e.resolved:
            yield Issue(f'depends on "{e.dep.raw}"{" (at start-up)" if e.startup else ""}, but no Service or workload {e.dep.name} exists in namespace '
                        f"{e.namespace}. Fix the name, create the Service, or mark it external:{e.dep.name}.")


@rule(id="GW-DEP-002", name="dependency-fan-out", severity=Severity.MEDIUM,
      needs_edges=True, section="dependencies", unit="dependencies", limit_from="rules.dependencies.maxFanOut",
      summary="A workload calls more services directly than maxFanOut.",
      remediation="Split the workload, put an aggregator in front of related calls, or raise "
                  "rules.dependencies.maxFanOut if this fan-out is deliberate.")
def dependency_fan_out(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """Every direct dependency is one more thing whose latency, errors and deploys this workload
    inherits. Declared and inferred dependencies, in-cluster and external, are counted once each."""
    edges = ctx.graph.out.get(w.key, ())
    if len(edges) > params.max_fan_out:
        names = ", ".join(e.label for e in edges[:8]) + (", …" if len(edges) > 8 else "")
        yield measured("calls {observed} dependencies directly, above the limit of {limit} ({names}). "
                       "Group related calls behind one service or raise maxFanOut.",
                       observed=len(edges), limit=params.max_fan_out, unit="dependencies", names=names)


@rule(id="GW-DEP-003", name="dependency-depth", severity=Severity.MEDIUM,
      needs_edges=True, section="dependencies", unit="hops", limit_from="rules.dependencies.maxDepth",
      summary="The longest downstream call chain is longer than maxDepth.",
      remediation="Flatten the chain: let callers reach deep services directly, cache, or merge hops that only "
                  "forward; or raise rules.dependencies.maxDepth.")
def dependency_depth(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """Each hop adds latency, a failure mode and a timeout to keep consistent. Depth counts hops
    along the longest chain of calls that starts at this workload; edges inside a cycle are not
    counted (GW-DEP-004 reports the cycle)."""
    a = ctx.graph.analysis.get(w.key)
    if a and a.depth > params.max_depth:
        path = ctx.graph.depth_path(w.key)
        yield measured("starts a call chain {observed} hops deep, above the limit of {limit}: {chain}. "
                       "Shorten the chain or raise maxDepth.",
                       observed=a.depth, limit=params.max_depth, unit="hops", path=path, chain=" -> ".join(path))


@rule(id="GW-DEP-004", name="dependency-cycle", severity=Severity.HIGH,
      needs_edges=True, section="dependencies", unit="workloads",
      switch="forbid_cycles",
      summary="The workload is on a dependency cycle.",
      remediation="Break the cycle: move the shared logic into a service both sides call, or replace one "
                  "direction with an event or a queue.")
def dependency_cycle(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """A cycle means a slow or failing member slows every other member, retries circulate, and no
    member can be deployed, scaled or reasoned about alone. Cycles are found as strongly
    connected components, so every member of the cycle gets the finding, with the cycle named."""
    cycle = ctx.graph.cycle_of(w.key)
    if cycle:
        labels = [f"{k[0]}/{k[2]}" for k in cycle]
        yield measured("is on a dependency cycle of {observed} workload(s): {cycle}. Break one edge of the cycle.",
                       observed=len(cycle) - 1, limit=None, unit="workloads", path=labels, cycle=" -> ".join(labels))


@rule(id="GW-DEP-005", name="cross-namespace-dependency", severity=Severity.MEDIUM,
      needs_edges=True, section="dependencies",
      summary="A dependency points into a namespace the policy does not allow.",
      remediation="Call a Service in an allowed namespace, or add the namespace to "
                  "rules.dependencies.allowCrossNamespace.")
def cross_namespace_dependency(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """Calls across namespaces cross team and blast-radius boundaries; policies list the
    namespaces (globs) that are shared on purpose."""
    allowed = params.allow_cross_namespace
    for e in (*ctx.graph.out.get(w.key, ()), *ctx.graph.startup.get(w.key, ())):
        if e.external or e.namespace == w.namespace:
            continue
        if not any(fnmatch.fnmatchcase(e.namespace, pat) for pat in allowed):
            allowed_text = ", ".join(allowed) if allowed else "none"
            yield Issue(f'depends on "{e.dep.raw}" in namespace {e.namespace}, which is not allowed '
                        f"(allowed: {allowed_text}). Use a shared Service or allow the namespace.")


@rule(id="GW-DEP-006", name="undeclared-dependency", severity=Severity.LOW,
      needs_edges=True, section="dependencies",
      switch="require_declared",
      summary="A call found in the environment is not declared in guywire.dev/depends-on.",
      remediation="Add the Service to the guywire.dev/depends-on annotation so the graph, retry and timeout rules "
                  "see the call.")
def undeclared_dependency(w: Workload, params: DependencyRules, ctx: Context) -> Iterator[Issue]:
    """An environment variable that holds a URL or host:port of an in-cluster Service is a call the
    workload makes. If it is not declared, the people who read the annotation see a smaller graph
    than the one that runs. A call to a Service that is not among the inputs (another chart's, say
    ``QDRANT_URL=http://qdrant-database:6333``) is kept as an edge to an unresolved Service and
    reported with an "unresolved" note; localhost, addresses and outside domains are no such call.
    The value itself is never shown, only the variable's name."""
    for e in ctx.graph.out.get(w.key, ()):
        if not e.declared and e.inferred_from:
            container, _, env = e.inferred_from.partition("/")
            unresolved = "" if e.resolved else ", which is not among the inputs (unresolved),"
            yield Issue(f"calls Service {e.namespace}/{e.dep.name} (env {env}){unresolved} without declaring it. "
                        f"Add {e.dep.label(w.namespace)} to guywire.dev/depends-on"
                        + (" and check that the Service exists (another chart's?)." if unresolved else "."),
                        location=f'container "{container}"')
