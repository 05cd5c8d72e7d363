"""What if one workload fails? Propagate the failure through the dependency graph, hop by hop.

Pure: reads a :class:`~guywire.graph.dependency_graph.Graph`, does no I/O, reads no clock. The arithmetic is
deterministic worst case; ``--error-rate`` adds an expected case.

The failure (on the *target*)
    ``down``        the target never answers (a hung or black-holed service). Each try waits for
                    the caller's per-try timeout, its overall timeout, or forever. A refused
                    connection fails sooner: latencies are then shorter, the calls the same.
    ``latency D``   the target answers correctly, D late.
    ``error-rate p``each call to the target fails at once with probability p. Worst case: every
                    call fails. Expected case: calls fail independently.

How a caller treats one hop (its ``guywire.dev/retry`` policy: attempts A, per-try timeout P,
overall timeout T, backoff)
    * A try waits for the callee's answer, up to P. A try that gets an error or times out is
      retried until A tries are made or T has passed; T also cuts the try in flight.
    * Tries of one request behave alike (deterministic): if the first succeeds, there is no retry.
    * Through a sidecar, each application try is itself the sidecar's retry loop: the mesh route's
      retries (an Istio VirtualService, a Gateway API HTTPRoute, Linkerd), or Istio's default of 2
      retries when the caller is in Istio's mesh and no route declares any (the implicit mesh retry),
      cut by the route's per-try timeout, its timeout and the application's per-try timeout. The hop
      is counted by ``mesh.tries_per_hop``, the function behind ``guywire check``'s GW-RTY-001 and
      GW-RTY-002, with the tries the timeouts leave: ``tries`` (the application's times the
      sidecar's) is never more than GW-RTY-001's count, and equal when no timeout cuts a try.
    * A retry budget on the callee (a DestinationRule's ``retryBudget``, a Linkerd ServiceProfile's
      ``retryBudget``) bounds the retries of all requests together, not those of one. The time a
      hop takes is one request's worst case: it may still make every try. Its load (``calls``, which
      the retry storm and the path multiply) is the average over the requests while every try fails:
      the sidecar adds at most ``ratio`` calls to each call it gets, so the hop makes the
      application's tries x min(the sidecar's tries, 1 + ratio), GW-RTY-002's factor for the hop. The
      worst-case load therefore equals ``guywire check``'s amplification when no timeout cuts a try,
      and is below it otherwise. The expected case (``--error-rate``) lets a share of the sidecar's
      retry loops through, the share that averages ``1 + ratio`` calls (``HopTries.expected``).
    * Backoff before try k (k >= 2), with base ``BACKOFF_BASE`` = 100ms and cap ``BACKOFF_CAP`` = 10s:
      exponential (and the jitter variants, at their largest delay): base x 2^(k-2), capped;
      linear: base x (k-1), capped; fixed (or a duration, which the annotation parser reads as
      fixed): base; none or unset: no delay. These are assumptions: real clients differ (Envoy
      starts at 25ms, gRPC at 1s); pass other values to :func:`simulate` to see their effect.

How a workload answers while the failure lasts
    * Every dependency is needed: a failed hop fails the request, and calls are made one after
      the other, so the time spent on affected hops adds up. Unaffected hops add nothing: latencies
      are the extra time the failure causes.
    * No cancellation: when a caller gives up on a try, the callee still finishes its own tries
      (no deadline propagation). That is the worst case for load; with propagated deadlines (gRPC)
      the inner layers stop sooner.
    * A hop to a Service with several backends may land on the failing one every time (worst case).
    * A workload that waits on a hop without any timeout never answers ("unbounded"): its callers
      wait until their own timeouts, or forever if none has one.

Load (the retry storm)
    Calls per request at an entry point: the product of the tries on each hop of a path, summed
    over paths. Entry points are the workloads nobody calls (one member stands for a cycle
    nobody outside calls), or those given with ``--entry``.

Cycles
    The members of a cycle are taken in the order the failure reaches them; a member's call to a
    member the failure has not reached yet is not followed (a request is assumed not to go round
    the cycle twice). Those calls are listed in ``Simulation.cycle_edges``, and figures on a cycle
    are a lower bound. Every step is bounded, so a cycle never loops.

Blast radius
    :func:`blast_radius` answers "what fails if this workload is down" for every workload at once:
    with every dependency needed and no timeout able to save a request from a down service, that is
    every workload that reaches it (its callers, direct and indirect). It is computed over the
    strongly connected components with Python integers as bitsets: O((V + E) x V / 64) word
    operations, about 0.25 s for 10,000 workloads whose chains run 5,000 hops deep (fine up to
    tens of thousands). :func:`simulate` for one target is linear in the workloads and edges that
    reach the target (0.8 s for 10,000 of them).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

from ..views.annotations import RetryPolicy
from .dependency_graph import Edge, Graph, WKey, strongly_connected, wlabel
from .mesh import HopTries, call_count, sidecar_retry
from ..model.units import format_duration, saturate

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
MODES = ("down", "latency", "error-rate")

# Answer states, best to worst.
OK, SLOW, ERROR, HANG = "ok", "slow", "error", "hang"
_RANK = {OK: 0, SLOW: 1, ERROR: 2, HANG: 3}


@dataclass(frozen=True, slots=True)
class Failure:
    """The failure injected on the target."""

    mode: str  # "down" | "latency" | "error-rate"
    latency: float = 0.0  # seconds, for "latency"
    error_rate: float = 1.0  # probability, for "error-rate"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"failure mode {self.mode!r} is not one of {', '.join(MODES)}.")
        if self.mode == "latency" and not self.latency > 0:
            raise ValueError("a latency failure needs a latency above zero, such as 5s.")
        if self.mode == "error-rate" and not 0 < self.error_rate <= 1:
            raise ValueError(f"an error rate is a fraction above 0 and at most 1, got {self.error_rate}.")

    def describe(self) -> str:
        if self.mode == "down":
            return "is down (never answers)"
        if self.mode == "latency":
            return f"answers {format_duration(self.latency)} late"
        return f"fails {_pct(self.error_rate)} of calls"


@dataclass(frozen=True, slots=True)
class Answer:
    """How a workload answers one request while the failure lasts."""

    state: str  # ok | slow | error | hang
    seconds: float | None = 0.0  # when it answers; None: never (unbounded)

    @property
    def failed(self) -> bool:
        return self.state in (ERROR, HANG)

    @property
    def affected(self) -> bool:
        return self.state != OK


UNAFFECTED = Answer(OK, 0.0)


@dataclass(slots=True)
class Hop:
    """One call from ``source`` to ``target`` during the failure, as the caller sees it."""

    source: WKey
    target: WKey
    edge: Edge
    tries: int  # tries made per request to the caller (worst case)
    outcome: str  # ok | slow | error | timeout | hang
    seconds: float | None  # time the caller spends on the hop; None: unbounded
    each_try: str  # how each try ends: "answered", "error", "per-try timeout", "no answer"
    cut_by_timeout: bool = False  # the overall timeout ended it
    calls: float = 1  # calls per request to the caller while every try fails, averaged: tries under a retry budget
    distance: int = 0  # hops from the target: 1 for a direct caller
    expected_tries: float | None = None  # error-rate: expected calls per request (tries; fewer under a budget)
    failure_probability: float | None = None  # error-rate: chance the hop fails for one request
    sidecar_tries: int | None = None  # with a sidecar retry loop: its tries under each application try

    @property
    def timed_out(self) -> bool:
        return self.outcome == "timeout"

    @property
    def failed(self) -> bool:
        return self.outcome in ("error", "timeout", "hang")


@dataclass(slots=True)
class EntryResult:
    """What a request at one entry point meets."""

    key: WKey
    answer: Answer
    calls: float  # calls reaching the target per request, worst case
    healthy_calls: int  # the same with nothing failing (one try per hop)
    path: list[tuple[WKey, float]]  # the path sending the most calls: (workload, calls on the hop into it)
    expected_calls: float | None = None
    failure_probability: float | None = None

    @property
    def amplification(self) -> float:
        return self.calls / self.healthy_calls if self.healthy_calls else 0.0


@dataclass(slots=True)
class Simulation:
    target: WKey
    failure: Failure
    entries: list[EntryResult]
    answers: dict[WKey, Answer]  # every workload on a path to the target, the target included
    hops: list[Hop]  # every call on a path to the target, nearest to the failure first
    load: dict[WKey, float]  # calls per request, summed over the entry points, worst case
    healthy_load: dict[WKey, int]
    expected_load: dict[WKey, float] = field(default_factory=dict)
    failure_probability: dict[WKey, float] = field(default_factory=dict)
    cycle_edges: list[tuple[WKey, WKey]] = field(default_factory=list)  # calls round a cycle not followed
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP

    @property
    def broken_entries(self) -> list[EntryResult]:
        return [e for e in self.entries if e.answer.failed]

    def hop(self, source: WKey, target: WKey) -> Hop | None:
        for h in self.hops:
            if h.source == source and h.target == target:
                return h
        return None


# ----- one hop -----------------------------------------------------------------------------------
def backoff_delay(backoff: str | None, k: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """The delay before try ``k`` (k >= 2) under the documented assumptions."""
    if k < 2 or not backoff or backoff == "none":
        return 0.0
    if backoff == "fixed":
        return min(base, cap)
    if backoff == "linear":
        return min(base * (k - 1), cap)
    # exponential, jitter, exponential-jitter, decorrelated-jitter: the largest delay
    return min(base * 2.0 ** min(k - 2, 60), cap)


def _r(x: float) -> float:
    return round(x, 6)


def call_hop(policy: RetryPolicy, answer: Answer, *, base: float = BACKOFF_BASE,
             cap: float = BACKOFF_CAP) -> tuple[int, str, float | None, str, bool]:
    """(tries, outcome, seconds, each_try, cut_by_timeout) of one hop whose callee answers ``answer``."""
    if answer.state == OK:
        return 1, OK, 0.0, "answered", False
    per_try, overall = policy.per_try_timeout, policy.timeout
    respond = answer.seconds
    if respond is None:
        try_len, fails, each = per_try, True, ("per-try timeout" if per_try is not None else "no answer")
    elif per_try is not None and respond > per_try:
        try_len, fails, each = per_try, True, "per-try timeout"
    else:
        try_len, fails, each = respond, answer.failed, ("error" if answer.failed else "answered")
    if not fails:
        if overall is not None and respond > overall:
            return 1, "timeout", _r(overall), "answered", True
        return 1, (SLOW if respond > 0 else OK), _r(respond), each, False
    t, tries, cut = 0.0, 0, False
    for k in range(1, policy.attempts + 1):
        if k > 1:
            t += backoff_delay(policy.backoff, k, base, cap)
        if overall is not None and t >= overall:
            break  # no time left to start another try
        tries += 1
        if try_len is None:  # waits on a callee that never answers, with no per-try timeout
            if overall is None:
                return tries, HANG, None, each, False
            return tries, "timeout", _r(overall), each, True
        end = t + try_len
        if overall is not None and end > overall:
            return tries, "timeout", _r(overall), each, True
        t = end
    return tries, ("timeout" if each == "per-try timeout" else ERROR), _r(t), each, cut


def call_edge(e: Edge, answer: Answer, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP
              ) -> tuple[HopTries, str, float | None, str, bool, int | None]:
    """:func:`call_hop` for an edge, the caller's sidecar included: under each application try the sidecar
    makes its own tries (its declared retries or Istio's default, cut by its per-try timeout, the route
    timeout and the application's per-try timeout), and the application retries what the sidecar returns.
    The first item is the edge's :func:`~guywire.graph.mesh.tries_per_hop` (``Edge.tries``, what GW-RTY-001
    and GW-RTY-002 count) with the tries the timeouts leave; the last, the sidecar's tries per application
    try (None without a sidecar loop)."""
    inner = sidecar_retry(e.app_retry, e.sidecar)
    if inner is None:
        n, outcome, secs, each, cut = call_hop(e.retry, answer, base=base, cap=cap)
        return replace(e.tries, app=n, sidecar=1), outcome, secs, each, cut, None
    n_in, out_in, secs_in, each_in, _ = call_hop(inner, answer, base=base, cap=cap)
    if out_in == OK:
        return replace(e.tries, app=1, sidecar=1), OK, 0.0, "answered", False, None
    state = SLOW if out_in == SLOW else HANG if secs_in is None else ERROR
    n_out, outcome, secs, each, cut = call_hop(e.app_retry, Answer(state, secs_in), base=base, cap=cap)
    tries = replace(e.tries, app=n_out, sidecar=n_in)
    if outcome == SLOW:
        return tries, SLOW, secs, each, cut, n_in
    return tries, outcome, secs, (each_in if each == "error" else each), cut, n_in


# ----- graph helpers -----------------------------------------------------------------------------
def _components(nodes: Iterable[WKey], succ: Callable[[WKey], list[WKey]]) -> list[list[WKey]]:
    """Strongly connected components, callees first, each sorted."""
    return [sorted(comp) for comp in strongly_connected(nodes, succ)]


def _succ(graph: Graph, key: WKey, within: set[WKey] | None = None) -> list[WKey]:
    seen: dict[WKey, None] = {}
    for e in graph.out.get(key, ()):
        for t in e.targets:
            if t in graph.out and (within is None or t in within):
                seen[t] = None
    return list(seen)


def entry_points(graph: Graph, within: set[WKey] | None = None) -> list[WKey]:
    """Workloads nobody calls (within ``within``), and one member for each cycle nobody outside it calls."""
    nodes = sorted(within if within is not None else graph.out)
    comps = _components(nodes, lambda k: _succ(graph, k, within))
    out = []
    for comp in comps:
        members = set(comp)
        callers = {c for m in comp for c in graph.callers.get(m, ()) if within is None or c in within}
        if not callers - members:
            out.append(comp[0])
    return sorted(out)


def find_workload(graph: Graph, text: str) -> WKey:
    """Resolve NAME, NAME.NS or NS/NAME to one workload (a Service name leads to its only backend)."""
    raw = text.strip()
    if "/" in raw:
        ns, _, name = raw.partition("/")
    elif "." in raw:
        name, _, ns = raw.partition(".")
        ns = ns.split(".")[0]
    else:
        name, ns = raw, None
    name = name.lower()
    found = sorted(k for k in graph.out if k[2] == name and (ns is None or k[0] == ns))
    if not found:
        backends = sorted({b for (sns, sname), bs in graph.backends.items()
                           if sname == name and (ns is None or sns == ns) for b in bs})
        found = backends
    if not found:
        where = f" in namespace {ns}" if ns else ""
        raise ValueError(f"no workload or Service named {name}{where} among the inputs.")
    if len(found) > 1:
        names = ", ".join(f"{k[1]} {wlabel(k)}" for k in found[:6])
        raise ValueError(f"{raw} names {len(found)} workloads ({names}); write NAME.NAMESPACE or NAMESPACE/NAME.")
    return found[0]


# ----- the simulation ----------------------------------------------------------------------------
def _worse(a: Answer, b: Answer) -> Answer:
    return a if _RANK[a.state] >= _RANK[b.state] else b


def simulate(graph: Graph, target: WKey, failure: Failure, entries: Iterable[WKey] | None = None, *,
             backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP) -> Simulation:
    """Propagate ``failure`` of ``target`` to every workload that reaches it and to the entry points."""
    if target not in graph.out:
        raise ValueError(f"{wlabel(target)} is not a workload among the inputs.")
    region = graph.ancestors({target})
    if entries:
        chosen = sorted(set(entries))
        for e in chosen:
            if e not in region:
                raise ValueError(f"{wlabel(e)} does not call {wlabel(target)}, directly or through others.")
        reach: set[WKey] = set(chosen)
        todo = list(chosen)
        while todo:
            for t in _succ(graph, todo.pop(), region):
                if t not in reach:
                    reach.add(t)
                    todo.append(t)
        region = reach
        entry_keys = chosen
    else:
        entry_keys = entry_points(graph, region)

    injected = {"down": Answer(HANG, None), "latency": Answer(SLOW, failure.latency),
                "error-rate": Answer(ERROR, 0.0)}[failure.mode]
    answers: dict[WKey, Answer] = {}
    hops: dict[tuple[WKey, WKey], Hop] = {}
    order: list[WKey] = []  # finalisation order: every followed hop points to an earlier workload
    cycle_edges: list[tuple[WKey, WKey]] = []
    q_of: dict[WKey, float] = {}  # error-rate: chance a request to the workload fails
    p = failure.error_rate if failure.mode == "error-rate" else None

    def finalise(key: WKey, followable: Callable[[WKey], bool]) -> None:
        if key == target:
            answers[key] = injected
            if p is not None:
                q_of[key] = p
            order.append(key)
            return
        total, state, unbounded = 0.0, OK, False
        ok_prob = 1.0
        for e in graph.out.get(key, ()):
            worst: Hop | None = None
            for t in e.targets:
                if t not in region:
                    continue  # cannot reach the failure: unaffected
                if not followable(t):
                    cycle_edges.append((key, t))
                    continue
                tries, outcome, secs, each, cut, inner = call_edge(e, answers[t], base=backoff_base, cap=backoff_cap)
                h = Hop(source=key, target=t, edge=e, tries=tries.tries, calls=tries.calls, outcome=outcome,
                        seconds=secs, each_try=each, cut_by_timeout=cut, sidecar_tries=inner)
                if p is not None:
                    h.expected_tries, h.failure_probability = tries.expected(q_of.get(t, 0.0))
                hops[(key, t)] = h
                if worst is None or _hop_rank(h) > _hop_rank(worst):
                    worst = h
            if worst is None or worst.outcome == OK:
                continue
            if worst.seconds is None:
                unbounded = True
            else:
                total += worst.seconds
            state = max(state, {SLOW: SLOW, HANG: HANG}.get(worst.outcome, ERROR), key=_RANK.__getitem__)
            if worst.failure_probability is not None:
                ok_prob *= 1 - worst.failure_probability
        answers[key] = Answer(state, None if unbounded else _r(total))
        if p is not None:
            q_of[key] = 1 - ok_prob
        order.append(key)

    comps = _components(sorted(region), lambda k: _succ(graph, k, region))
    for comp in comps:
        members = set(comp)
        cyclic = len(comp) > 1 or comp[0] in _succ(graph, comp[0])
        if not cyclic:
            finalise(comp[0], lambda t: t in answers)
            continue
        # a cycle: take members in the order the failure reaches them
        def external_affected(m: WKey) -> bool:
            if m == target:
                return True
            return any(t not in members and t in answers and answers[t].affected
                       for e in graph.out.get(m, ()) for t in e.targets)

        queue = deque(m for m in comp if external_affected(m))
        queued = set(queue)
        while queue:
            m = queue.popleft()
            finalise(m, lambda t: t in answers)
            for c in sorted(graph.callers.get(m, ())):
                if c in members and c not in queued:
                    queued.add(c)
                    queue.append(c)
        for m in comp:  # members the failure does not reach
            if m not in answers:
                finalise(m, lambda t: t in answers)

    # distance from the target, over followed hops
    callers_of: dict[WKey, list[Hop]] = {}
    for h in hops.values():
        callers_of.setdefault(h.target, []).append(h)
    dist = {target: 0}
    todo = deque([target])
    while todo:
        k = todo.popleft()
        for h in sorted(callers_of.get(k, ()), key=lambda h: h.source):
            if h.source not in dist:
                dist[h.source] = dist[k] + 1
                todo.append(h.source)
    for h in hops.values():
        h.distance = dist.get(h.target, 0) + 1

    # Load, linear in the followed hops. Bottom-up: calls reaching the target per request at each workload,
    # and the path that sends the most. Top-down: calls on every workload, one request at each entry point.
    out_hops: dict[WKey, list[Hop]] = {}
    for h in sorted(hops.values(), key=lambda h: h.target):
        out_hops.setdefault(h.source, []).append(h)
    down: dict[WKey, float] = {target: 1}
    down_ok: dict[WKey, int] = {target: 1}
    down_exp: dict[WKey, float] = {target: 1.0}
    best: dict[WKey, tuple[float, Hop | None]] = {target: (1, None)}
    for k in order:  # callees first
        if k == target:
            continue
        for h in out_hops.get(k, ()):
            if h.target not in down:
                continue
            down[k] = call_count(down.get(k, 0) + h.calls * down[h.target])
            down_ok[k] = saturate(down_ok.get(k, 0) + down_ok[h.target])
            down_exp[k] = saturate(down_exp.get(k, 0.0) + (h.expected_tries or 0.0) * down_exp[h.target])
            product = call_count(h.calls * best[h.target][0])
            if k not in best or product > best[k][0]:
                best[k] = (product, h)
    load: dict[WKey, float] = {e: 1 for e in entry_keys}
    healthy: dict[WKey, int] = {e: 1 for e in entry_keys}
    expected: dict[WKey, float] = {e: 1.0 for e in entry_keys} if p is not None else {}
    for k in reversed(order):  # callers first
        if k not in load:
            continue
        for h in out_hops.get(k, ()):
            load[h.target] = call_count(load.get(h.target, 0) + load[k] * h.calls)
            healthy[h.target] = saturate(healthy.get(h.target, 0) + healthy[k])
            if p is not None:
                expected[h.target] = saturate(expected.get(h.target, 0.0) + expected[k] * (h.expected_tries or 0.0))
    results: list[EntryResult] = []
    for entry in entry_keys:
        path: list[tuple[WKey, float]] = []
        if entry in best:
            path.append((entry, 1))
            step = best[entry][1]
            while step is not None:
                path.append((step.target, step.calls))
                step = best[step.target][1]
        results.append(EntryResult(key=entry, answer=answers.get(entry, UNAFFECTED), calls=down.get(entry, 0),
                                   healthy_calls=down_ok.get(entry, 0), path=path,
                                   expected_calls=down_exp.get(entry, 0.0) if p is not None else None,
                                   failure_probability=q_of.get(entry) if p is not None else None))
    ordered_hops = sorted(hops.values(), key=lambda h: (h.distance, h.target, h.source))
    return Simulation(target=target, failure=failure, entries=results, answers=answers, hops=ordered_hops,
                      load=load, healthy_load=healthy, expected_load=expected, failure_probability=q_of,
                      cycle_edges=sorted(set(cycle_edges)), backoff_base=backoff_base, backoff_cap=backoff_cap)


def _hop_rank(h: Hop) -> tuple:
    state = {OK: 0, SLOW: 1, ERROR: 2, "timeout": 2, HANG: 3}[h.outcome]
    return (state, math.inf if h.seconds is None else h.seconds, h.tries)


# ----- blast radius ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlastRadius:
    """What fails when one workload is down."""

    workloads: int  # other workloads that fail: every workload that calls it, directly or through others
    entry_points: int  # entry points that fail, the workload itself included when it is one
    entries: tuple[WKey, ...] = ()  # the first of them, sorted (at most ``BLAST_NAMES``)

    def annotation(self) -> str:
        """The value for the guywire.dev/blast-radius annotation, e.g. ``entryPoints=2,workloads=5``."""
        return f"entryPoints={self.entry_points},workloads={self.workloads}"

    def describe(self) -> str:
        ep = f"{self.entry_points} entry point{'s' if self.entry_points != 1 else ''}"
        wl = f"{self.workloads} workload{'s' if self.workloads != 1 else ''}"
        return f"{ep} and {wl} fail"


BLAST_NAMES = 5


class HasGraph(Protocol):
    """Whatever holds a dependency graph, such as an evaluated ``engine.evaluator.Engine`` (the graph layer
    imports nothing from the engine above it)."""

    graph: Graph


def blast_radius(source: "HasGraph | Graph") -> dict[WKey, BlastRadius]:
    """For every workload: how many entry points and workloads fail when it is down (see the module doc)."""
    graph: Graph = source if isinstance(source, Graph) else source.graph
    keys = sorted(graph.out)
    # Workload k is bit idx[k]. Masks are made when needed, not stored: at 10,000 workloads a stored
    # mask per workload and per component was ~13 MB of big ints.
    idx = {k: i for i, k in enumerate(keys)}
    comps = _components(keys, lambda k: _succ(graph, k))
    comp_of = {m: i for i, comp in enumerate(comps) for m in comp}

    def members(j: int) -> int:
        comp = comps[j]
        return 1 << idx[comp[0]] if len(comp) == 1 else sum(1 << idx[m] for m in comp)

    entries = set(entry_points(graph))
    entry_mask = sum(1 << idx[k] for k in entries)
    above = [0] * len(comps)  # strict ancestors of each component
    for i in range(len(comps) - 1, -1, -1):  # callers before callees
        acc = 0
        for m in comps[i]:
            for c in graph.callers.get(m, ()):
                j = comp_of.get(c)
                if j is not None and j != i:
                    acc |= above[j] | members(j)
        above[i] = acc
    out: dict[WKey, BlastRadius] = {}
    for k in keys:
        i = comp_of[k]
        comp = comps[i]
        own = 1 << idx[k]
        cyclic = len(comp) > 1 or k in graph.callers.get(k, ())
        failing = above[i] | ((members(i) & ~own) if cyclic else 0)
        failing_entries = (failing & entry_mask) | (own if k in entries else 0)
        names: list[WKey] = []
        rest = failing_entries
        while rest and len(names) < BLAST_NAMES:
            low = rest & -rest
            names.append(keys[low.bit_length() - 1])
            rest ^= low
        out[k] = BlastRadius(workloads=failing.bit_count(), entry_points=failing_entries.bit_count(),
                             entries=tuple(names))
    return out


def top_blast_radii(radii: dict[WKey, BlastRadius], n: int = 5) -> list[tuple[WKey, BlastRadius]]:
    """The ``n`` largest blast radii that break anything besides the workload itself, largest first."""
    ranked = sorted(((k, r) for k, r in radii.items() if r.workloads),
                    key=lambda kr: (-kr[1].entry_points, -kr[1].workloads, kr[0]))
    return ranked[:n]


def _pct(x: float) -> str:
    v = x * 100
    return f"{v:.0f}%" if abs(v - round(v)) < 1e-9 else f"{v:.3g}%"


__all__ = ["Answer", "BlastRadius", "EntryResult", "Failure", "Hop", "Simulation", "backoff_delay", "blast_radius",
           "call_edge", "call_hop", "entry_points", "find_workload", "simulate", "top_blast_radii"]
