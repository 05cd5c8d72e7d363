"""XID events: arrival through the event set (and its thread), latching, and clearing after a reset or reboot."""
from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timedelta, timezone

from guywire.clock import ManualClock
from guywire.gpu.agent import NodeAgent
from guywire.gpu.classify import HealthTracker
from guywire.gpu.fake import FakeNvml
from guywire.gpu.nvml import NvmlReader
from guywire.model.gpu_report import HealthState, parse_gpu_health

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


class Run:
    """A fake node read by a tracker, one read per ``next()``, 30 s apart on one clock: the reader stamps
    XID events with it and the tracker judges by it (T0 is long past: nothing depends on today's date)."""

    def __init__(self, scenario: dict):
        self.clock = ManualClock(T0)
        self.fake = FakeNvml(scenario, self.clock)
        self.reader = NvmlReader(self.fake, clock=self.fake.clock)
        self.reader.open()
        self.tracker = HealthTracker()

    def next(self):
        self.clock.advance(30)
        readings = self.reader.read()
        return self.tracker.assess(readings, self.clock.now(), boot_id=self.fake.boot_id)

    def states(self, n: int) -> list[HealthState]:
        return [self.next().state for _ in range(n)]


def test_the_event_thread_delivers_an_xid_as_it_arrives():
    fake = FakeNvml({"gpus": [{"uuid": "GPU-a"}, {"uuid": "GPU-b"}]})
    with NvmlReader(fake, clock=fake.clock) as reader:
        arrived = threading.Event()
        reader.xids.start(on_event=arrived.set)
        try:
            assert reader.read(drain_events=False).gpus[1].xids == []
            fake.inject_xid(1, 79)
            assert arrived.wait(5), "the event thread did not see the XID"
            readings = reader.read(drain_events=False)
        finally:
            reader.xids.stop()
    assert [x.xid for x in readings.gpus[1].xids] == [79]
    assert readings.gpus[1].xids[0].uuid == "GPU-b" and readings.gpus[0].xids == []


def test_an_xid_wakes_the_agent_before_its_interval():
    fake = FakeNvml({"gpus": [{"uuid": "GPU-a"}]})
    out = io.StringIO()
    reader = NvmlReader(fake, clock=fake.clock)
    reader.open()
    agent = NodeAgent(reader, node_name="gpu-1", dry_run=True, out=out, err=io.StringIO())
    thread = threading.Thread(target=agent.run, args=(3600.0,), daemon=True)
    thread.start()
    try:
        _wait(lambda: out.getvalue().count("\n") >= 1)
        fake.inject_xid(0, 48)
        _wait(lambda: out.getvalue().count("\n") >= 2)
    finally:
        agent.stop()
        thread.join(5)
        reader.close()
    assert not thread.is_alive()
    first, second = (json.loads(line) for line in out.getvalue().splitlines()[:2])
    assert first["state"] == "Healthy" and second["state"] == "Unhealthy"
    assert second["gpus"][0]["latched"][0]["xid"] == 48


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not predicate():
        assert datetime.now() < deadline, "timed out"
        threading.Event().wait(0.02)


def test_xids_of_a_later_step_arrive_with_that_step():
    run = Run({"gpus": [{}], "steps": [{"gpus": [{"xids": [95]}]}, {}]})
    first, second, third = run.next(), run.next(), run.next()
    assert first.state is H
    assert second.state is U and "XID 95 (Uncontained memory error)" in second.reasons[0]
    assert third.state is U, "an XID latches: the GPU stays Unhealthy after the event"
    assert "holds until the GPU is reset or the node reboots" in third.reasons[0]


def test_a_latched_xid_clears_after_the_gpu_is_reset():
    run = Run({"gpus": [{}], "steps": [
        {"gpus": [{"xids": [48], "recoveryAction": 1, "eccUncorrectedVolatile": 1}]},
        {"gpus": [{}]},  # nothing new: still latched, still asking for a reset
        {"gpus": [{"reset": True}]},  # reset: recovery action NONE, volatile ECC cleared
        {},
    ]})
    assert run.states(5) == [H, U, U, H, H]


def test_a_latched_xid_clears_when_the_node_reboots():
    run = Run({"bootId": "boot-1", "gpus": [{}], "steps": [
        {"gpus": [{"xids": [119], "notSupported": ["recoveryAction"]}]},
        {},
        {"bootId": "boot-2"},
    ]})
    states = run.states(4)
    assert states == [H, U, U, H]


def test_a_latch_holds_without_evidence_of_a_reset():
    run = Run({"bootId": "boot-1", "gpus": [{}], "steps": [{"gpus": [{"xids": [140]}]}, {"reads": 5}]})
    assert run.states(7) == [H] + [U] * 6


