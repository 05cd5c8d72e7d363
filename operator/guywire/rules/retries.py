"""Retry rules: bounded attempts, bounded amplification, timeouts that nest, backoff."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

from ..graph.dependency_graph import wlabel
from ..model.severity import Severity
from ..model.units import format_duration, render_figure
from ..views.workload import Workload
from .base import Context, Issue, measured, rule

if TYPE_CHECKING:
    from ..model.policy import RetryRules


def _hop(e) -> str:
    return e.label


IMPLICIT = "implicit mesh retry: Istio's default of 2 retries"
TURN_OFF_DEFAULT = " (set retries.attempts: 0 on a VirtualService route to turn Istio's default off)"


def _tries(e) -> str:
    """How an edge's attempts add up when the caller's sidecar retries too (mesh.py); "" when only the app retries."""
    if e.implicit is not None:
        if not e.app_retry.retries:
            return f" ({IMPLICIT})"
        return f" ({e.app_retry.attempts} in the application x {e.implicit.attempts} in the sidecar; {IMPLICIT})"
    if e.mesh is None or not e.mesh.retries:
        return ""
    if not e.app_retry.retries:
        return f" (retries.attempts={e.mesh.attempts - 1} in {e.mesh.source})"
    return f" ({e.app_retry.attempts} in the application x {e.mesh.attempts} in {e.mesh.source})"


def _fix_in(e) -> str:
    """Where a hop's retry is configured: the annotation, or the VirtualService when only the mesh retries."""
    if e.mesh is not None and e.mesh.retries and not e.app_retry.retries:
        return e.mesh.source
    return "the retry annotation"


def _by_policy(edges, broken) -> list[tuple]:
    """Hops that share one broken retry policy, grouped so one annotation gives one finding."""
    groups: dict = {}
    for e in edges:
        if broken(e.retry):
            groups.setdefault(e.retry, []).append(e.label)
    return [(pol, ", ".join(labels)) for pol, labels in groups.items()]


@rule(id="GW-RTY-001", name="retry-attempts", severity=Severity.MEDIUM,
      needs_edges=True, section="retries", unit="attempts", limit_from="rules.retries.maxAttempts",
      summary="More attempts on one hop than maxAttempts.",
      remediation="Lower attempts in guywire.dev/retry (attempts counts every try, the first included), or raise "
                  "rules.retries.maxAttempts.")
