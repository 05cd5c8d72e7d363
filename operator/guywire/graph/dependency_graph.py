"""The dependency graph between workloads and Services.

Nodes are workloads. An edge is one dependency of a workload, declared in
``guywire.dev/depends-on`` or inferred from an environment variable that names an
in-cluster Service; a Service resolves to the workloads its selector matches, a
name that is no Service to the workload of that name. Edges to hosts outside the
cluster, and to names that resolve to nothing, are leaves. An edge's retry policy
is the caller's annotation combined with the Istio VirtualService route its sidecar
applies to the host, when there is one (mesh.py).

Analysis (cycles, depth, amplification) is linear in nodes + edges: strongly
connected components by an iterative Tarjan, then depth and worst retry
amplification over the condensation in reverse topological order. Edges inside a
component are left out of depth and amplification; the cycle is its own finding.
The graph can be changed one object at a time: only the changed workloads and
their ancestors are analysed again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..views.annotations import DNS_LABEL, NO_RETRY, DependencyRef, RetryPolicy
from ..speed.gcpause import paused_gc
from ..views.inventory import Inventory
from .mesh import HopTries, MeshIndex, call_count, effective_retry, sidecar_of, tries_per_hop
from .overlay import overlaid
from ..model.selectors import labels_match
from ..views.workload import MeshRetry, MeshRoute, Service, Workload

WKey = tuple[str, str, str]  # (namespace, kind, name)
SKey = tuple[str, str]  # (namespace, name)

HOSTY_ENV = re.compile(r"(HOST|HOSTNAME|ADDR|ADDRESS|ENDPOINT|ENDPOINTS|URL|URI|SERVER|SERVERS|SERVICE|SVC|BROKERS?)$", re.I)
TOKEN_SPLIT = re.compile(r"[\s,;]+")
HOST_PORT = re.compile(r"^([a-z0-9][a-z0-9.-]*[a-z0-9]|[a-z0-9]):(\d{1,5})(/.*)?$", re.I)
#: Kinds preferred when a dependency names a workload directly and several kinds share the name.
KIND_ORDER = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


def wlabel(key: WKey) -> str:
    return f"{key[0]}/{key[2]}"


@dataclass(slots=True)
class Edge:
    """One dependency of ``source``."""

    source: WKey
    dep: DependencyRef
    namespace: str  # the namespace the dependency points into
    retry: RetryPolicy
    declared: bool
    inferred_from: str | None = None  # "container/ENV_NAME" when found in env
    service: SKey | None = None
    targets: tuple[WKey, ...] = ()
    resolved: bool = False
    external: bool = False
    app_retry: RetryPolicy = NO_RETRY  # what the caller's annotation says; ``retry`` adds the mesh's (mesh.py)
    mesh: MeshRetry | None = None  # the mesh's declared retries for this host (VirtualService, HTTPRoute, Linkerd)
    implicit: MeshRetry | None = None  # Istio's default retry policy, when the caller is in the mesh and none is set
    wire: RetryPolicy | None = None  # ``retry`` with the implicit retries too: what inversion judges
    budget: float | None = None  # a retry budget on the callee (ratio of extra requests), capping the mesh's retries
    budget_source: str | None = None
    tries: HopTries = HopTries()  # tries and calls (mesh.tries_per_hop): what the retry rules and simulate count
    startup: bool = False  # needed only while the caller starts (``name;startup``): in ``Graph.startup``, not ``out``

    @property
    def amp(self) -> float:
        """How many calls one call on this hop becomes while it fails: the factor amplification multiplies."""
        return self.tries.calls

    @property
    def sidecar(self) -> MeshRetry | None:
        """The retry loop the caller's sidecar runs on the call (mesh.sidecar_of), or None."""
        return sidecar_of(self.mesh, self.implicit)

    @property
    def on_wire(self) -> RetryPolicy:
        return self.wire if self.wire is not None else self.retry

    @property
    def label(self) -> str:
        if self.external:
            return f"external:{self.dep.name}"
        if self.targets and len(self.targets) == 1:
            return wlabel(self.targets[0])
        base = f"{self.namespace}/{self.dep.name}"
        return base if self.resolved else base + " (unresolved)"


