"""The annotations writer: each dirty workload's guywire.dev/* annotations patched when desired() says they
differ from what they hold (``written``), and its Events handed to the Events writer."""
from __future__ import annotations

import asyncio
import logging

from ..views.annotations import COMPLEXITY_SCORE, VIOLATIONS
from ..clock import SYSTEM, Clock
from ..kube.client import WORKLOAD_KINDS, ApiFailure, KubeClient
from .metrics import OperatorMetrics
from ..views.workload import Workload
from .desired import NOTHING_WRITTEN, Desired, Written, announced_of, desired, written_by, written_of
from .event_writer import EventWriter
from .figures import GraphFigures
from .index import Index

log = logging.getLogger("guywire.operator")
WKey = tuple[str, str, str]


class AnnotationWriter:
    def __init__(self, client: KubeClient | None, index: Index, figures: GraphFigures, events: EventWriter,
                 metrics: OperatorMetrics, clock: Clock = SYSTEM, concurrency: int = 8):
        self.client, self.index, self.figures, self.events = client, index, figures, events
        self.metrics, self.clock, self.concurrency = metrics, clock, concurrency
        self.written: dict[WKey, Written] = {}  # what our annotations hold
        self.dirty: set[WKey] = set()

    def seen(self, view: Workload) -> None:
        """A workload observed: the first time, what its annotations already hold (an earlier run's)."""
        if view.key not in self.written:
            self.written[view.key] = written_of(view.annotations)
            self.events.seen(view.key, announced_of(view.annotations))

    def forget(self, key: WKey) -> None:
        self.written.pop(key, None)
        self.events.forget(key)

    def desired(self, key: WKey) -> Desired:
        """desired() for one workload from the index's engine (nothing to do for one it does not hold)."""
        engine = self.index.engine
        w = engine.inventory.workloads.get(key)
        if w is None:
            return Desired(None, [])
        per = engine.results.get(key, {})
        return desired(w, per, engine.score(key) if per else None, self.figures.blast.get(key, ""),
                       written=self.written.get(key, NOTHING_WRITTEN), announced=self.events.announced.get(key, set()),
                       enforcement=self.index.enforcement_of, now=self.clock.now())

    async def flush(self) -> int:
        """Write every dirty workload, a few at a time; returns how many were taken."""
        keys, self.dirty = self.dirty, set()
        pending = iter(keys)

        async def writer() -> None:  # a few writers taking keys in turn, not a task per key
            for key in pending:
                await self.write(key)

        await asyncio.gather(*(writer() for _ in range(min(self.concurrency, len(keys)))))
        return len(keys)

    async def write(self, key: WKey) -> None:
        w = self.index.engine.inventory.workloads.get(key)
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
                self.metrics.patches.labels("workload", "error").inc()
                if exc.status == 404:
                    return  # deleted meanwhile; the watch will tell
                log.warning("Cannot annotate %s: %s; will retry.", w.ref, exc)
                self.dirty.add(key)
                return
            self.metrics.patches.labels("workload", "ok").inc()
            self.written[key] = written_by(patch)
            log.info("Annotated %s: violations=%s score=%s.", w.ref, patch.get(VIOLATIONS) or "none",
                     patch.get(COMPLEXITY_SCORE))
        if not events:
            return
        involved = {"apiVersion": kind.api_version, "kind": w.kind, "name": w.name, "namespace": w.namespace}
        if w.uid:
            involved["uid"] = w.uid
        self.events.queue_for(key, involved, events)
