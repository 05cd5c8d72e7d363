"""The Events writer: a bounded queue drained at a global rate, retries with backoff, and the record of
which Warnings the API accepted (``announced``), which the desired() decision reads."""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Callable

from ..clock import SYSTEM, Clock
from ..kube.client import ApiFailure, KubeClient
from .metrics import OperatorMetrics
from .settings import Settings

log = logging.getLogger("guywire.operator")
WKey = tuple[str, str, str]
EVENT_RETRY_BASE_S = 5.0
EVENT_RETRY_MAX_S = 300.0


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


class EventWriter:
    """Events keyed by ``ident`` (workload key, rule, type; or a node's): a newer one for the same ident
    replaces a queued or retried one. ``accepted(key)`` is called when the API accepted a Warning for a
    workload the index still has (``known(key)``), so its annotations are judged again."""

    def __init__(self, client: KubeClient | None, settings: Settings, metrics: OperatorMetrics,
                 clock: Clock = SYSTEM, known: Callable[[WKey], bool] = lambda key: True,
                 accepted: Callable[[WKey], None] = lambda key: None):
        self.client, self.settings, self.metrics, self.clock = client, settings, metrics, clock
        self.known, self.accepted = known, accepted
        self.queue: OrderedDict[tuple, dict] = OrderedDict()
        self.retries: dict[tuple, tuple[float, dict, int]] = {}  # ident -> (due, event, attempts)
        self.attempts: dict[tuple, int] = {}
        self.announced: dict[WKey, set[str]] = {}  # rules whose Warning event was posted
        self.bucket = TokenBucket(settings.events_per_second, settings.events_burst, clock)

    # ----- what was announced --------------------------------------------------------------------
    def seen(self, key: WKey, announced: set[str]) -> None:
        """A workload first seen: the rules its annotations say were announced (a restart forgets nothing)."""
        if announced:  # most workloads have none: no empty set each (216 bytes)
            self.announced[key] = announced

    def forget(self, key: WKey) -> None:
        self.announced.pop(key, None)

    def queue_for(self, key: WKey, involved: dict, events: list[tuple[str, str, dict]]) -> None:
        """Queue a workload's Events (from desired()). A Normal one ("no longer violated") ends the rule's
        announcement at once; a Warning counts as announced once the API has accepted it (``post``)."""
        announced = self.announced.setdefault(key, set())
        for type_, rule, ev in events:
            if type_ != "Warning":
                announced.discard(rule)
            self.put((key, rule, type_), dict(involved=involved, reason=rule, type_=type_, **ev))
        if not announced:
            del self.announced[key]

    # ----- the queue -----------------------------------------------------------------------------
    def put(self, ident: tuple, event: dict) -> None:
        self.retries.pop(ident, None)  # a newer event for the same workload x rule supersedes a retry
        self.attempts.pop(ident, None)
        if ident in self.queue:
            self.queue[ident] = event
            return
        if len(self.queue) >= self.settings.event_queue_max:
            self.queue.popitem(last=False)
            self.metrics.events_dropped.inc()
        self.queue[ident] = event

    async def run(self) -> None:
        """Drain the Event queue at the global rate; runs for the operator's lifetime."""
        while True:
            self.requeue_due()
            if not self.queue or self.client is None:
                await asyncio.sleep(0.1)
                continue
            wait = self.bucket.wait_time()
            if wait:
                await asyncio.sleep(wait)
                continue
            ident, event = self.queue.popitem(last=False)
            await self.post(ident, event)

    def requeue_due(self) -> None:
        """Put the Events whose retry time has come back into the queue."""
        if not self.retries:
            return
        now = self.clock.monotonic()
        for ident in [i for i, (due, _, _) in self.retries.items() if due <= now]:
            _, event, _ = self.retries.pop(ident)
            if ident not in self.queue:
                self.queue[ident] = event

    async def post(self, ident: tuple, event: dict) -> None:
        """Post one Event. A Warning counts as announced only once the API accepted it; one the API refused
        for a reason that may pass (unreachable, 5xx, 429, 403 while RBAC settles) is retried with backoff
        (``EVENT_RETRY_BASE_S`` doubling up to ``EVENT_RETRY_MAX_S``), never lost; one it found invalid is
        dropped and counted."""
        try:
            outcome = await self.client.post_event(instance=self.settings.instance, **event)
        except ApiFailure as exc:
            self.metrics.api_errors.labels("event").inc()
            if exc.status in (400, 422):
                self.metrics.events_dropped.inc()
                log.warning("Event %s on %s refused as invalid: %s; dropped.", event["reason"],
                            event["involved"]["name"], exc)
                return
            tries = self.attempts.get(ident, 0) + 1
            self.attempts[ident] = tries
            delay = min(EVENT_RETRY_MAX_S, EVENT_RETRY_BASE_S * 2 ** (tries - 1))
            if len(self.retries) >= self.settings.event_queue_max:
                dropped = next(iter(self.retries))
                self.retries.pop(dropped)
                self.attempts.pop(dropped, None)
                self.metrics.events_dropped.inc()
            self.retries[ident] = (self.clock.monotonic() + delay, event, tries)
            log.warning("Cannot post event %s on %s: %s; retrying in %gs.", event["reason"],
                        event["involved"]["name"], exc, delay)
            return
        self.attempts.pop(ident, None)
        self.metrics.events.labels(event["type_"]).inc()
        log.info("Event %s %s on %s/%s (%s).", event["type_"], event["reason"],
                 event["involved"]["namespace"], event["involved"]["name"], outcome)
        key, rule, type_ = ident
        if type_ == "Warning" and self.known(key):
            self.announced.setdefault(key, set()).add(rule)
            self.accepted(key)  # resolved while it waited? the next flush posts the Normal event
