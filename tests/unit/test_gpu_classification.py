"""Every row of the classification table, driven through the fake NVML and the real reader."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from guywire.clock import ManualClock
from guywire.gpu.classify import (
    DEFAULT_TABLE, ROWS, HealthConfigError, HealthTable, classify, load_health_config,
)
from guywire.gpu.fake import NVML_ERROR_NO_PERMISSION, NVML_ERROR_UNKNOWN, FakeNvml, NVMLError
from guywire.gpu.nvml import NvmlReader
from guywire.model.gpu_report import Action, HealthState

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def judge(gpus: list[dict], *, expected: int | None = None, table: HealthTable = DEFAULT_TABLE,
          fake: FakeNvml | None = None, **top):
    fake = fake or FakeNvml({"gpus": gpus, **top})
    with NvmlReader(fake, clock=fake.clock) as reader:
        readings = reader.read()
    return classify(readings, NOW, expected_gpus=expected, table=table), readings


class NoHandle(FakeNvml):
    def nvmlDeviceGetHandleByIndex(self, index):
        if index == 0:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return super().nvmlDeviceGetHandleByIndex(index)


class NoCount(FakeNvml):
    def nvmlDeviceGetCount(self):
        self._need_init()
        if self._first_read_done:
            raise NVMLError(NVML_ERROR_UNKNOWN)
        return super().nvmlDeviceGetCount()


# row id -> (GPUs of the scenario, expected GPUs, fake class, node state, action, fragment of a reason)
CASES: dict[str, tuple[list[dict], int | None, type, HealthState, Action, str]] = {
    "gpu-lost": ([{"lost": True}], None, FakeNvml, U, Action.REBOOT_NODE, "NVML reports the GPU lost"),
    "reset-required": ([{"resetRequired": True}], None, FakeNvml, U, Action.RESET_GPU, "needs a reset"),
    "inaccessible": ([{}], None, NoHandle, U, Action.INVESTIGATE, "NVML cannot open the GPU (Insufficient "
                                                                   "Permissions)"),
    "missing-gpus": ([{}, {"missing": True}], 2, FakeNvml, U, Action.REBOOT_NODE,
                     "NVML sees 1 GPU(s) but the node advertises 2"),
    "nvml-error": ([{}], None, NoCount, U, Action.INVESTIGATE, "NVML cannot count the GPUs: Unknown Error."),
    "ecc-uncorrected": ([{"eccUncorrectedVolatile": 3}], None, FakeNvml, U, Action.RESET_GPU,
                        "3 uncorrected ECC error(s) since the last reset (limit 0)"),
    "row-remap-failure": ([{"remappedRows": {"uncorrectable": 2, "failure": True}}], None, FakeNvml, U,
                          Action.REPLACE_GPU, "row remapping failed (2 row(s)"),
    "nvlink-down": ([{"nvlinkDown": [3, 7]}], None, FakeNvml, U, Action.RESET_GPU,
                    "NVLink link(s) 3, 7 down while 16 other(s) are up"),
    "temperature-shutdown": ([{"temperature": 92}], None, FakeNvml, U, Action.INVESTIGATE,
                             "temperature 92 °C is at or above the shutdown threshold 92 °C"),
    "recovery-action": ([{"recoveryAction": 2}], None, FakeNvml, U, Action.REBOOT_NODE,
                        "the driver asks for a node reboot (recovery action 2, NODE_REBOOT)"),
    "xid-critical": ([{"xids": [48]}], None, FakeNvml, U, Action.RESET_GPU, "XID 48 (Double Bit ECC Error)"),
    "recovery-action-drain": ([{"recoveryAction": 4}], None, FakeNvml, D, Action.RESET_GPU,
                              "recovery action 4, DRAIN_AND_RESET"),
    "row-remap-pending": ([{"remappedRows": {"pending": True}}], None, FakeNvml, D, Action.RESET_GPU,
                          "a row remap is pending"),
    "retired-pages-pending": ([{"retiredPagesPending": True}], None, FakeNvml, D, Action.RESET_GPU,
                              "retired memory pages are pending"),
    "temperature-slowdown": ([{"temperature": 88}], None, FakeNvml, D, Action.INVESTIGATE,
                             "temperature 88 °C is at or above the slowdown threshold 87 °C"),
    "hw-throttle": ([{"clocksEventReasons": ["SwPowerCap", "HwPowerBrakeSlowdown"]}], None, FakeNvml, D,
                    Action.INVESTIGATE, "clocks are held down by HwPowerBrakeSlowdown."),
    "pcie-replays": ([{"pcieReplaysPerMinute": 12}], None, FakeNvml, D, Action.INVESTIGATE,
                     "12 PCIe replays per minute (limit 8)"),
    "xid-degraded": ([{"xids": [54]}], None, FakeNvml, D, Action.INVESTIGATE,
                     "XID 54 (Auxiliary power is not connected to the GPU board)"),
    "xid-application": ([{"xids": [13, 31, 43, 45, 68]}], None, FakeNvml, H, Action.NONE, ""),
    "not-supported": ([{"eccUncorrectedVolatile": 9, "remappedRows": {"failure": True},
                        "notSupported": ["ecc", "remappedRows", "nvlink", "recoveryAction", "retiredPages",
                                         "pcieReplays", "clocksEventReasons", "temperatureThresholds"]}],
                      None, FakeNvml, H, Action.NONE, ""),
}


def test_every_row_of_the_table_has_a_scenario():
    assert sorted(CASES) == sorted(r.id for r in ROWS)


@pytest.mark.parametrize("row_id", sorted(CASES))
def test_row(row_id):
    gpus, expected, fake_cls, state, action, fragment = CASES[row_id]
    report, _ = judge(gpus, expected=expected, fake=fake_cls({"gpus": gpus}))
    assert report.state is state, report.reasons
    assert report.action is action, report.reasons
    if fragment:
        assert any(fragment in r for r in report.reasons), report.reasons
    else:
        assert report.reasons == []


def test_a_healthy_gpu_has_no_reasons_and_all_readings():
    report, readings = judge([{"uuid": "GPU-0e2c", "temperature": 64, "powerUsage": 310.5, "memoryUsed": 1024,
                               "utilization": 35}])
    assert report.state is H and report.action is Action.NONE and report.reasons == []
    gpu = report.gpus[0]
    assert (gpu.uuid, gpu.name, gpu.state, gpu.unknown) == ("GPU-0e2c", "NVIDIA H100 80GB HBM3", H, [])
    assert gpu.readings["temperatureC"] == 64 and gpu.readings["powerW"] == 310.5
    assert gpu.readings["memoryUsedMiB"] == 1024 and gpu.readings["utilizationPct"] == 35
    assert readings.gpus[0].power_limit_w == 700


def test_the_issue_example_scenario_is_healthy(tmp_path: Path):
    path = tmp_path / "h100.yaml"
    path.write_text("""