@dataclass(slots=True)
class Analysis:
    """Per-workload results of the graph analysis."""

    scc: int = -1
    depth: int = 0
    depth_edge: Edge | None = None
    depth_target: WKey | None = None
    amplification: int = 1
    amp_edge: Edge | None = None
    amp_target: WKey | None = None


def service_hosts(host: str, own_ns: str) -> SKey | None:
    """The (namespace, name) a host names in-cluster, or None: svc, svc.ns, svc.ns.svc[.cluster.local]."""
    parts = host.lower().rstrip(".").split(".")
    if len(parts) >= 4 and parts[3] == "svc":  # pod-0.headless.ns.svc: one pod of a StatefulSet's Service
        parts = parts[1:]
    if len(parts) == 1:
        key = (own_ns, parts[0])
    elif len(parts) == 2:
        key = (parts[1], parts[0])
    elif parts[2] == "svc":
        key = (parts[1], parts[0])
    else:
        return None
    return key if DNS_LABEL.match(key[0]) and DNS_LABEL.match(key[1]) else None


# Multi-maps whose values are one key (a tuple) alone, or a set of keys once there are several. Most
# label pairs belong to one workload (names, instances), and an empty set is 216 bytes: at 10,000
# workloads the label index was the graph's largest part (bench/bench_engine.py, tracemalloc).
def index_add(index: dict, name: Any, key: tuple) -> None:
    cur = index.get(name)
    if cur is None:
        index[name] = key
    elif type(cur) is set:
        cur.add(key)
    elif cur != key:
        index[name] = {cur, key}


def index_discard(index: dict, name: Any, key: tuple) -> None:
    cur = index.get(name)
    if cur is None:
        return
    if type(cur) is set:
        cur.discard(key)
        if len(cur) == 1:
            index[name] = next(iter(cur))
        elif not cur:
            del index[name]
    elif cur == key:
        del index[name]


def index_get(index: dict, name: Any) -> set | tuple:
    """The keys under ``name``: a set, or a tuple of one or none (read-only either way)."""
    cur = index.get(name)
    if cur is None:
        return ()
    return cur if type(cur) is set else (cur,)


def env_hosts(env_name: str, value: str) -> list[tuple[str, int | None]]:
    """Hosts an environment value points at: URLs, host:port, or a bare host in a *_HOST-like variable."""
    return list(_env_hosts_cached(env_name, value))


@lru_cache(maxsize=65_536)
def _env_hosts_cached(env_name: str, value: str) -> tuple[tuple[str, int | None], ...]:
    """Memoised: the same variables repeat across replicas and templates, and graphs are rebuilt often."""
    return tuple(_env_hosts(env_name, value))


def _env_hosts(env_name: str, value: str) -> list[tuple[str, int | None]]:
    """Hosts an environment value points at: URLs, host:port, or a bare host in a *_HOST-like variable."""
    out = []
    hosty = bool(HOSTY_ENV.search(env_name))
    if len(value) > 2048:
        return out
    for token in TOKEN_SPLIT.split(value.strip()):
        if not token:
            continue
        if "://" in token:
            try:
                parts = urlsplit(token)
                host, port = parts.hostname, parts.port
            except ValueError:
                continue
            if host:
                out.append((host, port))
            continue
        m = HOST_PORT.match(token)
        if m:
            out.append((m.group(1), int(m.group(2))))
        elif hosty or ".svc" in token:
            if DNS_LABEL.match(token.split(".")[0].lower()) and re.fullmatch(r"[A-Za-z0-9.-]+", token):
                out.append((token, None))
    return out


_LOCAL_HOSTS = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def in_cluster_host(host: str, skey: SKey, namespaces: Callable[[], set[str]]) -> bool:
    """Whether ``host``, which names no Service among the inputs, is still a call into the cluster: a cluster
    name (``name.ns.svc[.cluster.local]``), a bare Service name (not localhost), or ``name.ns`` where ``ns``
    is a namespace the inputs know. Addresses, localhost and outside domains are not."""
    parts = host.lower().rstrip(".").split(".")
    if len(parts) == 1:
        return parts[0] not in _LOCAL_HOSTS and not parts[0].isdigit()
    if len(parts) == 2:
        return skey[0] in namespaces()
    return "svc" in parts[2:4] and not parts[-1].isdigit()


