"""One descriptor per GPU signal drives the reader, the fake and its scenario schema, the classification, the
annotation's readings and the metrics."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from prometheus_client import generate_latest

from guywire.gpu.classify import (
    DEVICE_ROWS, ROWS, HealthConfigError, HealthTable, HealthTracker, health_config_model, load_health_config,
    table_rows,
)
from guywire.gpu.fake import FakeNvml, FakeScenarioError, load_scenario, scenario_model
from guywire.gpu.gpu_metrics import GpuMetrics
from guywire.gpu.nvml import NvmlReader
from guywire.gpu.readings import GpuReadings
from guywire.gpu.signals import SIGNALS, Call, FakeKey, Field, Metric, Row, Signal, Threshold, get
from guywire.model.gpu_report import Action, HealthState
from tests.unit.test_gpu_classification import CASES

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
FAN_STOPPED = Row("fan-stopped", "nvmlDeviceGetFanSpeed", "the fan does not turn", HealthState.DEGRADED,
                  Action.INVESTIGATE, ("nvml",), 95)


def _judge_fan(g, table):
    speed, least = get(g, "fan_speed_pct"), table.thresholds.fan_min_pct
    if speed is not None and speed <= least:
        yield FAN_STOPPED.check(f"the fan turns at {speed:g} % (limit {least:g} %).")


# A signal only this test knows: no attribute of GpuReadings, no function of the fake's, no row of the table.
FAN = Signal("fan", "fan speed", fields=(Field("fan_speed_pct", "%", "fanSpeedPct"),),
             calls=(Call(("nvmlDeviceGetFanSpeed",), ("fan_speed_pct",), convert=lambda v, nvml: float(v)),),
             fake=(FakeKey("fanSpeed", "number", 30, "fan", "nvmlDeviceGetFanSpeed", int),),
             rows=(FAN_STOPPED,), judge=_judge_fan,
             thresholds=(Threshold("fan_min_pct", float, 0.0, "Fan speed at or below which the GPU is Degraded."),),
             metrics=(Metric("guywire_gpu_fan_speed_ratio", "Fan speed, 0 to 1.",
                             lambda g: get(g, "fan_speed_pct") / 100 if get(g, "fan_speed_pct") is not None else None),))
WITH_FAN = SIGNALS + (FAN,)


def _read(gpus: list[dict], signals=SIGNALS, table: HealthTable | None = None):
    fake = FakeNvml({"gpus": gpus}, signals=signals)
    with NvmlReader(fake, clock=fake.clock, signals=signals) as reader:
        readings = reader.read()
    table = table or HealthTable.build(health_config_model(signals)())
    report = HealthTracker(table=table, signals=signals).assess(readings, NOW)
    metrics = GpuMetrics(signals=signals)
    metrics.update("g1", readings, report)
    return readings, report, generate_latest(metrics.registry).decode()


def test_an_extra_descriptor_reaches_every_place():
    readings, report, exposition = _read([{"fanSpeed": 0}, {}], WITH_FAN)
    assert [g.extra for g in readings.gpus] == [{"fan_speed_pct": 0.0}, {"fan_speed_pct": 30.0}]
    assert report.gpus[0].readings["fanSpeedPct"] == 0.0 and report.gpus[1].readings["fanSpeedPct"] == 30.0
    assert report.state is HealthState.DEGRADED and report.action is Action.INVESTIGATE
    assert report.gpus[0].reasons == ["the fan turns at 0 % (limit 0 %)."] and report.gpus[1].state is HealthState.HEALTHY
    assert 'guywire_gpu_fan_speed_ratio{gpu="1",node="g1",uuid="GPU-fake0000-0000-0000-0000-000000000001"} 0.3' \
        in exposition
    assert FAN_STOPPED in table_rows(WITH_FAN) and FAN_STOPPED not in ROWS


def test_an_extra_descriptors_threshold_is_a_health_config_setting(tmp_path):
    config = tmp_path / "health.yaml"
    config.write_text("thresholds: {fanMinPct: 40}\n")
    _, report, _ = _read([{"fanSpeed": 35}], WITH_FAN, load_health_config(config, WITH_FAN))
    assert report.gpus[0].reasons == ["the fan turns at 35 % (limit 40 %)."]
    config.write_text("thresholds: {fanMinPct: -1}\n")
    with pytest.raises(HealthConfigError, match="thresholds.fanMinPct: Input should be greater than or equal to 0"):
        load_health_config(config, WITH_FAN)
    with pytest.raises(HealthConfigError, match="thresholds.fanMinPct: Extra inputs are not permitted"):
        load_health_config(config)


def test_an_extra_descriptor_extends_the_scenario_schema_and_not_supported():
    with pytest.raises(FakeScenarioError, match=r"gpus\[0\]: unknown key 'fanSpeed'"):
        load_scenario({"gpus": [{"fanSpeed": 10}]})
    with pytest.raises(FakeScenarioError, match=r"gpus\[0\]\.fanSpeed: 'fast' is not a number"):
        load_scenario({"gpus": [{"fanSpeed": "fast"}]}, scenario_model(WITH_FAN))
    readings, report, exposition = _read([{"fanSpeed": 0, "notSupported": ["fan"]}], WITH_FAN)
    assert "fan" in readings.gpus[0].unknown and readings.gpus[0].extra == {}
    assert report.state is HealthState.HEALTHY and "fanSpeedPct" not in report.gpus[0].readings
    assert "guywire_gpu_fan_speed_ratio{" not in exposition


def test_without_the_descriptor_nothing_of_it_remains():
    readings, report, exposition = _read([{}])
    assert readings.gpus[0].extra == {} and "fanSpeedPct" not in report.gpus[0].readings
    assert "fan" not in exposition


@pytest.mark.parametrize("signal", [s for s in SIGNALS if any(k.tag for k in s.fake)], ids=lambda s: s.name)
def test_each_signal_can_be_not_supported_and_then_shows_nowhere(signal):
    gpus = [{"notSupported": [signal.name]}]
    readings, report, exposition = _read(gpus)
    g = readings.gpus[0]
    assert signal.name in g.unknown and g.errors == []
    for f in signal.fields:
        if f.snapshot:
            assert f.snapshot not in report.gpus[0].readings, f.snapshot
    for m in signal.metrics:
        assert f"{m.name}{{" not in exposition and f"{m.name}_total{{" not in exposition, m.name


def test_every_field_is_a_typed_reading_and_every_name_is_unique():
    for s in SIGNALS:
        for attr in [f.attr for f in s.fields] + [a for c in s.calls for a in c.into]:
            assert attr in GpuReadings.__dataclass_fields__, (s.name, attr)
        assert {a for c in s.calls for a in c.into} <= {f.attr for f in s.fields}, s.name
    names = [s.name for s in SIGNALS]
    keys = [k.key for s in SIGNALS for k in s.fake]
    metrics = [m.name for s in SIGNALS for m in s.metrics]
    rows = [r.id for r in ROWS]
    thresholds = [t.attr for s in SIGNALS for t in s.thresholds]
    for listed in (names, keys, metrics, rows, thresholds):
        assert len(listed) == len(set(listed))


def test_every_row_of_every_descriptor_is_covered_by_a_classification_case():
    for s in SIGNALS:
        for row in s.rows:
            assert row.id in CASES, (s.name, row.id)
            assert CASES[row.id][3] is row.state or row.state is HealthState.HEALTHY, row.id
    assert {r.id for r in DEVICE_ROWS} <= set(CASES)


def test_rows_are_ordered_by_state_then_position():
    ranks = [(-r.state.rank, r.position) for r in ROWS]
    assert ranks == sorted(ranks)
