"""The operator's state: an index fed from watch events, and one writer per target it writes.

Handlers (handlers.py) only translate kopf's calls into ``observe`` / ``forget``. The index (index.py)
feeds the engine and tells this state what changed; the state tells the writers, each keeping its own
bookkeeping of what it wrote and what is left to write: annotations (annotation_writer.py, from the pure
desired() decision in desired.py), Events (event_writer.py), policy status (status_writer.py), PolicyReports
(report_writer.py) and GPU taints (taint_writer.py). ``flush`` runs them in batches, never writing more than
the results changed. The metrics (one ``OperatorMetrics``) travel with the state, through kopf's memo.
"""
from __future__ import annotations

import asyncio
import logging

from ..engine.admission import Admission
from ..clock import SYSTEM, Clock
from ..engine.evaluator import Engine
from ..kube.client import KubeClient
from .metrics import OperatorMetrics
from ..views.workload import Workload
from .annotation_writer import AnnotationWriter
from .event_writer import EventWriter
from .figures import GraphFigures
from ..speed.memory import release_free_memory
from .index import Index, WKey
from .report_writer import ReportWriter
from .settings import Settings
from .status_writer import StatusWriter
from .taint_writer import TaintWriter

log = logging.getLogger("guywire.operator")


class OperatorState:
    """The index, the writers, and the loops that run them. It is also the index's ``Changes`` listener:
    each change is routed to the writers it concerns."""

    def __init__(self, client: KubeClient | None, settings: Settings | None = None, clock: Clock = SYSTEM,
                 metrics: OperatorMetrics | None = None):
        self.client = client
        self.settings = settings = settings or Settings()
        self.clock = clock  # every time this state reads: judging, stamps, intervals, the Event rate
        self.metrics = metrics = metrics or OperatorMetrics()
        self.index = Index(client, settings, clock, metrics, changes=self)
        self.figures = GraphFigures(metrics, settings.insights_interval, clock)
        self.event_writer = EventWriter(client, settings, metrics, clock,
                                        known=lambda key: key in self.engine.inventory.workloads,
                                        accepted=lambda key: self.annotation_writer.dirty.add(key))
        self.annotation_writer = AnnotationWriter(client, self.index, self.figures, self.event_writer, metrics, clock,
                                                  concurrency=settings.write_concurrency)
        self.status_writer = StatusWriter(client, self.index, settings, metrics, clock)
        self.report_writer = ReportWriter(client, self.index, settings, metrics, clock)
        self.taint_writer = TaintWriter(client, self.index, self.event_writer, settings, metrics)
        self.tasks: list[asyncio.Task] = []
        self.last_status_flush = -float("inf")  # never

    # ----- what handlers and the webhook use -----------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self.index.engine

    @property
    def warm(self) -> bool:
        return self.index.warm

    @property
    def engine_lock(self) -> asyncio.Lock:
        return self.index.engine_lock

    def observe(self, body: dict) -> None:
        self.index.observe(body)

    def forget(self, kind: str, namespace: str | None, name: str) -> None:
        self.index.forget(kind, namespace, name)

    def listed(self, kind: str | None, api_version: str | None = None, plural: str | None = None) -> None:
        self.index.listed(kind, api_version, plural)

    def warm_up(self) -> None:
        self.index.warm_up()

    def full_audit(self) -> None:
        self.index.full_audit()

    def admission(self) -> Admission:
        return Admission(self.engine, own_namespace=self.settings.own_namespace,
                         own_users=self.settings.own_users, ready=self.warm)

    # ----- Changes: what the index says, to the writers it concerns ------------------------------
    def workloads_changed(self, keys: set[WKey]) -> None:
        self.annotation_writer.dirty.update(keys)
        if keys:
            self.status_writer.dirty = True
            self.figures.dirty = True
            self.report_writer.mark(k[0] for k in keys)

    def all_reevaluated(self, keys: set[WKey]) -> None:
        self.workloads_changed(keys)
        self.status_writer.dirty = True
        self.report_writer.mark_all()

    def policy_changed(self, ref: str) -> None:
        self.status_writer.dirty = True

    def policy_forgotten(self, ref: str) -> None:
        self.status_writer.forget(ref)

    def node_results_changed(self) -> None:
        self.status_writer.dirty = True

    def workload_seen(self, view: Workload) -> None:
        self.annotation_writer.seen(view)

    def workload_forgotten(self, key: WKey) -> None:
        self.annotation_writer.forget(key)

    def node_seen(self, name: str, taints: list) -> None:
        self.taint_writer.seen(name, taints)

    def node_forgotten(self, name: str) -> None:
        self.taint_writer.forget(name)

    # ----- writing -----------------------------------------------------------------------------
    async def flush(self) -> None:
        if not self.warm or self.client is None:
            return
        if self.figures.due():
            changed = self.figures.update(self.engine)
            self.annotation_writer.dirty.update(k for k in changed if k in self.engine.inventory.workloads)
        if await self.annotation_writer.flush() >= 1000:
            release_free_memory()  # after the first evaluation's writes, or an audit's
        if self.settings.taint_unhealthy_gpu_nodes and self.taint_writer.dirty:
            await self.taint_writer.write()
        if ((self.status_writer.dirty or self.report_writer.retry)
                and self.clock.monotonic() - self.last_status_flush >= self.settings.status_interval):
            self.status_writer.dirty = False
            self.last_status_flush = self.clock.monotonic()
            await self.status_writer.write()
            if self.settings.policy_reports:
                await self.report_writer.write()

    # ----- background loops --------------------------------------------------------------------
    async def writer_loop(self) -> None:
        last_node_check = self.clock.monotonic()
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            try:
                if self.clock.monotonic() - last_node_check >= self.settings.node_recheck_interval:
                    last_node_check = self.clock.monotonic()
                    async with self.engine_lock:
                        self.index.recheck_nodes()
                if self.index.relists:
                    async with self.engine_lock:  # the listing is awaited under it too: rare, and short
                        await self.index.sweep_relisted()
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
        self.tasks = [loop.create_task(self.writer_loop()), loop.create_task(self.event_writer.run()),
                      loop.create_task(self.audit_loop()), loop.create_task(self.index.gate_loop())]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.warm and self.client is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout=5)
            except Exception:
                pass


__all__ = ["OperatorState", "Settings"]
