"""A Warning Event the API does not accept is retried later with backoff, and counts as announced only
once the API accepted it."""
from __future__ import annotations

import asyncio

from guywire.clock import ManualClock
from guywire.kube.client import ApiFailure
from guywire.operator.settings import Settings
from guywire.operator.state import OperatorState
from tests.unit.test_operator_state import RecordingClient, example_bodies


class FlakyEvents(RecordingClient):
    def __init__(self, failures: int, status: int = 503):
        super().__init__()
        self.failures, self.status, self.tries = failures, status, 0

    async def post_event(self, **kw):
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise ApiFailure(self.status, "injected")
        return await super().post_event(**kw)


def warmed(status: int = 503) -> tuple[OperatorState, FlakyEvents, ManualClock]:
    """A warm state whose Event posts fail with ``status`` until told otherwise, its first pass flushed."""
    clock = ManualClock()
    client = FlakyEvents(failures=10**6, status=status)
    state = OperatorState(client, Settings(status_interval=0, events_per_second=1000, events_burst=1000), clock=clock)
    for body in example_bodies():
        state.observe(body)
    state.warm_up()
    asyncio.run(state.flush())
    return state, client, clock


async def post_all(state: OperatorState) -> None:
    state.event_writer.requeue_due()
    while state.event_writer.queue:
        ident, event = state.event_writer.queue.popitem(last=False)
        await state.event_writer.post(ident, event)


def gateway_warning(state: OperatorState) -> tuple:
    return next(i for i in list(state.event_writer.queue) if i[0][2] == "gateway" and i[1] == "GW-RTY-002")


def test_a_failed_warning_is_retried_until_accepted_and_only_then_announced():
    state, client, clock = warmed()
    ident = gateway_warning(state)
    key = ident[0]
    for _ in range(6):  # more than the client's own five attempts: still not lost
        asyncio.run(post_all(state))
        assert ident in state.event_writer.retries and "GW-RTY-002" not in state.event_writer.announced.get(key, set())
        clock.advance(10_000)
    client.failures = 0
    asyncio.run(post_all(state))
    assert ident not in state.event_writer.retries
    assert "GW-RTY-002" in state.event_writer.announced[key]
    assert [e for e in client.events if e["name"] == "gateway" and e["reason"] == "GW-RTY-002"]


def test_a_retry_waits_for_its_backoff_and_is_not_posted_twice():
    state, client, clock = warmed()
    ident = gateway_warning(state)
    asyncio.run(post_all(state))
    tries = client.tries
    asyncio.run(post_all(state))  # not due yet: nothing posted
    assert client.tries == tries
    state.annotation_writer.dirty.add(ident[0])
    asyncio.run(state.flush())  # the workload judged again: one pending event for the rule, not two
    assert list(state.event_writer.queue).count(ident) == 1 and ident not in state.event_writer.retries


def test_an_invalid_event_is_dropped_not_retried():
    state, client, _ = warmed(422)
    asyncio.run(post_all(state))
    assert not state.event_writer.retries and not state.event_writer.queue
