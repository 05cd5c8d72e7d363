"""Each writer's own bookkeeping: what it wrote, what is left to write, and what a failed write leaves
behind (retried, never recorded as written); and the metrics each operator counts into on its own."""
from __future__ import annotations

import asyncio
import json

from guywire.clock import ManualClock
from guywire.kube.client import ApiFailure
from guywire.operator.metrics import OperatorMetrics
from guywire.model.gpu_report import GPU_TAINT_KEY
from guywire.operator.event_writer import EVENT_RETRY_BASE_S, EventWriter
from guywire.operator.settings import Settings
from guywire.operator.state import OperatorState
from tests.unit.test_operator_state import RecordingClient, annotation_patches, drain, example_bodies, started

GW = ("ml", "Deployment", "gateway")
INVOLVED = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway", "namespace": "ml"}


class Refusing(RecordingClient):
    """Refuses the paths containing ``refuse`` with ``status``, ``times`` times (forever: None)."""

    def __init__(self, refuse: str, status: int = 500, times: int | None = None):
        super().__init__()
        self.refuse, self.status, self.times = refuse, status, times

    def _refused(self, path: str) -> bool:
        if self.refuse not in path or self.times == 0:
            return False
        if self.times is not None:
            self.times -= 1
        return True

    async def merge_patch(self, path, body):
        if self._refused(path):
            raise ApiFailure(self.status, "injected")
        return await super().merge_patch(path, body)

    async def request(self, method, path, body=None, *args, **kw):
        if method == "POST" and self._refused(path):
            raise ApiFailure(self.status, "injected")
        return await super().request(method, path, body, *args, **kw)

    async def post_event(self, **kw):
        if self._refused("event"):
            raise ApiFailure(self.status, "injected")
        return await super().post_event(**kw)


# ----- Events ----------------------------------------------------------------------------------------
def event_writer(client, clock, known=lambda key: True, settings=None):
    accepted: list = []
    writer = EventWriter(client, settings or Settings(), OperatorMetrics(), clock, known=known,
                         accepted=accepted.append)
    return writer, accepted


async def post_queued(writer: EventWriter) -> None:
    writer.requeue_due()
    while writer.queue:
        await writer.post(*writer.queue.popitem(last=False))


def test_a_warning_whose_post_fails_is_retried_with_backoff_and_recorded_only_once_accepted():
    clock, client = ManualClock(), Refusing("event", 503, times=2)
    writer, accepted = event_writer(client, clock)
    writer.queue_for(GW, INVOLVED, [("Warning", "GW-RTY-002", {"message": "m", "key": "k"})])
    asyncio.run(post_queued(writer))
    ident = (GW, "GW-RTY-002", "Warning")
    assert writer.retries[ident][0] == clock.monotonic() + EVENT_RETRY_BASE_S and GW not in writer.announced
    clock.advance(EVENT_RETRY_BASE_S - 1)
    asyncio.run(post_queued(writer))
    assert not client.events and writer.attempts[ident] == 1, "not due yet"
    clock.advance(1)
    asyncio.run(post_queued(writer))  # the second failure: the backoff doubles
    assert writer.retries[ident][0] == clock.monotonic() + 2 * EVENT_RETRY_BASE_S and accepted == []
    clock.advance(2 * EVENT_RETRY_BASE_S)
    asyncio.run(post_queued(writer))
    assert [e["reason"] for e in client.events] == ["GW-RTY-002"]
    assert writer.announced == {GW: {"GW-RTY-002"}} and accepted == [GW]
    assert not writer.retries and not writer.attempts
    assert writer.metrics.sample("guywire_api_errors_total", operation="event") == 2
    assert writer.metrics.sample("guywire_events_total", type="Warning") == 1