driverVersion: "550.90.07"
gpus:
- uuid: GPU-0e2c0000-1111-2222-3333-444455556666
  name: NVIDIA H100 80GB HBM3
  temperature: 64
  slowdownTemperature: 87
  shutdownTemperature: 92
  powerUsage: 310.5
  powerLimit: 700
  memoryUsed: 1024
  memoryTotal: 81559
  utilization: 35
  eccUncorrectedVolatile: 0
  eccUncorrectedAggregate: 0
  retiredPagesPending: false
  remappedRows: {correctable: 0, uncorrectable: 0, pending: false, failure: false}
  clocksEventReasons: []
  xids: []
  nvlinkDown: []
  pcieReplaysPerMinute: 0
  recoveryAction: 0
  lost: false
  notSupported: []
""")
    report, _ = judge([], fake=FakeNvml(path))
    assert report.state is H and report.driver_version == "550.90.07" and report.gpu_count == 1


@pytest.mark.parametrize("xid", [46, 48, 62, 64, 74, 79, 95, 109, 119, 120, 140, 143, 145, 155])
def test_critical_xids_make_the_gpu_unhealthy(xid):
    report, _ = judge([{"xids": [xid]}])
    assert report.state is U
    assert report.gpus[0].latched[0].xid == xid


def test_xid_79_asks_for_a_reboot():
    report, _ = judge([{"xids": [79]}])
    assert report.action is Action.REBOOT_NODE


@pytest.mark.parametrize("xid", [13, 31, 43, 45, 68, 63, 92, 94, 154])
def test_application_and_informational_xids_are_reported_but_change_nothing(xid):
    report, _ = judge([{"xids": [xid]}])
    gpu = report.gpus[0]
    assert report.state is H and gpu.latched == []
    assert [x.xid for x in gpu.recent_xids] == [xid] and gpu.recent_xids[0].effect is H


def test_an_xid_missing_from_the_table_is_degraded():
    report, _ = judge([{"xids": [4242]}])
    assert report.state is D
    assert "XID 4242 (not in guywire's XID table)" in report.reasons[0]


@pytest.mark.parametrize("gpu", [
    {"temperature": 86},  # one below slowdown
    {"pcieReplaysPerMinute": 8},  # DCGM's limit is "more than 8"
    {"eccUncorrectedAggregate": 12},  # lifetime errors alone are history, not a fault
    {"clocksEventReasons": ["SwThermalSlowdown", "SwPowerCap", "GpuIdle"]},  # software throttling is normal
    {"remappedRows": {"correctable": 40, "uncorrectable": 1}},  # remapped and working
    {"recoveryAction": 0},
], ids=["temp-86", "pcie-8", "ecc-aggregate", "sw-throttle", "remapped-ok", "recovery-none"])
def test_below_every_limit_is_healthy(gpu):
    report, _ = judge([gpu])
    assert report.state is H, report.reasons


def test_the_node_takes_its_worst_gpu_and_strongest_action():
    report, _ = judge([{}, {"temperature": 88}, {"remappedRows": {"failure": True}}])
    assert report.state is U and report.action is Action.REPLACE_GPU
    assert [g.state for g in report.gpus] == [H, D, U]
    assert report.reasons[0].startswith("GPU 1: temperature 88")
    assert report.reasons[1].startswith("GPU 2: row remapping failed")


def test_not_supported_makes_readings_unknown_never_a_failure():
    report, readings = judge([{"eccUncorrectedVolatile": 5, "temperature": 95,
                               "notSupported": ["ecc", "temperature", "power", "memory", "utilization"]}])
    assert report.state is H
    assert set(report.gpus[0].unknown) >= {"ecc", "temperature", "power", "memory", "utilization"}
    g = readings.gpus[0]
    assert (g.ecc_uncorrected_volatile, g.temperature_c, g.power_w, g.memory_used_mib) == (None, None, None, None)
    assert g.errors == []


def test_xid_events_not_supported_are_unknown():
    report, _ = judge([{"xids": [79], "notSupported": ["xidEvents"]}])
    assert report.state is H and "xidEvents" in report.gpus[0].unknown


def test_a_gpu_lost_in_the_middle_of_a_read_keeps_what_was_read():
    report, readings = judge([{"uuid": "GPU-a", "temperature": 61, "lostAfterCalls": 4}, {"uuid": "GPU-b"}])
    lost = readings.gpus[0]
    assert lost.lost and lost.lost_during not in (None, "handle")
    assert (lost.name, lost.uuid, lost.temperature_c) == ("NVIDIA H100 80GB HBM3", "GPU-a", 61.0)
    assert lost.power_w is None and lost.memory_total_mib is None
    assert report.gpus[0].state is U and "NVML_ERROR_GPU_IS_LOST while reading" in report.gpus[0].reasons[0]
    assert report.gpus[1].state is H and readings.gpus[1].temperature_c == 40.0


def test_a_lost_gpu_stays_lost_on_the_next_read():
    fake = FakeNvml({"gpus": [{"lostAfterCalls": 3}]})
    with NvmlReader(fake, clock=fake.clock) as reader:
        first, second = reader.read(), reader.read()
    assert first.gpus[0].lost and second.gpus[0].lost and second.gpus[0].lost_during == "handle"


def test_pcie_rate_needs_two_samples_a_window_apart():
    fake = FakeNvml({"gpus": [{"pcieReplaysPerMinute": 30}]})
    clock = ManualClock()
    with NvmlReader(fake, clock=clock) as reader:  # the first sample is taken as it opens
        clock.advance(2)
        too_soon = reader.read().gpus[0]
        clock.advance(13)
        later = reader.read().gpus[0]
    assert too_soon.pcie_replays_per_minute is None and "pcieReplays" in too_soon.unknown
    assert later.pcie_replay_counter is not None and later.pcie_replays_per_minute is not None


def test_health_config_changes_the_xid_table_and_thresholds(tmp_path: Path):
    cfg = tmp_path / "health.yaml"
    cfg.write_text("""