def strongly_connected(nodes: Iterable[WKey], succ: Callable[[WKey], list[WKey]]) -> list[list[WKey]]:
    """Strongly connected components by an iterative Tarjan (no recursion limit), in reverse topological
    order: a component comes after every component it calls."""
    index: dict[WKey, int] = {}
    low: dict[WKey, int] = {}
    on_stack: set[WKey] = set()
    stack: list[WKey] = []
    result: list[list[WKey]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, succ(root), 0)]
        while work:
            node, nxt_list, i = work[-1]
            if i < len(nxt_list):
                work[-1] = (node, nxt_list, i + 1)
                nxt = nxt_list[i]
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, succ(nxt), 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                result.append(comp)
    return result


ISTIO_INJECT = "sidecar.istio.io/inject"
#: What Istio's sidecar does on a call no VirtualService gives retries: 2 retries (3 tries) on
#: connect-failure, refused-stream, unavailable, cancelled, retriable-status-codes (docs/rules.md cites it).
ISTIO_DEFAULT_RETRY = MeshRetry(source="Istio's default retry policy", attempts=3, implicit=True)


def istio_meshed(namespace_labels: dict[str, str] | None) -> bool:
    """Whether a namespace's pods get Istio's sidecar: ``istio-injection=enabled`` or a revision label."""
    labels = namespace_labels or {}
    if labels.get("istio-injection") == "disabled":
        return False
    return labels.get("istio-injection") == "enabled" or "istio.io/rev" in labels


