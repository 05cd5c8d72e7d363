"""Istio retries and timeouts on the calls between workloads.

A call a workload makes to a host goes through its sidecar, which applies the http route of the
VirtualService whose ``hosts`` cover that host (and whose ``gateways`` are empty or include
``mesh``). The sidecar's retries happen *under* each try the application makes, in addition to
the application's own retries, so on one edge:

- attempts = application attempts x mesh attempts (Istio's ``retries.attempts`` counts retries
  only: ``attempts: 2`` is 3 tries);
- each try the callee sees waits at most the innermost per-try timeout: the route's
  ``perTryTimeout``, else its ``timeout``, else the application's per-try timeout;
- the caller's worst case on the hop is its attempts x (its per-try timeout capped by the
  sidecar's worst case, ``min(mesh attempts x perTryTimeout, route timeout)``), capped by its own
  overall timeout;
- backoff is the application's when it retries, else Envoy's (exponential with jitter).

That effective policy is ``Edge.retry``: the retry rules (attempts, amplification, timeouts,
timeout inversion, backoff) judge what really happens on the wire. ``Edge.app_retry`` keeps what
the annotation says and ``Edge.mesh`` what the mesh says, for GW-RTY-006 (mesh-retry-conflict).

Which VirtualService covers a host: an exact host (short name, ``name.ns``, ``name.ns.svc[.cluster.local]``
or an external host name) before ``*.ns.svc.cluster.local`` before other wildcards; among equals,
the one in the caller's namespace, then the one in the callee's, then by namespace and name.
Short names are read in the VirtualService's own namespace, as Istio reads them. A
VirtualService ``exportTo`` that hides it from the caller's namespace does not apply.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, replace
from typing import Iterable

from ..model.units import CALLS_CAP, saturate
from ..views.annotations import DNS_LABEL, RetryPolicy
from ..views.workload import ENVOY_BACKOFF, MeshRetry, MeshRoute

MKey = tuple[str, str, str]  # (namespace, kind, name)
Host = tuple[str, object]  # ("svc", (ns, name)) | ("ns", ns) | ("ext", host) | ("glob", pattern)


def classify_host(host: str, own_ns: str) -> list[Host]:
    """What one entry of a VirtualService's ``hosts`` names. ``name.ns`` is ambiguous (a Service in
    namespace ns, or an outside host such as example.com) and is read as both."""
    h = host.strip().lower().rstrip(".")
    if not h:
        return []
    if "*" in h:
        parts = h.split(".")
        if parts[0] == "*" and len(parts) >= 3 and parts[2] == "svc" and DNS_LABEL.match(parts[1]):
            return [("ns", parts[1])]
        return [("glob", h)]
    parts = h.split(".")
    if len(parts) == 1:
        key = (own_ns, parts[0])
    elif len(parts) == 2:
        key = (parts[1], parts[0])
    elif len(parts) >= 3 and parts[2] == "svc":
        key = (parts[1], parts[0])
    else:
        return [("ext", h)]
    if not (DNS_LABEL.match(key[0]) and DNS_LABEL.match(key[1])):
        return [("ext", h)]
    return [("svc", key), ("ext", h)] if len(parts) == 2 else [("svc", key)]


def _fqdn(ns: str, name: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


class MeshIndex:
    """VirtualServices and DestinationRules by the hosts they cover."""

    def __init__(self, routes: Iterable[MeshRoute] = ()):
        self.routes: dict[MKey, MeshRoute] = {}
        self.exact: dict[tuple[str, object], set[MKey]] = {}  # ("svc", (ns, name)) or ("ext", host)
        self.ns_wild: dict[str, set[MKey]] = {}
        self.globs: dict[str, set[MKey]] = {}
        for r in routes:
            self.add(r)

    def hosts(self, route: MeshRoute) -> list[Host]:
        return [h for x in route.hosts for h in classify_host(x, route.namespace)]

    def add(self, route: MeshRoute) -> None:
        self.remove(route.key)
        self.routes[route.key] = route
        for kind, value in self.hosts(route):
            if kind == "ns":
                self.ns_wild.setdefault(str(value), set()).add(route.key)
            elif kind == "glob":
                self.globs.setdefault(str(value), set()).add(route.key)
            else:
                self.exact.setdefault((kind, value), set()).add(route.key)

    def remove(self, key: MKey) -> MeshRoute | None:
        route = self.routes.pop(key, None)
        if route is None:
            return None
        for kind, value in self.hosts(route):
            index = self.ns_wild if kind == "ns" else self.globs if kind == "glob" else self.exact
            k = value if kind in ("ns", "glob") else (kind, value)
            found = index.get(k)  # type: ignore[call-overload]
            if found is not None:
                found.discard(key)
                if not found:
                    del index[k]  # type: ignore[arg-type]
        return route

    def route_for(self, namespace: str, name: str, external: bool, caller_ns: str,
                  kind: str = "VirtualService") -> MeshRoute | None:
        """The route the caller's sidecar applies to calls to the Service ``namespace/name`` (or to the
        external host ``name``), or None."""
        if external:
            tiers = [self.exact.get(("ext", name), set()),
                     {k for pat, keys in self.globs.items() if fnmatch.fnmatchcase(name, pat) for k in keys}]
        else:
            fqdn = _fqdn(namespace, name)
            tiers = [self.exact.get(("svc", (namespace, name)), set()), self.ns_wild.get(namespace, set()),
                     {k for pat, keys in self.globs.items() if fnmatch.fnmatchcase(fqdn, pat) for k in keys}]
        for tier in tiers:
            found = [self.routes[k] for k in tier if k[1] == kind]
            found = [r for r in found if r.visible_from(caller_ns) and (kind != "VirtualService" or r.sidecars)]
            if found:
                return min(found, key=lambda r: (r.namespace != caller_ns, r.namespace != namespace,
                                                 r.namespace, r.name))
        return None

    def covers(self, route: MeshRoute, namespace: str, name: str, external: bool) -> bool:
        """Whether ``route`` names the host at all (before precedence)."""
        for kind, value in self.hosts(route):
            if external:
                if (kind == "ext" and value == name) or (kind == "glob" and fnmatch.fnmatchcase(name, str(value))):
                    return True
            elif (kind == "svc" and value == (namespace, name)) or (kind == "ns" and value == namespace) or (
                    kind == "glob" and fnmatch.fnmatchcase(_fqdn(namespace, name), str(value))):
                return True
        return False


def _min(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def call_count(x: float) -> float:
    """A call count, without float noise (1.2 x 3 = 3.6, not 3.5999999999999996); whole numbers as ints; at most
    ``model.units.CALLS_CAP`` (retries multiply along a path: the count saturates rather than overflow)."""
    if isinstance(x, int) or not math.isfinite(x) or x >= CALLS_CAP:
        return saturate(x)
    r = round(x, 6)
    return int(r) if r.is_integer() else r


@dataclass(frozen=True, slots=True)
class HopTries:
    """How one call on a hop reaches the callee: ``app`` tries by the application, each through the caller's
    sidecar, which tries ``sidecar`` times (its declared retries, or Istio's default), under a retry budget of
    ``budget`` (a ratio of extra requests) on the callee when one applies.

    ``tries`` is the most tries one request can make (GW-RTY-001, simulate's tries on a hop): a budget bounds
    the retries of all requests together, not those of one, so one request may still use every try. ``calls``
    is what one call becomes, on average over the requests, while every try fails (GW-RTY-002's factor,
    simulate's load): a budget lets the sidecar add at most ``budget`` calls to each call it gets, so the hop
    makes ``app x min(sidecar, 1 + budget)``. The application's own retries are new requests to the sidecar:
    no budget caps them."""

    app: int = 1
    sidecar: int = 1
    budget: float | None = None

    @property
    def tries(self) -> int:
        return self.app * self.sidecar

    @property
    def sidecar_calls(self) -> float:
        """The sidecar's calls per call it gets: its tries, at most ``1 + budget``."""
        return self.sidecar if self.budget is None else min(self.sidecar, 1 + self.budget)

    @property
    def calls(self) -> float:
        return call_count(self.app * self.sidecar_calls)

    def expected(self, q: float) -> tuple[float, float]:
        """(expected calls, chance the hop fails) for one call when each try fails independently with chance
        ``q``. The sidecar's loop of ``sidecar`` tries makes ``1 + q + ... + q^(sidecar-1)`` calls and fails
        with ``q^sidecar``; a budget that this exceeds lets only a share f of the loops retry, f such that the
        loops average ``1 + budget`` calls, and the others fail with ``q``. The application repeats the loop
        while it fails, ``app`` times at most. Without a budget this is ``1 + q + ... + q^(tries-1)`` and
        ``q^tries``, the tries made one after the other."""
        loop_calls = sum(q ** i for i in range(self.sidecar))
        loop_fails = q ** self.sidecar
        if self.budget is not None and loop_calls > 1 + self.budget:
            share = self.budget / (loop_calls - 1)
            loop_calls, loop_fails = 1 + self.budget, (1 - share) * q + share * loop_fails
        app_loops = sum(loop_fails ** i for i in range(self.app))
        return loop_calls * app_loops, loop_fails ** self.app


def tries_per_hop(app: RetryPolicy, sidecar: MeshRetry | None, budget: float | None = None) -> HopTries:
    """The one count of a hop's tries behind GW-RTY-001/002 (``Edge.tries``, through :func:`effective_retry`)
    and ``guywire simulate`` (which makes the same count of the tries the timeouts leave): the application's
    attempts, each through the caller's sidecar, which tries ``sidecar.attempts`` times (the route's retries,
    or Istio's default: :func:`sidecar_of`), under the callee's retry budget."""
    return HopTries(app=app.attempts, sidecar=sidecar.attempts if sidecar is not None else 1, budget=budget)


def sidecar_of(mesh: MeshRetry | None, implicit: MeshRetry | None) -> MeshRetry | None:
    """The retry loop the caller's sidecar runs on a call: the mesh's declared one, or, when Istio's default
    applies (``implicit``, the route declares no retries), that default with the route's timeout."""
    if implicit is None:
        return mesh
    if mesh is None:
        return implicit
    return replace(implicit, per_try_timeout=mesh.per_try_timeout, timeout=mesh.timeout)


def sidecar_retry(app: RetryPolicy, mesh: MeshRetry | None) -> RetryPolicy | None:
    """The sidecar's own retry loop under one application try (its tries, per-try timeout, the route
    timeout, cut by the application's per-try timeout), or None when no sidecar route applies."""
    if mesh is None or (not mesh.retries and mesh.timeout is None and mesh.per_try_timeout is None):
        return None
    return RetryPolicy(attempts=mesh.attempts, per_try_timeout=mesh.per_try_timeout,
                       timeout=_min(mesh.timeout, app.per_try_timeout),
                       backoff=ENVOY_BACKOFF if mesh.retries else None)


def effective_retry(app: RetryPolicy, mesh: MeshRetry | None) -> RetryPolicy:
    """What happens on the wire when the application retries ``app`` through a sidecar doing ``mesh``."""
    if mesh is None or (not mesh.retries and mesh.timeout is None and mesh.per_try_timeout is None):
        return app
    per_app_try = _min(app.per_try_timeout, mesh.worst_case())
    total = _min(app.attempts * per_app_try if per_app_try is not None else None, app.timeout)
    if app.retries:
        backoff = app.backoff
    else:
        backoff = ENVOY_BACKOFF if mesh.retries else app.backoff
    return RetryPolicy(attempts=tries_per_hop(app, mesh).tries,
                       per_try_timeout=_min(mesh.per_try_timeout, mesh.timeout, app.per_try_timeout),
                       timeout=total, backoff=backoff)


__all__ = ["HopTries", "MeshIndex", "call_count", "classify_host", "effective_retry", "sidecar_of", "sidecar_retry",
           "tries_per_hop"]