def test_a_normal_event_ends_the_announcement_at_once_and_an_unknown_workload_is_not_announced():
    clock = ManualClock()
    writer, accepted = event_writer(RecordingClient(), clock, known=lambda key: False)
    writer.seen(GW, {"GW-RTY-002", "GW-OBS-004"})
    writer.queue_for(GW, INVOLVED, [("Normal", "GW-OBS-004", {"message": "m", "key": "k1"}),
                                    ("Warning", "GW-RES-001", {"message": "m", "key": "k2"})])
    assert writer.announced == {GW: {"GW-RTY-002"}}, "Normal: at once; Warning: not before it is accepted"
    asyncio.run(post_queued(writer))
    assert writer.announced == {GW: {"GW-RTY-002"}} and accepted == [], "deleted meanwhile: nothing to record"
    writer.queue_for(GW, INVOLVED, [("Normal", "GW-RTY-002", {"message": "m", "key": "k3"})])
    assert GW not in writer.announced, "no empty set kept"


def test_a_newer_event_replaces_a_retry_and_a_full_queue_drops_its_oldest():
    clock = ManualClock()
    writer, _ = event_writer(Refusing("event", 503, times=1), clock, settings=Settings(event_queue_max=2))
    writer.put(("a",), {"reason": "R", "type_": "Warning", "involved": INVOLVED, "message": "old", "key": "1"})
    asyncio.run(post_queued(writer))
    assert ("a",) in writer.retries
    writer.put(("a",), {"reason": "R", "type_": "Warning", "involved": INVOLVED, "message": "new", "key": "2"})
    assert ("a",) not in writer.retries and ("a",) not in writer.attempts and writer.queue[("a",)]["message"] == "new"
    writer.put(("b",), {})
    writer.put(("c",), {})
    assert list(writer.queue) == [("b",), ("c",)]
    assert writer.metrics.sample("guywire_events_dropped_total") == 1


# ----- annotations -----------------------------------------------------------------------------------
def test_what_annotations_hold_is_read_once_and_recorded_only_after_an_accepted_patch():
    client = Refusing("/deployments/gateway", 500, times=1)
    state = started(client)
    writer = state.annotation_writer
    assert writer.written[GW] == ("", "", ""), "read from the annotations when first seen"
    asyncio.run(state.flush())
    assert GW in writer.dirty and writer.written[GW] == ("", "", ""), "refused: still pending, nothing recorded"
    assert state.metrics.sample("guywire_patches_total", target="workload", outcome="error") == 1
    asyncio.run(state.flush())
    assert GW not in writer.dirty and writer.written[GW][0].startswith("GW-RTY-002")
    body = next(b for b in example_bodies() if b["metadata"]["name"] == "gateway")
    body["metadata"]["labels"] = {**body["metadata"].get("labels", {}), "touched": "yes"}
    state.observe(body)  # its annotations (still the old ones) are not read again
    assert writer.written[GW][0].startswith("GW-RTY-002")


def test_an_annotation_patch_on_a_deleted_workload_is_not_retried():
    state = started(Refusing("/deployments/gateway", 404))
    asyncio.run(state.flush())
    assert GW not in state.annotation_writer.dirty and state.annotation_writer.written[GW] == ("", "", "")


# ----- policy status ---------------------------------------------------------------------------------
def test_a_status_is_written_once_rewritten_after_a_failure_and_after_its_policy_was_forgotten():
    client = Refusing("ai-baseline/status", 500, times=1)
    state = started(client)
    ref = "ClusterComplexityPolicy/ai-baseline"
    writer = state.status_writer
    writer.dirty = False  # as the state's flush does before writing
    asyncio.run(writer.write())
    assert ref not in writer.written and writer.dirty
    asyncio.run(writer.write())
    statuses = [p for p, _ in client.patches if p.endswith("ai-baseline/status")]
    assert len(statuses) == 1 and writer.written[ref] == writer.status_for(ref)
    asyncio.run(writer.write())
    assert len([p for p, _ in client.patches if p.endswith("ai-baseline/status")]) == 1, "unchanged: not again"
    writer.forget(ref)
    asyncio.run(writer.write())
    assert len([p for p, _ in client.patches if p.endswith("ai-baseline/status")]) == 2


