"""The report in the guywire.dev/gpu-health annotation: written by the agent, read by the rules, never a crash."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from guywire.model.gpu_report import Action, GpuHealth, HealthState, LatchedXid, NodeGpuHealth, parse_gpu_health

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def test_round_trip_with_the_documented_fields():
    report = NodeGpuHealth(state=HealthState.UNHEALTHY, reported_at=NOW, reasons=["GPU 3: XID 79."],
                           action=Action.REBOOT_NODE, driver_version="550.90.07", boot_id="b1", agent_version="0.1.0",
                           gpus=[GpuHealth(index=3, uuid="GPU-x", name="NVIDIA H100 80GB HBM3",
                                           state=HealthState.UNHEALTHY, reasons=["XID 79."],
                                           latched=[LatchedXid(xid=79, at=NOW, boot_id="b1")])])
    text = report.to_json()
    data = json.loads(text)
    assert data["state"] == "Unhealthy" and data["reportedAt"] == "2026-11-24T10:00:00Z"
    assert data["driverVersion"] == "550.90.07" and data["bootId"] == "b1" and data["agentVersion"] == "0.1.0"
    assert {"index", "uuid", "name", "state", "reasons", "action"} <= set(data["gpus"][0])
    parsed, error = parse_gpu_health(text)
    assert error is None and parsed == report


def test_unknown_fields_from_a_newer_agent_are_ignored():
    parsed, error = parse_gpu_health('{"state":"Healthy","reportedAt":"2026-11-24T10:00:00Z","fanSpeed":3,'
                                     '"gpus":[{"index":0,"future":true}]}')
    assert error is None and parsed.state is HealthState.HEALTHY and parsed.gpus[0].index == 0


def test_absent_is_neither_report_nor_error():
    assert parse_gpu_health(None) == (None, None)
    assert parse_gpu_health("  ") == (None, None)


@pytest.mark.parametrize("value, fragment", [
    ("{", "is not JSON"),
    ("Healthy", "is not JSON"),
    ("[]", "is not a JSON object"),
    ('"Healthy"', "is not a JSON object"),
    ('{"state":"Sick","reportedAt":"2026-11-24T10:00:00Z"}', "state"),
    ('{"state":"Healthy"}', "reportedAt"),
    ('{"state":"Healthy","reportedAt":"yesterday"}', "reportedAt"),
    ('{"state":"Healthy","reportedAt":"2026-11-24T10:00:00Z","gpus":"all"}', "gpus"),
    ('{"state":"Healthy","reportedAt":"2026-11-24T10:00:00Z","gpus":[{"index":"x"}]}', "gpus.0.index"),
    (b"\xff\xfe", "is not JSON"),
    (12, "is not a JSON object"),
])
def test_garbage_is_an_error_sentence_never_an_exception(value, fragment):
    report, error = parse_gpu_health(value)
    assert report is None and fragment in error and error.endswith(".")


def test_age_and_summary():
    report = NodeGpuHealth(state=HealthState.DEGRADED, reported_at=NOW,
                           reasons=["GPU 0: a.", "GPU 1: b.", "GPU 2: c.", "GPU 3: d."])
    assert report.age(datetime(2026, 11, 24, 10, 5, tzinfo=timezone.utc)) == 300
    assert report.summary(limit=2) == "GPU 0: a; GPU 1: b; and 2 more"
    assert NodeGpuHealth(state=HealthState.HEALTHY, reported_at=NOW).summary() == "Healthy"


def test_worst_and_strongest():
    assert HealthState.worst([HealthState.DEGRADED, HealthState.HEALTHY]) is HealthState.DEGRADED
    assert HealthState.worst([]) is HealthState.HEALTHY
    assert Action.strongest([Action.INVESTIGATE, Action.REPLACE_GPU, Action.RESET_GPU]) is Action.REPLACE_GPU