def retry_attempts(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """Retries help with brief, independent failures; past a few attempts they mostly add load to a
    service that is already failing.

    The attempts on a hop are the application's (guywire.dev/retry) times the tries of the caller's
    sidecar under each of them, counted as GW-RTY-002 counts them: the mesh's declared retries, or
    Istio's default (2 retries, 3 tries) when the caller is in the mesh and no route declares any (the
    message then says "implicit mesh retry"). A retry budget does not lower this count: it bounds the
    retries of all requests together, and one request may still make every try."""
    for e in ctx.graph.out.get(w.key, ()):
        tries = e.tries.tries
        if tries > params.max_attempts:
            sidecar = e.sidecar
            yield measured("tries {hop} {observed} times{how}, above the limit of {limit}. "
                           "Set attempts={limit} or fewer{where}{hint}.",
                           observed=tries, limit=params.max_attempts, unit="attempts", hop=_hop(e),
                           how=_tries(e), where=" in total across the application and the mesh"
                           if sidecar is not None and sidecar.retries else "",
                           hint=TURN_OFF_DEFAULT if e.implicit is not None else "")


@rule(id="GW-RTY-002", name="retry-amplification", severity=Severity.HIGH,
      needs_edges=True, section="retries", unit="calls", limit_from="rules.retries.maxAmplification",
      summary="The product of attempts along a call path is above maxAmplification.",
      remediation="Retry at one layer only (usually the outermost), lower attempts on inner hops, or raise "
                  "rules.retries.maxAmplification.")
def retry_amplification(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """When every layer retries, the attempts multiply: three layers of 3 attempts send 27 calls to
    the last service for one request, exactly when it is least able to take them. The worst path
    downstream of the workload is named with the calls each hop makes of one.

    A hop's calls are the application's attempts (guywire.dev/retry) times the mesh's tries:

    - an Istio VirtualService route's `retries.attempts` (+1 for the first try);
    - else a Gateway API HTTPRoute whose `parentRefs` name the Service (the mesh, GAMMA): its rules'
      `retry.attempts` and `timeouts` (GEP-1731, https://gateway-api.sigs.k8s.io/geps/gep-1731/);
    - else a Linkerd ServiceProfile of the Service with `isRetryable` routes (it wins over Linkerd's
      annotations): retried under its `retryBudget.retryRatio`, default 0.2 plus 10 retries a
      second (https://linkerd.io/2.15/tasks/configuring-retries/#retry-budgets), with no count per
      request: counted as 2 tries, the budget capping the hop (below);
    - else Linkerd's annotations on the Service (or its HTTPRoute, which overrides them):
      `retry.linkerd.io/http` or `/grpc` turn retries on, `retry.linkerd.io/limit` is the most
      retries per request, default 1, `retry.linkerd.io/timeout` each try's timeout
      (https://linkerd.io/2/reference/retries/);
    - else, when the caller's pods run Istio's sidecar (namespace label `istio-injection=enabled` or
      `istio.io/rev`, or the pod annotation `sidecar.istio.io/inject: "true"`; `"false"` opts out)
      and no route declares `retries`: Istio's default retry policy, 2 retries (3 tries) on
      `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
      (https://istio.io/latest/docs/concepts/traffic-management/#retries). The message says
      "implicit mesh retry"; `retries: {attempts: 0}` on the route turns it off, and the policy
      switch `rules.retries.meshDefaults: false` stops guywire counting it (the graph counts it
      unless every policy turns it off).

    A retry budget caps the mesh's retries to a ratio of the requests: a ServiceProfile's, or Istio's
    DestinationRule `trafficPolicy.connectionPool.http.retryBudget.percent` (Envoy's `retry_budget.budget_percent`,
    default 20% with `minRetryConcurrency` 3,
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto).
    Under a ratio r the mesh adds at most r more calls per call, so the hop counts as
    `application attempts x min(mesh tries, 1 + r)`, and the message names the budget. A budget
    does not cap the application's own retries: to the sidecar they are new requests.

    ``guywire simulate`` counts each hop with the same function (``mesh.tries_per_hop``): the tries one
    request makes are GW-RTY-001's count, and its retry storm, the load averaged over the requests, is
    this figure wherever no timeout cuts a try (less where one does).

    A dependency needed only at start-up (``guywire.dev/depends-on: hf-mirror;startup``, a model
    download) is on no request's path and counts neither here nor in depth, cycles, timeout inversion
    or ``guywire simulate``."""
    a = ctx.graph.analysis.get(w.key)
    if a and a.amplification > params.max_amplification:
        hops = ctx.graph.amplification_hops(w.key)
        text = hops[0][0] + "".join(f" -({_hop_calls(e)})-> {name}" for name, e in hops[1:] if e is not None)
        implicit = any(e is not None and e.implicit is not None for _, e in hops)
        yield measured("can send {observed} calls to the end of one path for one request, above the limit "
                       "of {limit}: {text}. Retry at one layer only{hint}.",
                       observed=a.amplification, limit=params.max_amplification, unit="calls",
                       path=[name for name, _ in hops], text=text,
                       hint=TURN_OFF_DEFAULT if implicit else "")


def _hop_calls(e) -> str:
    """One hop of an amplification path: the calls it makes of one, and why when the mesh adds or caps them."""
    notes = []
    if e.implicit is not None:
        notes.append(IMPLICIT)
    if e.budget is not None and (e.implicit is not None or (e.mesh is not None and e.mesh.retries)):
        notes.append(f"capped by {e.budget_source}")
    return f"{render_figure(e.amp, 'calls')}x" + (f", {'; '.join(notes)}" if notes else "")


@rule(id="GW-RTY-003", name="retry-without-timeout", severity=Severity.HIGH,
      needs_edges=True, section="retries",
      switch="require_timeout",
      summary="A hop is retried without a timeout.",
      remediation="Add perTryTimeout (and an overall timeout) to guywire.dev/retry, e.g. attempts=3, "
                  "perTryTimeout=2s, timeout=7s.")
def retry_without_timeout(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """A retry waits for the failed try to fail first. Without a timeout a hung dependency holds
    each try, and the caller's callers, indefinitely."""
    edges = ctx.graph.out.get(w.key, ())
    for pol, hops in _by_policy(edges, lambda r: r.retries and not r.has_timeout):
        where = next(_fix_in(e) for e in edges if e.retry == pol)
        yield Issue(f"retries {hops} ({pol.attempts} attempts) without perTryTimeout or timeout. "
                    f"Add perTryTimeout and timeout to {where}.")


def _worst_case_parts(r) -> str:
    """How a hop's worst case adds up: attempts x per-try timeout, or the overall timeout that caps it."""
    if r.per_try_timeout is not None and (r.timeout is None or r.attempts * r.per_try_timeout <= r.timeout):
        return f"{r.attempts} x {format_duration(r.per_try_timeout)}"
    tries = "1 attempt" if r.attempts == 1 else f"{r.attempts} attempts"
    return f"{tries} within a {format_duration(r.timeout)} timeout"


@rule(id="GW-RTY-004", name="timeout-inversion", severity=Severity.HIGH,
      needs_edges=True, section="retries", unit="seconds", limit_from="the caller's per-try timeout on the hop",
      switch="forbid_timeout_inversion",
      summary="A caller gives up on a hop before the callee's own retries can finish.",
      remediation="Make each caller's per-try timeout longer than its callee's worst case (attempts x per-try "
                  "timeout downstream), or cut the callee's retries.")
def timeout_inversion(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """If a caller waits 1s per try but its callee may retry its own dependency for 3 x 2s, the
    caller times out and retries while the callee is still working: the inner retries are wasted
    and the load doubles. The callee's worst case is, over its own hops, attempts x perTryTimeout
    capped by its overall timeout. The finding's observed figure is that worst case, and its limit
    the caller's per-try timeout (its timeout when it sets no per-try timeout)."""
    for e in ctx.graph.out.get(w.key, ()):
        budget = e.retry.per_try_timeout if e.retry.per_try_timeout is not None else e.retry.timeout
        if budget is None:
            continue
        for t in e.targets:
            if t == w.key:
                continue
            worst = ctx.graph.callee_worst_case(t)
            if worst is None or budget >= worst[0]:
                continue
            wc, inner = worst
            path = [wlabel(w.key), wlabel(t), inner.label]
            implicit = ", with the implicit mesh retry of Istio's default policy" if inner.implicit else ""
            yield measured("waits {limit} per try on {callee}, but {callee} may spend {observed} on {inner} "
                           "({parts}{implicit}). Raise the per-try timeout above {observed} or cut the inner retries.",
                           observed=wc, limit=budget, unit="seconds", path=path, callee=wlabel(t),
                           inner=inner.label, parts=_worst_case_parts(inner.on_wire), implicit=implicit)
            break


@rule(id="GW-RTY-005", name="retry-without-backoff", severity=Severity.MEDIUM,
      needs_edges=True, section="retries",
      switch="require_backoff",
      summary="A hop is retried without backoff.",
      remediation="Add backoff=exponential (with jitter where the client supports it) to guywire.dev/retry.")
def retry_without_backoff(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """Immediate retries arrive while the dependency is still overloaded and synchronise callers into
    waves. Backoff spreads them out."""
    for pol, hops in _by_policy(ctx.graph.out.get(w.key, ()), lambda r: r.retries and not r.has_backoff):
        shown = pol.backoff or "not set"
        yield Issue(f"retries {hops} {pol.attempts} times with backoff {shown}. "
                    "Add backoff=exponential to the retry annotation.")


@rule(id="GW-RTY-006", name="mesh-retry-conflict", severity=Severity.MEDIUM, section="retries",
      summary="The retry annotation and the service mesh (an Istio VirtualService) both retry a hop, or set "
              "different timeouts on it.",
      remediation="Retry in one layer only: drop the retries from the application (attempts=1 in guywire.dev/retry) "
                  "or from the VirtualService route, and give the hop one timeout, in one place.")
def mesh_retry_conflict(w: Workload, params: RetryRules, ctx: Context) -> Iterator[Issue]:
    """A sidecar retries underneath the application: when both retry, every try the application
    makes becomes up to ``retries.attempts + 1`` tries on the wire, so 3 attempts in the client
    and ``attempts: 2`` in the VirtualService send 9 calls for one request, and neither
    configuration shows it. When both set a timeout, the shorter one decides and the other is dead
    configuration that misleads the next person to tune it (the route's ``timeout`` is compared
    with the application's per-try timeout, or its timeout when it sets none; the route's
    ``perTryTimeout`` nests inside and is no conflict). The retry rules judge the combined
    behaviour (attempts multiplied, the innermost per-try timeout); this rule says which of the
    two to remove: the retries without a per-try timeout (the application's when both have one,
    since the mesh adds jittered backoff), and the longer of two timeouts, which never fires."""
    for e in ctx.graph.out.get(w.key, ()):
        mesh, app = e.mesh, e.app_retry
        if mesh is None:
            continue
        if app.retries and mesh.retries:
            drop_mesh = app.per_try_timeout is not None and mesh.per_try_timeout is None
            fix = (f"Remove the retries from {mesh.source}; the application's have a per-try timeout."
                   if drop_mesh else
                   "Remove the application's retries (attempts=1 in guywire.dev/retry, and in the client); "
                   + ("the mesh's have a per-try timeout and jittered backoff." if mesh.per_try_timeout is not None
                      else "the mesh's have jittered backoff (give them a perTryTimeout)."))
            yield Issue(f"retries {e.label} in the application (attempts={app.attempts} in guywire.dev/retry) and "
                        f"in the mesh (retries.attempts={mesh.attempts - 1} in {mesh.source}): up to "
                        f"{app.attempts * mesh.attempts} tries per call. {fix}")
        app_wait = app.per_try_timeout if app.per_try_timeout is not None else app.timeout
        mesh_wait = mesh.timeout  # the route's per-request limit; its perTryTimeout nests inside, no conflict
        if app_wait is None or mesh_wait is None or abs(app_wait - mesh_wait) < 1e-9:
            continue
        what = "per try" if app.per_try_timeout is not None and app.retries else "per call"
        if app_wait > mesh_wait:
            fix = (f"Remove the longer one: the timeout in guywire.dev/retry (and the client), or make it "
                   f"{format_duration(mesh_wait)}.")
        else:
            fix = (f"Remove the longer one: the timeout in {mesh.source}, or make it {format_duration(app_wait)}.")
        longer = "application's" if app_wait > mesh_wait else "mesh's"
        yield Issue(f"waits {format_duration(app_wait)} {what} on {e.label} (guywire.dev/retry) while the mesh waits "
                    f"{format_duration(mesh_wait)} (timeout in {mesh.source}): the {longer} timeout never fires. {fix}")


def log2_ceil(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0