xids:
  109: Healthy
  13: {state: Unhealthy, action: RebootNode}
unknownXid: Healthy
thresholds: {pcieReplaysPerMinute: 20, eccUncorrectedVolatile: 2}
degradedClockReasons: [HwThermalSlowdown]
""")
    table = load_health_config(cfg)
    assert judge([{"xids": [109]}], table=table)[0].state is H
    report = judge([{"xids": [13]}], table=table)[0]
    assert report.state is U and report.action is Action.REBOOT_NODE
    assert judge([{"xids": [4242]}], table=table)[0].state is H
    assert judge([{"pcieReplaysPerMinute": 12}], table=table)[0].state is H
    assert judge([{"eccUncorrectedVolatile": 2}], table=table)[0].state is H
    assert judge([{"eccUncorrectedVolatile": 3}], table=table)[0].state is U
    assert judge([{"clocksEventReasons": ["HwPowerBrakeSlowdown"]}], table=table)[0].state is H
    assert judge([{"clocksEventReasons": ["HwThermalSlowdown"]}], table=table)[0].state is D


@pytest.mark.parametrize("text, fragment", [
    ("xids: {109: Broken}", "xids.109.state"),
    ("thresholds: {pcieReplaysPerMinute: -1}", "thresholds.pcieReplaysPerMinute"),
    ("thresholdz: {}", "thresholdz"),
    ("xids: [1, 2]", "xids"),
])
def test_a_bad_health_config_names_the_field(tmp_path: Path, text, fragment):
    cfg = tmp_path / "health.yaml"
    cfg.write_text(text)
    with pytest.raises(HealthConfigError, match=fragment.replace(".", r"\.")):
        load_health_config(cfg)


def test_an_unknown_recovery_action_is_degraded():
    report, _ = judge([{"recoveryAction": 42}])
    assert report.state is D and "an action guywire does not know" in report.reasons[0]


def test_expected_gpus_met_or_exceeded_is_fine():
    assert judge([{}, {}], expected=2)[0].state is H
    assert judge([{}, {}], expected=1)[0].state is H