# ----- reports ---------------------------------------------------------------------------------------
def test_a_report_write_that_fails_is_retried_for_its_namespace_only_once_written():
    client = Refusing("policyreports/guywire-ml", 500, times=1)
    state = started(client)
    writer = state.report_writer
    asyncio.run(state.flush())
    assert writer.retry and not any(k[2] == "guywire-ml" for k in writer.written)
    assert writer.ns_dirty is None, "the first pass was every namespace: so is its retry"
    asyncio.run(state.flush())
    assert not writer.retry and any(k[2] == "guywire-ml" for k in writer.written)
    written = len(client.patches)
    asyncio.run(state.flush())
    assert len(client.patches) == written, "nothing changed, nothing written"


def test_reports_not_served_stop_until_every_workload_is_judged_again():
    client = Refusing("policyreports", 404)
    state = started(client)
    asyncio.run(state.flush())
    assert state.report_writer.unavailable and state.report_writer.api == "wgpolicyk8s"
    state.full_audit()
    assert not state.report_writer.unavailable and state.report_writer.api is None, "discovered again"


# ----- taints ----------------------------------------------------------------------------------------
def gpu_node(name: str, health: str) -> dict:
    report = json.dumps({"state": health, "reportedAt": "2031-03-04T05:00:00Z", "driverVersion": "550.90.07",
                         "reasons": [] if health == "Healthy" else ["GPU 0: XID 79."],
                         "gpus": [{"index": 0, "state": health, "reasons": []}]})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true"},
                         "annotations": {"guywire.dev/gpu-health": report}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}


def test_a_refused_taint_is_retried_and_the_breaker_speaks_once():
    client = Refusing("/nodes/gpu-a", 500, times=1)
    state = OperatorState(client, Settings(taint_unhealthy_gpu_nodes=True, taint_max_fraction=0.5),
                          clock=ManualClock("2031-03-04T05:01:00Z"))
    for name, health in [("gpu-a", "Unhealthy"), ("gpu-b", "Unhealthy"), ("gpu-c", "Unhealthy"), ("gpu-d", "Healthy")]:
        state.observe(gpu_node(name, health))
    state.warm_up()
    writer = state.taint_writer

    def tainted() -> list[str]:
        return sorted(n for n, t in writer.node_taints.items() if any(x.get("key") == GPU_TAINT_KEY for x in t))

    asyncio.run(writer.write())
    assert writer.dirty and tainted() == ["gpu-b"], "gpu-a refused: tried again, not recorded as tainted"
    assert state.metrics.sample("guywire_gpu_nodes_tainted") == 1
    held = [i for i in state.event_writer.queue if i[0] == "node"]
    assert held == [("node", "gpu-c", "breaker")], "3 Unhealthy of 4 GPU nodes, at most 2 tainted"
    state.event_writer.queue.clear()
    asyncio.run(writer.write())
    assert not writer.dirty and tainted() == ["gpu-a", "gpu-b"]
    assert state.metrics.sample("guywire_gpu_nodes_tainted") == 2
    assert not state.event_writer.queue, "the breaker's unchanged message is not said again"


# ----- metrics ---------------------------------------------------------------------------------------
def test_two_operators_in_one_process_count_apart():
    first, second = started(), OperatorState(RecordingClient(), Settings(status_interval=0))
    asyncio.run(drain(first))
    assert annotation_patches(first.client)
    assert first.metrics.sample("guywire_patches_total", target="workload", outcome="ok") > 0
    assert second.metrics.sample("guywire_patches_total", target="workload", outcome="ok") == 0
    assert first.metrics.registry is not second.metrics.registry
    assert first.event_writer.metrics is first.metrics and first.index.metrics is first.metrics