def test_a_latch_waits_for_a_healthy_recheck_after_the_reboot():
    run = Run({"bootId": "boot-1", "gpus": [{}], "steps": [
        {"gpus": [{"xids": [48]}]},
        {"bootId": "boot-2", "gpus": [{"nvlinkDown": [1]}]},  # rebooted, but the re-check is Unhealthy
        {"gpus": [{"nvlinkDown": []}]},  # the first healthy re-check since the reboot
    ]})
    r1, r2, r3, r4 = run.next(), run.next(), run.next(), run.next()
    assert (r1.state, r2.state) == (H, U)
    assert r3.state is U and any("XID 48" in r for r in r3.reasons), "kept: the re-check after the reboot failed"
    assert r4.state is H and r4.gpus[0].latched == []


def test_the_same_xid_after_a_reset_latches_again():
    run = Run({"gpus": [{}], "steps": [
        {"gpus": [{"xids": [64], "recoveryAction": 1}]},
        {"gpus": [{"reset": True}]},
        {"gpus": [{"xids": [64], "recoveryAction": 1}]},
        {},
    ]})
    assert run.states(5) == [H, U, H, U, U]


def test_a_gpu_that_falls_off_the_bus_and_the_node_reboots():
    run = Run({"bootId": "boot-1", "gpus": [{"uuid": "GPU-a"}, {"uuid": "GPU-b"}], "steps": [
        {"gpus": [{}, {"xids": [79], "lost": True}]},
        {"bootId": "boot-2", "gpus": [{}, {"lost": False}]},
    ]})
    healthy, broken, rebooted = run.next(), run.next(), run.next()
    assert healthy.state is H
    assert broken.state is U and broken.gpus[1].uuid == "GPU-b"
    assert any("XID 79" in r for r in broken.gpus[1].reasons), "the XID is attributed to the lost GPU"
    assert rebooted.state is H


def test_latches_survive_an_agent_restart_through_the_report():
    run = Run({"bootId": "boot-1", "gpus": [{"uuid": "GPU-a", "xids": [48]}]})
    written = run.next()
    assert written.state is U
    previous, error = parse_gpu_health(written.to_json())
    assert error is None

    fresh = FakeNvml({"bootId": "boot-1", "gpus": [{"uuid": "GPU-a"}]})  # the agent restarted: no new events
    with NvmlReader(fresh, clock=fresh.clock) as reader:
        tracker = HealthTracker()
        tracker.restore(previous)
        again = tracker.assess(reader.read(), T0 + timedelta(minutes=5), boot_id="boot-1")
        assert again.state is U and again.gpus[0].latched[0].xid == 48
        after_reboot = tracker.assess(reader.read(), T0 + timedelta(minutes=9), boot_id="boot-2")
    assert after_reboot.state is H


def test_an_xid_from_the_one_lost_gpu_is_its_own():
    run = Run({"gpus": [{}, {}]})
    run.next()
    run.reader.xids.by_handle.clear()
    run.fake.gpus[1]["lost"] = True
    run.fake.inject_xid(1, 79)
    readings = run.reader.read()
    assert [x.xid for x in readings.gpus[1].xids] == [79] and readings.unattributed_xids == []


def test_an_xid_whose_gpu_nvml_cannot_name_is_a_node_level_reason():
    run = Run({"gpus": [{}, {}]})
    run.next()
    run.reader.xids.by_handle.clear()
    run.fake.nvmlDeviceGetUUID = _raise_lost  # no GPU answers: which one raised it cannot be told
    run.fake.inject_xid(0, 79)
    readings = run.reader.read()
    assert readings.unattributed_xids and readings.unattributed_xids[0].xid == 79


def _raise_lost(handle):
    from guywire.gpu.fake import NVMLError_GpuIsLost
    raise NVMLError_GpuIsLost()


def test_unattributed_critical_xids_make_the_node_unhealthy():
    from guywire.gpu.readings import NodeReadings, XidSeen

    tracker = HealthTracker()
    report = tracker.assess(NodeReadings(gpus=[], gpu_count=0, unattributed_xids=[XidSeen(79, None, None, T0)]),
                            T0, boot_id="b1")
    assert report.state is U and report.reasons[0].startswith("a GPU NVML cannot name raised XID 79")
    assert tracker.assess(NodeReadings(gpus=[], gpu_count=0), T0, boot_id="b1").state is U
    assert tracker.assess(NodeReadings(gpus=[], gpu_count=0), T0, boot_id="b2").state is H
