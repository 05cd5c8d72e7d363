"""The operator's state: the engine fed from watch events, and the writes that follow from its results.

Handlers (handlers.py) only translate kopf's calls into ``observe_*`` / ``forget_*``;
this module decides what to write (annotations, Events, policy status) and writes it
in batches, never more than the results changed.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time  # perf_counter only: durations for metrics, never the time of day
from collections import OrderedDict
from urllib.parse import quote
from dataclasses import dataclass, field

from ..engine.admission import Admission
from ..clock import SYSTEM, Clock, rfc3339
from ..speed.compact import compact
from ..views.annotations import BLAST_RADIUS, COMPLEXITY_SCORE, EVALUATED_AT, VIOLATIONS
from ..engine.core import Engine, worst_first
from ..graph.core import Graph
from ..views.inventory import Inventory, fingerprint, view_of
from ..views.annotations import GPU_HEALTH
from ..gpu.taint import NodeTaintState, has_taint, plan_taints, taint_spec
from ..kube.client import NODE, POLICY_KINDS, REPORT_KINDS, WORKLOAD_KINDS, ApiFailure, Kind, KubeClient
from ..render.policy_reports import DIGEST_ANNOTATION, REPORT_APIS, policy_reports

MANAGED_BY_SELECTOR = "app.kubernetes.io%2Fmanaged-by%3Dguywire"
from ..engine.insights import complexity_report
from ..model.gpu_report import GPU_TAINT_KEY, parse_gpu_health
from ..rules.gpu import is_gpu_node
from ..model.finding import Finding
from ..model.policy import Enforcement, Policy, PolicyError, parse_policy
from ..views.workload import ParseError, Workload
from . import metrics
from .gate import ListingGate

log = logging.getLogger("guywire.operator")
WKey = tuple[str, str, str]
EVENT_RETRY_BASE_S = 5.0
EVENT_RETRY_MAX_S = 300.0
RELIST_QUIET_S = 5.0  # a re-listing that has sent nothing for this long is over: sweep the kind
RELIST_PAGE = 500
ERRORS_SHOWN = 3  # evaluation errors named in a policy's EvaluationErrors condition


@dataclass
class Settings:
    own_namespace: str = "guywire"
    audit_interval: float = 600.0
    flush_interval: float = 0.5
    status_interval: float = 2.0
    events_per_second: float = 5.0
    events_burst: int = 50
    event_queue_max: int = 10_000
    findings_cap: int = 50
    write_concurrency: int = 8
    instance: str = field(default_factory=socket.gethostname)
    own_users: frozenset[str] = frozenset()
    node_recheck_interval: float = 30.0
    insights_interval: float = 30.0  # blast radius annotations and complexity gauges, at most this often
    policy_reports: bool = True  # write PolicyReports / OpenReports Reports (Policy Reporter reads them)
    reports_api: str = "auto"  # wgpolicyk8s | openreports | auto: openreports.io when the cluster serves it
    policy_report_max_results: int = 500
    taint_unhealthy_gpu_nodes: bool = False
    taint_max_fraction: float = 0.5


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim). The start-up listing frees much more
    than the index keeps; without this the process keeps the start-up peak as its resident size."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def evaluation_errors_condition(errors: list, generation) -> dict:
    """The policy's ``EvaluationErrors`` condition: True with the count and the first few rule / object /
    error when a rule raised (those objects have no finding of that rule), False when every rule evaluated."""
    if not errors:
        return {"type": "EvaluationErrors", "status": "False", "reason": "NoErrors",
                "message": "Every rule evaluated.", "observedGeneration": generation}
    shown = "; ".join(f"{e.rule} on {e.object}: {e.cause}" for e in errors[:ERRORS_SHOWN])
    more = f"; and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
    message = (f"{len(errors)} evaluation error(s), not counted as violations: {shown}{more}. A rule raised: "
               "report it to guywire's maintainers with the object.")
    return {"type": "EvaluationErrors", "status": "True", "reason": "RuleRaised", "message": message[:1024],
            "observedGeneration": generation}


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock = SYSTEM):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock.monotonic()

    def wait_time(self) -> float:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class OperatorState:
    def __init__(self, client: KubeClient | None, settings: Settings | None = None, clock: Clock = SYSTEM):
        self.client = client
        self.settings = settings or Settings()
        self.clock = clock  # every time this state reads: judging, stamps, intervals, the Event rate
        self.engine = Engine([], Inventory(), skip_namespaces={self.settings.own_namespace})
        self.warm = False
        self.policies: dict[str, Policy] = {}
        self.policy_meta: dict[str, dict] = {}  # ref -> {kind, namespace, name, generation}
        self.policy_errors: dict[str, str] = {}
        self.fingerprints: dict[tuple, int] = {}
        self.owners: dict[WKey, tuple[str, str]] = {}  # controlled object -> its controller (kind, name)
        self.gpu_pod_nodes: dict[WKey, tuple[WKey, str]] = {}  # GPU pod -> (evaluated workload, node)
        self.node_taints: dict[str, list] = {}  # node -> its spec.taints, for the GPU taint decision
        self.taints_dirty = False
        self.breaker_message: str | None = None
        self.blast: dict[WKey, str] = {}  # guywire.dev/blast-radius values, from the last insights pass
        self.insights_dirty = True
        self.last_insights = -float("inf")  # never
        self.reports_ns_dirty: set[str] | None = None  # None: every namespace
        self.reports_written: dict[tuple, str] = {}  # (kind, namespace, name) -> results digest
        self.report_names: dict[str | None, set[str]] = {}  # namespace -> report names written there
        self.reports_unavailable = False
        self.report_api: str | None = None  # the report API chosen (settings.reports_api, or discovered)
        self.written: dict[WKey, tuple[str, str]] = {}  # what our annotations hold: (violations, score)
        self.announced: dict[WKey, set[str]] = {}  # rules whose Warning event was posted
        self.dirty: set[WKey] = set()
        self.status_dirty = True
        self.status_written: dict[str, dict] = {}
        self.events: OrderedDict[tuple, dict] = OrderedDict()
        self.event_retries: dict[tuple, tuple[float, dict, int]] = {}  # ident -> (due, event, attempts)
        self.event_attempts: dict[tuple, int] = {}
        # Held by whatever changes the engine (watch handlers, the loops below) and by the webhook while a
        # worker thread judges a large review on it; everything else on the event loop only reads.
        self.engine_lock = asyncio.Lock()
        self.relists: dict[str, tuple[str, str, float]] = {}  # kind -> (apiVersion, plural, last listed)
        self.watch_namespaces: list[str] | None = None  # None: the whole cluster
        self.bucket = TokenBucket(self.settings.events_per_second, self.settings.events_burst, clock)
        self.tasks: list[asyncio.Task] = []
        self.last_status_flush = -float("inf")  # never
        self.gate = ListingGate(clock.monotonic())

    # ----- feeding the engine ------------------------------------------------------------------
    def _changed(self, ident: tuple, body: dict) -> bool:
        fp = fingerprint(body)
        if self.fingerprints.get(ident) == fp:
            return False
        self.fingerprints[ident] = fp
        return True

    def tick(self) -> None:
        """Rules never read the clock: the time they judge against is set here, at the edge."""
        self.engine.now = self.clock.now()

    async def count_cluster(self, resources: list[tuple[str, str | None, str]]) -> None:
        """How many objects of each watched kind the API server has, before kopf lists them (see gate.py).
        A kind the cluster does not serve counts as nothing to wait for; any other failure leaves the
        counts unknown, and the gate falls back to quiet periods."""
        counts: dict[str, int] = {}
        try:
            if self.client is None:
                raise ApiFailure(0, "no API client")
            for group, version, plural in resources:
                try:
                    if version is None:  # the version the cluster prefers, as kopf picks it
                        version = ((await self.client.get(f"/apis/{group}")) or {}).get(
                            "preferredVersion", {}).get("version")
                        if not version:
                            continue
                    path = Kind("", group, version, plural, namespaced=False).path(None)  # every namespace
                    listed = await self.client.get(f"{path}?limit=1") or {}
                except ApiFailure as exc:
                    if exc.status == 404:  # not served here (a CRD that is not installed)
                        continue
                    raise
                kind = str(listed.get("kind") or "").removesuffix("List")
                meta = listed.get("metadata") or {}
                items = len(listed.get("items") or [])
                if not kind or (meta.get("continue") and not isinstance(meta.get("remainingItemCount"), int)):
                    raise ApiFailure(0, f"{plural}: the list gives no count")
                counts[kind] = counts.get(kind, 0) + items + (meta.get("remainingItemCount") or 0)
        except ApiFailure as exc:
            log.info("Cannot count the cluster's objects (%s); starting when the listing goes quiet.", exc)
            self.gate.counted(None)
            return
        self.gate.counted(counts)
        log.info("Listing %d objects of %d kinds.", sum(counts.values()), len(counts))

    def listed(self, kind: str | None, api_version: str | None = None, plural: str | None = None) -> None:
        """kopf listed an object: its initial listing, before it watches; or, once warm, a re-listing after a
        broken watch (API server restarted, 410 Gone), which a sweep (``sweep_relisted``) follows."""
        if not kind:
            return
        if not self.warm:
            self.gate.listed(kind, self.clock.monotonic())
        elif api_version and plural:
            self.relists[kind] = (api_version, plural, self.clock.monotonic())

    def _known(self, kind: str) -> set[tuple[str | None, str]]:
        """(namespace, name) of every object of ``kind`` the state holds (each has a fingerprint)."""
        return {(ns, name) for (k, ns, name) in self.fingerprints if k == kind}

    async def _list_names(self, api_version: str, plural: str, namespaces: list[str] | None
                          ) -> set[tuple[str | None, str]]:
        group, _, version = api_version.rpartition("/")
        kind = Kind("", group, version, plural, namespaced=bool(namespaces))
        names: set[tuple[str | None, str]] = set()
        for ns in namespaces or [None]:
            token = ""
            while True:
                page = await self.client.get(kind.path(ns) + f"?limit={RELIST_PAGE}"
                                             + (f"&continue={quote(token)}" if token else "")) or {}
                for item in page.get("items") or []:
                    meta = item.get("metadata") or {}
                    names.add((meta.get("namespace"), meta.get("name")))
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return names

    async def sweep(self, kind: str, api_version: str, plural: str) -> int:
        """Forget the objects of ``kind`` that the API server no longer has: deleted while the watch was
        broken, their DELETED event never comes. Returns how many were forgotten."""
        known = self._known(kind)
        namespaced = any(ns is not None for ns, _ in known)
        namespaces = self.watch_namespaces if namespaced else None
        if namespaces:
            known = {k for k in known if k[0] in namespaces}
        if not known or self.client is None:
            return 0
        listed = await self._list_names(api_version, plural, namespaces)
        gone = [k for k in known - listed if k in self._known(kind)]  # forgotten meanwhile by a watch event
        for namespace, name in gone:
            log.info("%s %s/%s is gone from the re-listing; forgetting it.", kind, namespace, name)
            self.forget(kind, namespace, name)
        return len(gone)

    async def sweep_relisted(self) -> None:
        """Sweep each kind whose re-listing has gone quiet for ``RELIST_QUIET_S``."""
        now = self.clock.monotonic()
        for kind, (api_version, plural, last) in list(self.relists.items()):
            if now - last < RELIST_QUIET_S:
                continue
            del self.relists[kind]
            try:
                await self.sweep(kind, api_version, plural)
            except ApiFailure as exc:
                metrics.API_ERRORS.labels("list").inc()
                log.warning("Cannot list %s to forget deleted ones: %s; will retry.", plural, exc)
                self.relists.setdefault(kind, (api_version, plural, now))

    async def gate_loop(self, poll: float = 0.2) -> None:
        while not self.warm:
            why = self.gate.ready(self.clock.monotonic())
            if why:
                log.info("Cluster listed: %s.", why)
                async with self.engine_lock:
                    self.warm_up()
                return
            await asyncio.sleep(poll)

    def observe(self, body: dict) -> None:
        """A watched object was added or changed."""
        self.tick()
        kind = body.get("kind")
        meta = body.get("metadata") or {}
        ident = compact((kind, meta.get("namespace"), meta.get("name")))  # the same strings as the view's
        if kind in POLICY_KINDS:
            self.observe_policy(body)
            return
        if not self._changed(ident, body):
            return
        if kind == "Node":
            self.node_taints[meta.get("name")] = list((body.get("spec") or {}).get("taints") or [])
            self.taints_dirty = True
        try:
            view = compact(view_of(body))  # kept for as long as the operator runs: share its strings
        except ParseError as exc:
            log.warning("Cannot read %s %s/%s: %s", kind, meta.get("namespace"), meta.get("name"), exc)
            return
        if view is None:
            return
        if isinstance(view, Workload):
            if view.kind == "Pod" and view.owner is not None and not view.requests_gpu:
                # A controller's pod without GPUs tells the engine nothing (GPU requests cannot change
                # on a live pod): keep no fingerprint or owner for it. Clusters have many more pods
                # than workloads.
                self.fingerprints.pop(ident, None)
                self.owners.pop(view.key, None)
                self._untrack_gpu_pod(view.key)
                return
            if view.owner is not None:
                self.owners[view.key] = view.owner
            if view.kind == "Pod":
                self._track_gpu_pod(view, body)
            if view.owner is not None:
                return
            if view.key not in self.written:
                self.written[view.key] = (view.annotations.get(VIOLATIONS, ""),
                                          view.annotations.get(COMPLEXITY_SCORE, ""),
                                          view.annotations.get(BLAST_RADIUS, ""))
                announced = {r for r in view.annotations.get(VIOLATIONS, "").split(",") if r}
                if announced:  # most workloads have none: no empty set each (216 bytes)
                    self.announced[view.key] = announced
        if not self.warm:
            self.engine.inventory.add(view)
            return
        started = time.perf_counter()
        affected = self.engine.upsert(view)
        metrics.EVALUATION_SECONDS.labels("incremental").observe(time.perf_counter() - started)
        self._mark(affected)

    def forget(self, kind: str, namespace: str | None, name: str) -> None:
        """A watched object was deleted."""
        self.tick()
        self.fingerprints.pop((kind, namespace, name), None)
        if kind in POLICY_KINDS:
            ref = self._policy_ref(kind, namespace, name)
            self.policies.pop(ref, None)
            self.policy_meta.pop(ref, None)
            self.policy_errors.pop(ref, None)
            self.status_written.pop(ref, None)
            if self.warm:
                self._reevaluate_all()
            return
        ns_key = (namespace or "default", kind, name)
        self.owners.pop(ns_key, None)
        if kind == "Node":
            self.node_taints.pop(name, None)
            self.engine.node_health.pop(name, None)
            self.taints_dirty = True
        if kind == "Pod":
            self._untrack_gpu_pod(ns_key)
        if not self.warm:
            self._remove_cold(kind, namespace, name)
            return
        affected = self.engine.remove(kind, namespace, name)
        key = (namespace or "default", kind, name)
        self.written.pop(key, None)
        self.announced.pop(key, None)
        self._mark(affected)

    def _remove_cold(self, kind: str, namespace: str | None, name: str) -> None:
        inv = self.engine.inventory
        ns = namespace or "default"
        inv.workloads.pop((ns, kind, name), None)
        if kind == "Service":
            inv.services.pop((ns, name), None)
        elif kind == "Namespace":
            inv.namespaces.pop(name, None)
        elif kind == "Node":
            inv.nodes.pop(name, None)
        else:
            inv.monitors.pop((ns, kind, name), None)
            inv.meshes.pop((ns, kind, name), None)

    # ----- where GPU pods run (for GW-GPU-001/002) ------------------------------------------------
    def top_owner(self, key: WKey) -> WKey:
        """The workload that is evaluated for ``key``: follow controller references up (Pod -> ReplicaSet ->
        Deployment -> InferenceService) as far as they are known."""
        seen = 0
        while key in self.owners and seen < 10:
            kind, name = self.owners[key]
            key = (key[0], kind, name)
            seen += 1
        return key

    def _track_gpu_pod(self, pod: Workload, body: dict) -> None:
        node = (body.get("spec") or {}).get("nodeName")
        phase = (body.get("status") or {}).get("phase")
        self._untrack_gpu_pod(pod.key)
        if not node or not pod.requests_gpu or phase in ("Succeeded", "Failed"):
            return
        top = self.top_owner(pod.key)
        self.gpu_pod_nodes[pod.key] = (top, node)
        nodes = self.engine.gpu_pods.setdefault(top, set())
        if node not in nodes:
            nodes.add(node)
            if self.warm:
                self._mark(self.engine.reevaluate({top}))

    def _untrack_gpu_pod(self, key: WKey) -> None:
        found = self.gpu_pod_nodes.pop(key, None)
        if not found:
            return
        top, node = found
        if not any(t == top and n == node for t, n in self.gpu_pod_nodes.values()):
            self.engine.gpu_pods.get(top, set()).discard(node)
            if self.warm:
                self._mark(self.engine.reevaluate({top}))

    @staticmethod
    def _policy_ref(kind: str, namespace: str | None, name: str) -> str:
        return f"{kind}/{name}" if kind == "ClusterComplexityPolicy" else f"{kind} {namespace or 'default'}/{name}"

    def observe_policy(self, body: dict) -> None:
        kind = body["kind"]
        meta = body.get("metadata") or {}
        ref = self._policy_ref(kind, meta.get("namespace"), meta.get("name"))
        self.policy_meta[ref] = {"kind": kind, "namespace": meta.get("namespace"), "name": meta.get("name"),
                                 "generation": meta.get("generation")}
        ident = (kind, meta.get("namespace"), meta.get("name"))
        if not self._changed(ident, body) and ref in (self.policies.keys() | self.policy_errors.keys()):
            return
        try:
            policy = parse_policy(body)
        except PolicyError as exc:
            log.warning("Policy %s cannot be used: %s", ref, exc)
            self.policy_errors[ref] = str(exc)
            self.policies.pop(ref, None)
        else:
            self.policy_errors.pop(ref, None)
            self.policies[ref] = policy
        self.status_dirty = True
        if self.warm:
            self._reevaluate_all()

    def _mark(self, keys) -> None:
        self.dirty.update(keys)
        if keys:
            self.status_dirty = True
            self.insights_dirty = True
            if self.reports_ns_dirty is not None:
                self.reports_ns_dirty.update(k[0] for k in keys)

    def _reevaluate_all(self) -> None:
        self.tick()
        started = time.perf_counter()
        self.engine.set_policies(sorted(self.policies.values(), key=lambda p: p.ref))
        metrics.EVALUATION_SECONDS.labels("full").observe(time.perf_counter() - started)
        self._mark(set(self.engine.inventory.workloads))
        self.status_dirty = True
        self.reports_ns_dirty = None
        if self.reports_unavailable:  # the report CRDs may have been installed since: discover again
            self.report_api = None
        self.reports_unavailable = False

    def warm_up(self) -> None:
        """All watched kinds are listed: build the graph once and judge everything."""
        if self.warm:
            return
        self.engine.graph = Graph(self.engine.inventory)
        self.warm = True
        self._reevaluate_all()
        gc.collect()
        gc.freeze()  # the index is long-lived: keep full collections from rescanning it (admission latency)
        release_free_memory()
        log.info("Indexed %d workloads, %d Services, %d policies; evaluated all.",
                 len(self.engine.inventory.workloads), len(self.engine.inventory.services), len(self.policies))

    def full_audit(self) -> None:
        if self.warm:
            self._reevaluate_all()

    # ----- deciding writes ---------------------------------------------------------------------
    def enforcement_of(self, ref: str) -> Enforcement:
        p = self.policies.get(ref)
        return p.spec.enforcement if p else Enforcement.AUDIT

    def desired(self, key: WKey) -> tuple[dict[str, str | None] | None, list[tuple[str, str, dict]]]:
        """The annotation patch (None: nothing to change) and the Events to post for one workload."""
        w = self.engine.inventory.workloads.get(key)
        if w is None:
            return None, []
        per = self.engine.results.get(key, {})
        findings = worst_first(f for found in per.values() for f in found)
        violations = ",".join(dict.fromkeys(f.rule for f in findings))
        score = str(self.engine.score(key)) if per else ""
        blast = self.blast.get(key, "") if per else ""
        patch = None
        if (violations, score, blast) != self.written.get(key, ("", "", "")):
            if per:
                patch = {VIOLATIONS: violations or None, COMPLEXITY_SCORE: score, BLAST_RADIUS: blast or None,
                         EVALUATED_AT: rfc3339(self.clock.now())}
            else:  # no policy looks at it any more: take our annotations away
                patch = {VIOLATIONS: None, COMPLEXITY_SCORE: None, BLAST_RADIUS: None, EVALUATED_AT: None}
        loud: dict[str, list[Finding]] = {}
        for ref, found in per.items():
            if self.enforcement_of(ref) is Enforcement.AUDIT:
                continue
            for f in found:
                loud.setdefault(f.rule, []).append(f)
        before = self.announced.get(key, set())
        events = []
        for rule in [r for r in loud if r not in before]:
            group = worst_first(loud[rule])
            text = group[0].render() + (f" (and {len(group) - 1} more)" if len(group) > 1 else "")
            events.append(("Warning", rule, {"message": text, "key": f"{w.uid or w.key}|{rule}|{text}"}))
        for rule in sorted(before - set(loud)):
            text = f"[{rule}] {w.ref}: no longer violated."
            events.append(("Normal", rule, {"message": text,
                                            "key": f"{w.uid or w.key}|{rule}|resolved|{rfc3339(self.clock.now())}"}))
        return patch, events

    # ----- writing -----------------------------------------------------------------------------
    async def flush(self) -> None:
        if not self.warm or self.client is None:
            return
        if self.insights_dirty and self.clock.monotonic() - self.last_insights >= self.settings.insights_interval:
            self.update_insights()
        keys, self.dirty = self.dirty, set()
        pending = iter(keys)

        async def writer() -> None:  # a few writers taking keys in turn, not a task per key
            for key in pending:
                await self._write_workload(key)

        await asyncio.gather(*(writer() for _ in range(min(self.settings.write_concurrency, len(keys)))))
        if len(keys) >= 1000:
            release_free_memory()  # after the first evaluation's writes, or an audit's
        if self.settings.taint_unhealthy_gpu_nodes and self.taints_dirty:
            self.taints_dirty = False
            await self.apply_taints()
        if self.status_dirty and self.clock.monotonic() - self.last_status_flush >= self.settings.status_interval:
            self.status_dirty = False
            self.last_status_flush = self.clock.monotonic()
            await self.write_statuses()
            if self.settings.policy_reports:
                await self.write_policy_reports()

    async def _write_workload(self, key: WKey) -> None:
        w = self.engine.inventory.workloads.get(key)
        if w is None:
            return
        patch, events = self.desired(key)
        kind = WORKLOAD_KINDS.get(w.kind)
        if kind is None:
            return
        if patch is not None:
            try:
                await self.client.merge_patch(kind.path(w.namespace, w.name), {"metadata": {"annotations": patch}})
            except ApiFailure as exc:
                metrics.PATCHES.labels("workload", "error").inc()
                if exc.status == 404:
                    return  # deleted meanwhile; the watch will tell
                log.warning("Cannot annotate %s: %s; will retry.", w.ref, exc)
                self.dirty.add(key)
                return
            metrics.PATCHES.labels("workload", "ok").inc()
            self.written[key] = (patch.get(VIOLATIONS) or "", patch.get(COMPLEXITY_SCORE) or "",
                                 patch.get(BLAST_RADIUS) or "")
            log.info("Annotated %s: violations=%s score=%s.", w.ref, patch.get(VIOLATIONS) or "none",
                     patch.get(COMPLEXITY_SCORE))
        if not events:
            return
        announced = self.announced.setdefault(key, set())
        involved = {"apiVersion": kind.api_version, "kind": w.kind, "name": w.name, "namespace": w.namespace}
        if w.uid:
            involved["uid"] = w.uid
        for type_, rule, ev in events:
            if type_ != "Warning":  # a Warning counts as announced once the API has accepted it (_post_event)
                announced.discard(rule)
            self._queue_event((key, rule, type_), dict(involved=involved, reason=rule, type_=type_, **ev))
        if not announced:
            del self.announced[key]

    def _queue_event(self, ident: tuple, event: dict) -> None:
        self.event_retries.pop(ident, None)  # a newer event for the same workload x rule supersedes a retry
        self.event_attempts.pop(ident, None)
        if ident in self.events:
            self.events[ident] = event
            return
        if len(self.events) >= self.settings.event_queue_max:
            self.events.popitem(last=False)
            metrics.EVENTS_DROPPED.inc()
        self.events[ident] = event

    async def post_events(self) -> None:
        """Drain the Event queue at the global rate; runs for the operator's lifetime."""
        while True:
            self.requeue_due_events()
            if not self.events or self.client is None:
                await asyncio.sleep(0.1)
                continue
            wait = self.bucket.wait_time()
            if wait:
                await asyncio.sleep(wait)
                continue
            ident, event = self.events.popitem(last=False)
            await self._post_event(ident, event)

    def requeue_due_events(self) -> None:
        """Put the Events whose retry time has come back into the queue."""
        if not self.event_retries:
            return
        now = self.clock.monotonic()
        for ident in [i for i, (due, _, _) in self.event_retries.items() if due <= now]:
            _, event, _ = self.event_retries.pop(ident)
            if ident not in self.events:
                self.events[ident] = event

    async def _post_event(self, ident: tuple, event: dict) -> None:
        """Post one Event. A Warning counts as announced only once the API accepted it; one the API refused
        for a reason that may pass (unreachable, 5xx, 429, 403 while RBAC settles) is retried with backoff
        (``EVENT_RETRY_BASE_S`` doubling up to ``EVENT_RETRY_MAX_S``), never lost; one it found invalid is
        dropped and counted."""
        try:
            outcome = await self.client.post_event(instance=self.settings.instance, **event)
        except ApiFailure as exc:
            metrics.API_ERRORS.labels("event").inc()
            if exc.status in (400, 422):
                metrics.EVENTS_DROPPED.inc()
                log.warning("Event %s on %s refused as invalid: %s; dropped.", event["reason"],
                            event["involved"]["name"], exc)
                return
            tries = self.event_attempts.get(ident, 0) + 1
            self.event_attempts[ident] = tries
            delay = min(EVENT_RETRY_MAX_S, EVENT_RETRY_BASE_S * 2 ** (tries - 1))
            if len(self.event_retries) >= self.settings.event_queue_max:
                dropped = next(iter(self.event_retries))
                self.event_retries.pop(dropped)
                self.event_attempts.pop(dropped, None)
                metrics.EVENTS_DROPPED.inc()
            self.event_retries[ident] = (self.clock.monotonic() + delay, event, tries)
            log.warning("Cannot post event %s on %s: %s; retrying in %gs.", event["reason"],
                        event["involved"]["name"], exc, delay)
            return
        self.event_attempts.pop(ident, None)
        metrics.EVENTS.labels(event["type_"]).inc()
        log.info("Event %s %s on %s/%s (%s).", event["type_"], event["reason"],
                 event["involved"]["namespace"], event["involved"]["name"], outcome)
        key, rule, type_ = ident
        if type_ == "Warning" and key in self.engine.inventory.workloads:
            self.announced.setdefault(key, set()).add(rule)
            self.dirty.add(key)  # resolved while it waited? the next flush posts the Normal event

    def taint_plan(self):
        """What to taint and untaint now, from the nodes' reports (see guywire.gpu.taint)."""
        states = []
        for name, node in self.engine.inventory.nodes.items():
            report, _ = parse_gpu_health(node.annotations.get(GPU_HEALTH))
            taints = self.node_taints.get(name, [])
            states.append(NodeTaintState(name=name, gpu_node=is_gpu_node(node),
                                         state=report.state if report else None,
                                         tainted=has_taint({"spec": {"taints": taints}})))
        return plan_taints(states, self.settings.taint_max_fraction)

    async def apply_taints(self) -> None:
        plan = self.taint_plan()
        for name, add in [(n, True) for n in plan.taint] + [(n, False) for n in plan.untaint]:
            current = [t for t in self.node_taints.get(name, []) if not (isinstance(t, dict)
                                                                          and t.get("key") == GPU_TAINT_KEY)]
            taints = current + [taint_spec()] if add else current
            try:
                await self.client.merge_patch(NODE.path(None, name), {"spec": {"taints": taints}})
            except ApiFailure as exc:
                log.warning("Cannot %s node %s: %s; will retry.", "taint" if add else "untaint", name, exc)
                self.taints_dirty = True
                continue
            self.node_taints[name] = taints
            log.info("%s node %s (%s).", "Tainted" if add else "Untainted", name,
                     "GPUs Unhealthy" if add else "GPUs recovered")
        metrics.TAINTS.set(sum(1 for t in self.node_taints.values()
                               if has_taint({"spec": {"taints": t}})))
        message = plan.message()
        if message and message != self.breaker_message:
            log.warning("%s", message)
            for name in plan.held_back:
                self._queue_event(("node", name, "breaker"), dict(
                    involved={"apiVersion": "v1", "kind": "Node", "name": name, "namespace": "default"},
                    reason="GPUTaintHeldBack", type_="Warning", message=message,
                    key=f"{name}|breaker|{message}"))
        self.breaker_message = message

    def update_insights(self) -> None:
        """Blast radius per workload (its annotation) and the graph's shape as gauges: whole-graph
        figures, so worked out at most every ``insights_interval``, not per event."""
        self.insights_dirty = False
        self.last_insights = self.clock.monotonic()
        started = time.perf_counter()
        report = complexity_report(self.engine)
        blast = {k: br.annotation() for k, br in report.blast_radius.items()}
        changed = {k for k in set(blast) | set(self.blast) if blast.get(k) != self.blast.get(k)}
        self.blast = blast
        self.dirty.update(k for k in changed if k in self.engine.inventory.workloads)
        metrics.COMPLEXITY.clear()
        metrics.FINDINGS_BY_CATEGORY.clear()
        for ns, figures in [("", report.cluster), *report.namespaces.items()]:
            for figure, value in figures.gauges().items():
                metrics.COMPLEXITY.labels(figure, ns).set(value)
            for category, count in figures.findings_by_category.items():
                metrics.FINDINGS_BY_CATEGORY.labels(category, ns).set(count)
        log.info("Insights: %d workloads, longest chain %d, worst amplification %dx (%.0f ms).",
                 report.cluster.workloads, report.cluster.longest_chain, report.cluster.worst_amplification,
                 1000 * (time.perf_counter() - started))

    async def choose_report_api(self) -> str:
        """The report API to write: ``settings.reports_api``, or with ``auto`` openreports.io/v1alpha1 when the
        cluster serves its Report kind (discovery), else wgpolicyk8s.io. Then the reports an earlier run
        wrote with it are adopted, so chunks it no longer needs are deleted and unchanged ones not rewritten."""
        choice = self.settings.reports_api
        if choice == "auto":
            choice = "openreports" if await self._serves("/apis/openreports.io/v1alpha1", "reports") \
                else "wgpolicyk8s"
            log.info("Writing %s reports (reports API %s).", REPORT_APIS[choice][1],
                     "discovered" if self.settings.reports_api == "auto" else "set")
        self.report_api = choice
        await self._adopt_reports(choice)
        return choice

    async def _serves(self, group_version: str, plural: str) -> bool:
        try:
            found = await self.client.get(group_version)
        except ApiFailure:
            return False
        return any(r.get("name") == plural for r in (found or {}).get("resources", ()) if isinstance(r, dict))

    async def _adopt_reports(self, api: str) -> None:
        """Names and digests of the reports guywire wrote before (label app.kubernetes.io/managed-by=guywire)."""
        for kind_name in REPORT_APIS[api][1:]:
            kind = REPORT_KINDS[kind_name]
            try:
                listed = await self.client.get(kind.path(None) + "?labelSelector=" + MANAGED_BY_SELECTOR)
            except ApiFailure as exc:
                if exc.status != 404:
                    log.warning("Cannot list earlier %s objects: %s; stale ones are left.", kind_name, exc)
                continue
            for item in (listed or {}).get("items", ()):
                meta = item.get("metadata") or {}
                ns = meta.get("namespace") if kind.namespaced else None
                self.report_names.setdefault(ns, set()).add(meta.get("name"))
                digest = (meta.get("annotations") or {}).get(DIGEST_ANNOTATION)
                if digest:
                    self.reports_written[(kind_name, ns, meta.get("name"))] = digest

    async def write_policy_reports(self) -> None:
        """Reports of the namespaces whose results changed, written only when their digest did; chunks no longer
        needed (fewer results than before, here or in an earlier run) deleted."""
        if self.reports_unavailable:
            return
        api = self.report_api or await self.choose_report_api()
        _, ns_kind, cluster_kind = REPORT_APIS[api]
        dirty, self.reports_ns_dirty = self.reports_ns_dirty, set()
        reports = policy_reports(self.engine, self.clock.now(), namespaces=dirty,
                                 max_results=self.settings.policy_report_max_results, api=api)
        by_ns: dict[str | None, set[str]] = {}
        for report in reports:
            meta = report["metadata"]
            ns = meta.get("namespace")
            by_ns.setdefault(ns, set()).add(meta["name"])
            ident = (report["kind"], ns, meta["name"])
            digest = meta["annotations"][DIGEST_ANNOTATION]
            if self.reports_written.get(ident) == digest:
                continue
            kind = REPORT_KINDS[report["kind"]]
            try:
                try:
                    await self.client.merge_patch(kind.path(ns, meta["name"]), report)
                except ApiFailure as exc:
                    if exc.status != 404:
                        raise
                    await self.client.request("POST", kind.path(ns), report, retry_conflicts=False)
            except ApiFailure as exc:
                metrics.POLICY_REPORTS.labels("error").inc()
                if exc.status == 404:
                    log.warning("%s is not served (no %s CRDs); not writing reports until the next full audit.",
                                report["kind"], kind.group)
                    self.reports_unavailable = True
                    return
                log.warning("Cannot write %s %s: %s; will retry.", report["kind"], meta["name"], exc)
                self._requeue_reports(dirty, ns)
                continue
            metrics.POLICY_REPORTS.labels("written").inc()
            self.reports_written[ident] = digest
        namespaces = set(self.report_names) | set(by_ns)
        if dirty is not None:
            namespaces &= set(dirty) | set(by_ns)
        for ns in namespaces:
            kept = by_ns.get(ns, set())
            for name in sorted(self.report_names.get(ns, set()) - kept):
                kind = REPORT_KINDS[ns_kind if ns is not None else cluster_kind]
                try:
                    await self.client.request("DELETE", kind.path(ns, name))
                except ApiFailure as exc:
                    if exc.status != 404:
                        log.warning("Cannot delete stale report %s: %s.", name, exc)
                        continue
                metrics.POLICY_REPORTS.labels("deleted").inc()
                self.reports_written.pop((kind.kind, ns, name), None)
            self.report_names[ns] = kept

    def _requeue_reports(self, dirty: set[str] | None, ns: str | None) -> None:
        if self.reports_ns_dirty is not None:
            if dirty is None:
                self.reports_ns_dirty = None
            elif ns is not None:
                self.reports_ns_dirty.add(ns)
        self.status_dirty = True

    def status_for(self, ref: str) -> dict:
        meta = self.policy_meta.get(ref, {})
        gen = meta.get("generation")
        if ref in self.policy_errors:
            return {"observedGeneration": gen, "matched": 0, "violating": 0, "findings": [], "truncated": 0,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
                                    "message": self.policy_errors[ref][:1024], "observedGeneration": gen}]}
        policy = self.policies[ref]
        pr = self.engine.policy_result(policy)
        cap = self.settings.findings_cap
        findings = [{"rule": f.rule, "severity": f.severity.value, "workload": str(f.workload),
                     "message": f.render()[:1024]} for f in pr.findings[:cap]]
        return {"observedGeneration": gen, "matched": pr.matched, "violating": pr.violating, "findings": findings,
                "truncated": max(0, len(pr.findings) - cap),
                "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated",
                                "message": f"{pr.matched} workload(s) matched, {pr.violating} violating.",
                                "observedGeneration": gen},
                               evaluation_errors_condition(pr.errors, gen)]}

    async def write_statuses(self) -> None:
        self._update_finding_metrics()
        for ref in list(self.policy_meta):
            status = self.status_for(ref)
            if self.status_written.get(ref) == status:
                continue
            meta = self.policy_meta[ref]
            kind = POLICY_KINDS[meta["kind"]]
            stamp = rfc3339(self.clock.now())
            body = dict(status, lastEvaluated=stamp,
                        conditions=[dict(c, lastTransitionTime=stamp) for c in status["conditions"]])
            try:
                await self.client.merge_patch(kind.path(meta["namespace"], meta["name"], "status"), {"status": body})
            except ApiFailure as exc:
                metrics.PATCHES.labels("status", "error").inc()
                if exc.status != 404:
                    log.warning("Cannot write the status of %s: %s; will retry.", ref, exc)
                    self.status_dirty = True
                continue
            metrics.PATCHES.labels("status", "ok").inc()
            self.status_written[ref] = status
            log.info("Status of %s: %s matched, %s violating.", ref, status["matched"], status["violating"])
            errors = next((c for c in status["conditions"] if c["type"] == "EvaluationErrors"), None)
            if errors is not None and errors["status"] == "True":
                log.warning("Policy %s: %s", ref, errors["message"])

    def _update_finding_metrics(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for key in self.engine.results:
            for f in self.engine.findings_for(key):
                k = (f.rule, f.severity.value, key[0])
                counts[k] = counts.get(k, 0) + 1
        metrics.FINDINGS.clear()
        for (rule, sev, ns), n in counts.items():
            metrics.FINDINGS.labels(rule, sev, ns).set(n)
        raised: dict[tuple[str, str], int] = {}
        for e in self.engine.all_errors():
            k = (e.rule, e.object.namespace or "")
            raised[k] = raised.get(k, 0) + 1
        metrics.EVALUATION_ERRORS.clear()
        for (rule, ns), n in raised.items():
            metrics.EVALUATION_ERRORS.labels(rule, ns).set(n)
        metrics.WORKLOADS_INDEXED.set(len(self.engine.inventory.workloads))
        metrics.SERVICES_INDEXED.set(len(self.engine.inventory.services))
        metrics.POLICIES.labels("true").set(len(self.policies))
        metrics.POLICIES.labels("false").set(len(self.policy_errors))

    def admission(self) -> Admission:
        return Admission(self.engine, own_namespace=self.settings.own_namespace,
                         own_users=self.settings.own_users, ready=self.warm)

    # ----- background loops --------------------------------------------------------------------
    def recheck_nodes(self) -> None:
        """GPU reports go stale with time alone (GW-GPU-003): judge the nodes again against the clock."""
        if not self.warm or not self.engine.inventory.nodes:
            return
        self.tick()
        before = ({n: [f.render() for found in per.values() for f in found]
                   for n, per in self.engine.node_results.items()}, dict(self.engine.node_errors))
        self.engine.evaluate_nodes()
        after = ({n: [f.render() for found in per.values() for f in found]
                  for n, per in self.engine.node_results.items()}, dict(self.engine.node_errors))
        if after != before:
            self.status_dirty = True

    async def writer_loop(self) -> None:
        last_node_check = self.clock.monotonic()
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            try:
                if self.clock.monotonic() - last_node_check >= self.settings.node_recheck_interval:
                    last_node_check = self.clock.monotonic()
                    async with self.engine_lock:
                        self.recheck_nodes()
                if self.relists:
                    async with self.engine_lock:  # the listing is awaited under it too: rare, and short
                        await self.sweep_relisted()
                await self.flush()
            except Exception:  # never let one bad write stop the loop
                log.exception("Writing results failed; will retry.")

    async def audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_interval)
            log.info("Periodic full audit.")
            async with self.engine_lock:
                self.full_audit()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.writer_loop()), loop.create_task(self.post_events()),
                      loop.create_task(self.audit_loop()), loop.create_task(self.gate_loop())]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.warm and self.client is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout=5)
            except Exception:
                pass


__all__ = ["OperatorState", "Settings", "fingerprint"]