class Graph:
    def __init__(self, inventory: Inventory, *, mesh_defaults: bool = True):
        self.inv = inventory
        # count Istio's default retries (2 retries) on the calls of workloads in the mesh (policy meshDefaults)
        self.mesh_defaults = mesh_defaults
        self._meshed = False  # the workload whose edges are being built is in Istio's mesh
        self.out: dict[WKey, list[Edge]] = {}  # the request path: what every graph figure and simulate walk
        # dependencies needed only at start-up (``guywire.dev/depends-on: hf-mirror;startup``): resolved and
        # drawn, never part of depth, cycles, amplification, timeouts or a simulated request
        self.startup: dict[WKey, list[Edge]] = {}
        self.callers: dict[WKey, set[WKey]] = {}  # reverse edges: workload -> workloads that call it
        self.refs: dict[SKey, set[WKey]] = {}  # (ns, name) a workload's edges name -> those workloads
        self.mentions: dict[WKey, set[SKey]] = {}  # Services a workload's env names, edge or not (in refs too)
        self.backends: dict[SKey, tuple[WKey, ...]] = {}
        self.selected_by: dict[WKey, set[SKey]] = {}  # workload -> Services that select it
        self.svc_selectors: dict[SKey, dict[str, str]] = {}  # Service -> the selector it is indexed under
        # (ns, key, value) -> Services; values as index_add keeps them (one key alone, or a set)
        self.svc_by_label: dict[tuple[str, str, str], Any] = {}
        self.by_name: dict[SKey, list[WKey]] = {}
        self.label_index: dict[tuple[str, str, str], Any] = {}  # (ns, key, value) -> pod templates' workloads
        self.analysis: dict[WKey, Analysis] = {}
        self.sccs: dict[int, list[WKey]] = {}
        self._next_scc = 0
        self.mesh = MeshIndex(inventory.meshes.values())
        with paused_gc():
            self._build()

    def _build(self) -> None:
        inventory = self.inv
        for key, w in inventory.workloads.items():
            self._index_workload(w)
        for skey, svc in inventory.services.items():
            self._set_backends(skey, self._select(svc))
            self._index_service(skey, svc)
        for key in inventory.workloads:
            self._build_edges(key)
        self.analyze(set(inventory.workloads))

    def preview(self) -> Graph:
        """A graph that starts as this one and keeps its changes to itself: every map of it, of its
        inventory and of its mesh index is an overlay of this graph's (overlay.py). ``upsert_*`` and
        ``remove_*`` run on it as here, the rules read the result (edges, callers, analysis of the
        cluster as it would be after the change), and this graph, its inventory, indexes and
        analysis are never written. Only the part a change touches is copied."""
        return overlaid(self, inv=overlaid(self.inv), mesh=overlaid(self.mesh))

    # ----- indexes -------------------------------------------------------------------------
    def _index_workload(self, w: Workload) -> None:
        self.by_name.setdefault((w.namespace, w.name), []).append(w.key)
        for t in w.templates:
            for k, v in t.labels.items():
                index_add(self.label_index, (w.namespace, k, v), w.key)

    def _unindex_workload(self, w: Workload) -> None:
        names = self.by_name.get((w.namespace, w.name), [])
        if w.key in names:
            names.remove(w.key)
            if not names:  # or every name ever deleted (Jobs, bare Pods) keeps an empty list for the operator's life
                del self.by_name[(w.namespace, w.name)]
        for t in w.templates:
            for k, v in t.labels.items():
                index_discard(self.label_index, (w.namespace, k, v), w.key)

    def _select(self, svc: Service) -> tuple[WKey, ...]:
        if svc.backend is not None:
            return (svc.backend,) if svc.backend in self.inv.workloads else ()
        if not svc.selector or svc.external_name:
            return ()
        candidates: set[WKey] | None = None
        for k, v in svc.selector.items():
            found = index_get(self.label_index, (svc.namespace, k, v))
            candidates = set(found) if candidates is None else candidates.intersection(found)
            if not candidates:
                return ()
        matched = []
        for key in candidates or ():
            w = self.inv.workloads[key]
            if any(labels_match(svc.selector, t.labels) for t in w.templates):
                matched.append(key)
        return tuple(sorted(matched))

    def _index_service(self, skey: SKey, svc: Service | None) -> None:
        """Index a Service by the label pairs of its selector, so a workload's change finds the few
        Services it can affect instead of every Service in its namespace."""
        for k, v in self.svc_selectors.pop(skey, {}).items():
            index_discard(self.svc_by_label, (skey[0], k, v), skey)
        if svc is not None and svc.selector and svc.backend is None:
            self.svc_selectors[skey] = dict(svc.selector)
            for k, v in svc.selector.items():
                index_add(self.svc_by_label, (skey[0], k, v), skey)

    def _services_for(self, w: Workload) -> set[SKey]:
        """Services whose backends may change with ``w``: those selecting it now, and those whose
        selector names one of its pod labels."""
        found = set(self.selected_by.get(w.key, ()))
        for t in w.templates:
            for k, v in t.labels.items():
                found.update(index_get(self.svc_by_label, (w.namespace, k, v)))
        return found

    def _set_backends(self, skey: SKey, backends: tuple[WKey, ...] | None) -> None:
        for old in self.backends.get(skey, ()):
            s = self.selected_by.get(old)
            if s:
                s.discard(skey)
        if backends is None:
            self.backends.pop(skey, None)
            return
        self.backends[skey] = backends
        for key in backends:
            self.selected_by.setdefault(key, set()).add(skey)

    # ----- edges ---------------------------------------------------------------------------
    def _resolve(self, edge: Edge) -> None:
        if edge.dep.external:
            edge.external, edge.resolved = True, True
            return
        skey = (edge.namespace, edge.dep.name)
        svc = self.inv.services.get(skey)
        if svc is not None:
            edge.service = skey
            edge.resolved = True
            if svc.external_name:
                edge.external = True
            else:
                edge.targets = self.backends.get(skey, ())
            return
        named = self.by_name.get(skey)
        if named:
            edge.targets = (min(named, key=lambda k: KIND_ORDER.index(k[1]) if k[1] in KIND_ORDER else 99),)
            edge.resolved = True

    def in_istio_mesh(self, w: Workload) -> bool:
        """Whether the workload's pods run Istio's sidecar: the pod annotation sidecar.istio.io/inject, else the
        namespace's injection labels."""
        for t in w.templates:
            flag = str(t.annotations.get(ISTIO_INJECT, "")).lower()
            if flag in ("true", "false"):
                return flag == "true"
        ns = self.inv.namespaces.get(w.namespace)
        return istio_meshed(ns.labels if ns is not None else None)

    def _build_edges(self, key: WKey) -> None:
        w = self.inv.workloads[key]
        ns = w.namespace
        self._meshed = self.mesh_defaults and self.in_istio_mesh(w)
        edges: list[Edge] = []
        startup: list[Edge] = []
        declared_services: set[SKey] = set()
        declared_workloads: set[WKey] = set()
        declared: set[tuple[bool, str, str]] = set()
        for dep in w.decl.depends_on:
            ident = (dep.external, dep.name, dep.namespace or ns)
            if ident in declared:
                continue  # one dependency written two ways (retriever, retriever.ml.svc) is one edge
            declared.add(ident)
            pol = w.decl.retry_policy(dep, ns)
            edge = Edge(source=key, dep=dep, namespace=dep.namespace or ns, retry=pol, app_retry=pol, declared=True,
                        startup=dep.startup)
            self._resolve(edge)
            self._apply_mesh(edge, ns)
            (startup if dep.startup else edges).append(edge)
            if edge.service:
                declared_services.add(edge.service)
            declared_workloads.update(edge.targets)
        seen: set[SKey] = set()
        mentioned: set[SKey] = set()
        declared_names = {(e.namespace, e.dep.name) for e in (*edges, *startup)}
        for t in w.templates:
            for c in t.containers:
                for env_name, value in c.env:
                    for host, port in env_hosts(env_name, value):
                        skey = service_hosts(host, ns)
                        if skey is not None:
                            mentioned.add(skey)  # so the edge is reconsidered when the Service changes
                        if skey is None or skey in seen:
                            continue
                        # a call to a Service that is not among the inputs (another chart's) stays an edge,
                        # to an unresolved Service, so it is drawn and reported rather than lost
                        if skey not in self.inv.services and not in_cluster_host(host, skey, self._namespaces):
                            continue
                        seen.add(skey)
                        if skey in declared_services or skey in declared_names:
                            continue
                        backends = self.backends.get(skey, ())
                        if backends and all(b == key for b in backends):
                            continue  # a workload naming its own Service is no dependency
                        if backends and set(backends) <= declared_workloads:
                            continue
                        dep = DependencyRef(raw=host, name=skey[1], namespace=skey[0], port=port)
                        pol = w.decl.retry_policy(dep, ns)
                        edge = Edge(source=key, dep=dep, namespace=skey[0], retry=pol, app_retry=pol,
                                    declared=False, inferred_from=f"{c.name}/{env_name}")
                        self._resolve(edge)
                        self._apply_mesh(edge, ns)
                        edges.append(edge)
        self._set_edges(key, edges, mentioned, startup)

    def _namespaces(self) -> set[str]:
        """The namespaces the inputs know (declared, or holding a workload or Service)."""
        return set(self.inv.namespaces) | {k[0] for k in self.inv.workloads} | {k[0] for k in self.inv.services}

    def _apply_mesh(self, edge: Edge, caller_ns: str) -> None:
        """Add the retries and timeout the mesh applies to the call (mesh.py): the caller's VirtualService route
        for the host, else a Linkerd ServiceProfile of the Service (which wins over Linkerd's annotations), else a
        Gateway API HTTPRoute on the Service, else Linkerd's annotations on the Service; Istio's default retries
        when the caller is in the mesh and none of these declares retries; and a retry budget (a DestinationRule's
        retryBudget, a ServiceProfile's) that caps the mesh's retries."""
        found: MeshRetry | None = None
        budget_from: MeshRoute | None = None
        routes = self.mesh.routes
        if routes:
            route = self.mesh.route_for(edge.namespace, edge.dep.name, edge.dep.external, caller_ns)
            if route is None and not edge.dep.external:
                for kind in ("ServiceProfile", "HTTPRoute"):
                    route = self.mesh.route_for(edge.namespace, edge.dep.name, False, caller_ns, kind=kind)
                    if route is not None and (kind != "ServiceProfile" or route.retry is not None):
                        break
                    route = None
            if route is not None:
                found = route.retry
                if route.kind == "ServiceProfile":
                    budget_from = route
        if found is None and not edge.dep.external:
            svc = self.inv.services.get((edge.namespace, edge.dep.name))
            if svc is not None:
                found = svc.mesh_retry
        if found is not None:
            edge.mesh = found
            edge.retry = effective_retry(edge.app_retry, found)
        if self._meshed and (found is None or not found.declared):
            edge.implicit = ISTIO_DEFAULT_RETRY
            edge.wire = effective_retry(edge.retry, ISTIO_DEFAULT_RETRY)
        if routes and budget_from is None:
            budget_from = self.mesh.route_for(edge.namespace, edge.dep.name, edge.dep.external, caller_ns,
                                              kind="DestinationRule")
        if budget_from is not None and budget_from.retry_budget is not None:
            edge.budget = budget_from.retry_budget
            edge.budget_source = (f"retryBudget {call_count(budget_from.retry_budget * 100)}% in {budget_from.kind} "
                                  f"{budget_from.namespace}/{budget_from.name}")
        edge.tries = tries_per_hop(edge.app_retry, edge.sidecar, edge.budget)

    def rebuild(self, keys: set[WKey]) -> set[WKey]:
        """Rebuild the edges of ``keys`` after a change the indexes do not see (a namespace's mesh labels);
        return what the change can affect."""
        return self._rebuild(set(keys))

    def _set_edges(self, key: WKey, edges: list[Edge], mentioned: set[SKey] | None = None,
                   startup: list[Edge] | None = None) -> None:
        for skey in self.mentions.pop(key, ()):
            ref = self.refs.get(skey)
            if ref:
                ref.discard(key)
        for old in self.out.get(key, ()):
            for t in old.targets:
                s = self.callers.get(t)
                if s:
                    s.discard(key)
            ref = self.refs.get((old.namespace, old.dep.name))
            if ref:
                ref.discard(key)
        for old in self.startup.pop(key, ()):
            ref = self.refs.get((old.namespace, old.dep.name))
            if ref:
                ref.discard(key)
        self.out[key] = edges
        if startup:
            self.startup[key] = startup
            for e in startup:
                if not e.dep.external:
                    self.refs.setdefault((e.namespace, e.dep.name), set()).add(key)
        for e in edges:
            for t in e.targets:
                self.callers.setdefault(t, set()).add(key)
            if not e.dep.external:  # an ExternalName Service too: it may be deleted or get a selector
                self.refs.setdefault((e.namespace, e.dep.name), set()).add(key)
        if mentioned:
            self.mentions[key] = mentioned
            for skey in mentioned:
                self.refs.setdefault(skey, set()).add(key)

    # ----- incremental changes ---------------------------------------------------------------
    def _rebackend(self, skeys: set[SKey], force_callers: bool = False) -> set[WKey]:
        """Recompute Service backends; return the backends touched and the callers whose edges must be
        rebuilt: those of a Service whose backends changed, or all of them when the Service itself
        changed (``force_callers``)."""
        touched: set[WKey] = set()
        for skey in skeys:
            old = self.backends.get(skey, ())
            svc = self.inv.services.get(skey)
            new = self._select(svc) if svc else ()
            self._set_backends(skey, new if svc else None)
            self._index_service(skey, svc)
            if old != new:
                touched.update(old)
                touched.update(new)
            if old != new or force_callers:
                touched.update(self.refs.get(skey, ()))
        return touched

    def upsert_workload(self, w: Workload) -> set[WKey]:
        """Add or replace a workload; return every workload whose results may have changed."""
        old = self.inv.workloads.get(w.key)
        if old is not None:
            self._unindex_workload(old)
        self.inv.workloads[w.key] = w
        self._index_workload(w)
        affected_services = self._services_for(w)
        if old is not None:
            affected_services |= self._services_for(old)
        new_services: set[SKey] = set()
        for name in w.implicit_services:
            skey = (w.namespace, name)
            if skey not in self.inv.services:
                self.inv.services[skey] = Service(namespace=w.namespace, name=name, selector={}, ports=[],
                                                  labels={}, backend=w.key)
                new_services.add(skey)
        dirty = ({w.key} | self._rebackend(affected_services) | self._rebackend(new_services, force_callers=True)
                 | self.refs.get((w.namespace, w.name), set()))
        return self._rebuild(dirty)

    def remove_workload(self, key: WKey) -> set[WKey]:
        w = self.inv.workloads.get(key)
        if w is None:
            return set()
        callers = set(self.callers.get(key, ()))
        callees = {t for e in self.out.get(key, ()) for t in e.targets}
        self._set_edges(key, [])
        self._unindex_workload(w)
        del self.inv.workloads[key]
        self.out.pop(key, None)
        gone = self.analysis.pop(key, None)
        if gone is not None:
            self.sccs.pop(gone.scc, None)  # a self-loop has no other member to clear its cycle
        self.callers.pop(key, None)
        affected_services = set(self.selected_by.pop(key, ()))
        for name in w.implicit_services:  # the Services its controller made go with it
            skey = (w.namespace, name)
            svc = self.inv.services.get(skey)
            if svc is not None and svc.backend == key:
                del self.inv.services[skey]
                affected_services.add(skey)
        dirty = callers | self._rebackend(affected_services) | self.refs.get((w.namespace, w.name), set())
        dirty.discard(key)
        return self._rebuild(dirty, callees)

    def upsert_service(self, svc: Service) -> set[WKey]:
        self.inv.services[svc.key] = svc
        return self._rebuild(self._rebackend({svc.key}, force_callers=True))

    def remove_service(self, skey: SKey) -> set[WKey]:
        if skey not in self.inv.services:
            return set()
        del self.inv.services[skey]
        return self._rebuild(self._rebackend({skey}, force_callers=True))

    def _mesh_callers(self, route: MeshRoute | None) -> set[WKey]:
        """Workloads with an edge to a host ``route`` covers."""
        if route is None or route.kind != "VirtualService":
            return set()
        hosts = self.mesh.hosts(route)
        out: set[WKey] = set()
        for kind, value in hosts:
            if kind == "svc":
                out |= self.refs.get(value, set())  # type: ignore[arg-type]
        if any(kind != "svc" for kind, _ in hosts):  # wildcards and outside hosts: look at every edge
            for key, edges in self.out.items():
                if key not in out and any(self.mesh.covers(route, e.namespace, e.dep.name, e.dep.external)
                                          for e in edges):
                    out.add(key)
        return out

    def upsert_mesh(self, route: MeshRoute) -> set[WKey]:
        """Add or replace a VirtualService or DestinationRule; rebuild the edges of the callers of its hosts."""
        old = self.mesh.remove(route.key)
        self.inv.meshes[route.key] = route
        self.mesh.add(route)
        return self._rebuild(self._mesh_callers(old) | self._mesh_callers(route))

    def remove_mesh(self, key: tuple[str, str, str]) -> set[WKey]:
        self.inv.meshes.pop(key, None)
        old = self.mesh.remove(key)
        return self._rebuild(self._mesh_callers(old))

    def _rebuild(self, dirty: set[WKey], callees: set[WKey] | None = None) -> set[WKey]:
        """Rebuild the edges of ``dirty``; return them, their ancestors, and the workloads that gained or
        lost a caller (rules such as GW-OBS-001 read ``callers``)."""
        dirty = {k for k in dirty if k in self.inv.workloads}
        callees = set(callees or ())
        for key in dirty:
            before = {t for e in self.out.get(key, ()) for t in e.targets}
            self._build_edges(key)
            callees |= before ^ {t for e in self.out[key] for t in e.targets}
        return self.analyze(dirty) | {k for k in callees if k in self.inv.workloads}

    # ----- analysis ------------------------------------------------------------------------
    def ancestors(self, keys: set[WKey]) -> set[WKey]:
        seen = set(keys)
        stack = list(keys)
        while stack:
            for caller in self.callers.get(stack.pop(), ()):
                if caller not in seen:
                    seen.add(caller)
                    stack.append(caller)
        return seen

    def analyze(self, changed: set[WKey]) -> set[WKey]:
        """Recompute cycles, depth and amplification for ``changed`` and their ancestors; return that region."""
        region = self.ancestors(changed) if len(changed) < len(self.out) else set(self.out)
        for key in region:
            old = self.analysis.get(key)
            if old is not None and old.scc in self.sccs:
                self.sccs.pop(old.scc, None)
        order = self._tarjan(region)  # components in reverse topological order (callees first)
        for comp in order:
            cid = self._next_scc
            self._next_scc += 1
            members = set(comp)
            if len(comp) > 1 or any(key in e.targets for key in comp for e in self.out.get(key, ())):
                self.sccs[cid] = sorted(comp)
            for key in comp:
                a = Analysis(scc=cid)
                for e in self.out.get(key, ()):
                    best_d, best_a, t_d, t_a = 0, 1, None, None
                    for t in e.targets:
                        if t in members:
                            continue
                        ta = self.analysis.get(t)
                        if ta is None:
                            continue
                        if ta.depth > best_d or t_d is None:
                            best_d, t_d = ta.depth, t
                        if ta.amplification > best_a or t_a is None:
                            best_a, t_a = ta.amplification, t
                    if e.targets and t_d is None:
                        continue  # only edges inside the cycle
                    d = 1 + best_d
                    amp = call_count(e.amp * best_a)
                    if d > a.depth:
                        a.depth, a.depth_edge, a.depth_target = d, e, t_d
                    if amp > a.amplification:
                        a.amplification, a.amp_edge, a.amp_target = amp, e, t_a
                self.analysis[key] = a
        return region

    def _tarjan(self, region: set[WKey]) -> list[list[WKey]]:
        return strongly_connected(sorted(region), lambda key: self._succ(key, region))

    def _succ(self, key: WKey, region: set[WKey]) -> list[WKey]:
        return [t for e in self.out.get(key, ()) for t in e.targets if t in region]

    # ----- queries -------------------------------------------------------------------------
    def cycle_of(self, key: WKey) -> list[WKey] | None:
        """A concrete cycle through ``key`` (first node repeated at the end), or None."""
        a = self.analysis.get(key)
        if a is None or a.scc not in self.sccs:
            return None
        members = set(self.sccs[a.scc])
        # breadth-first from key back to key inside the component: the shortest cycle through it
        prev: dict[WKey, WKey] = {}
        frontier = [key]
        while frontier:
            nxt_frontier = []
            for node in frontier:
                for e in self.out.get(node, ()):
                    for t in e.targets:
                        if t not in members:
                            continue
                        if t == key:
                            path = [key]
                            cur = node
                            while cur != key:
                                path.append(cur)
                                cur = prev[cur]
                            path.append(key)
                            path.reverse()
                            return path if path[0] == key else [key, *path]
                        if t not in prev:
                            prev[t] = node
                            nxt_frontier.append(t)
            frontier = nxt_frontier
        return None

    def amplification_path(self, key: WKey) -> list[tuple[str, float]]:
        """The path that gives the worst amplification, with the calls each hop makes of one (``Edge.amp``)."""
        return [(label, e.amp if e is not None else 1) for label, e in self.amplification_hops(key)]

    def amplification_hops(self, key: WKey) -> list[tuple[str, Edge | None]]:
        """The worst amplification path as (label, the edge that reaches it); the first has no edge."""
        out: list[tuple[str, Edge | None]] = [(wlabel(key), None)]
        cur: WKey | None = key
        guard = 0
        while cur is not None and guard < 10_000:
            a = self.analysis.get(cur)
            if a is None or a.amp_edge is None:
                break
            nxt = a.amp_target
            out.append((wlabel(nxt) if nxt else a.amp_edge.label, a.amp_edge))
            cur = nxt
            guard += 1
        return out

    def depth_path(self, key: WKey) -> list[str]:
        """The longest downstream chain from ``key``, as labels."""
        path = [wlabel(key)]
        cur: WKey | None = key
        guard = 0
        while cur is not None and guard < 10_000:
            a = self.analysis.get(cur)
            edge = a.depth_edge if a else None
            if edge is None:
                break
            cur = a.depth_target
            path.append(wlabel(cur) if cur else edge.label)
            guard += 1
        return path

    def callee_worst_case(self, key: WKey) -> tuple[float, Edge] | None:
        """The longest a workload can spend on one of its own outbound hops, and that hop."""
        worst: tuple[float, Edge] | None = None
        for e in self.out.get(key, ()):
            wc = e.on_wire.worst_case()
            if wc is not None and (worst is None or wc > worst[0]):
                worst = (wc, e)
        return worst

    def stats(self) -> dict:
        # as the graph's JSON lists them: one per target, start-up edges included
        edges = sum(max(1, len(e.targets)) for v in (*self.out.values(), *self.startup.values()) for e in v)
        return {
            "workloads": len(self.out),
            "edges": edges,
            "cycles": len(self.sccs),
            "maxDepth": max((a.depth for a in self.analysis.values()), default=0),
            "maxAmplification": max((a.amplification for a in self.analysis.values()), default=1),
        }


__all__ = ["Edge", "Graph", "NO_RETRY", "WKey", "env_hosts", "service_hosts", "wlabel"]
