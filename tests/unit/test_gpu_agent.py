"""The node agent without an API server: what it writes, when it writes, its metrics and its command line."""
from __future__ import annotations

import copy
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from guywire.cli import main
from guywire.clock import ManualClock
from guywire.gpu.agent import (
    NodeAgent, condition_message, desired_condition, expected_gpus_of, fingerprint, is_gpu_node, needs_write,
)
from guywire.gpu.classify import HealthTracker
from guywire.gpu.fake import FakeNvml
from guywire.gpu.gpu_metrics import GpuMetrics
from guywire.gpu.nvml import NvmlReader
from guywire.model.gpu_report import HealthState, NodeGpuHealth

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def report_of(scenario: dict, now: datetime = T0) -> NodeGpuHealth:
    fake = FakeNvml(scenario)
    with NvmlReader(fake, clock=fake.clock) as reader:
        return HealthTracker().assess(reader.read(), now, boot_id="b1")


def node_showing(report: NodeGpuHealth, now: datetime = T0) -> dict:
    return {"metadata": {"name": "g1", "labels": {"guywire.dev/gpu-health": report.state.value},
                         "annotations": {"guywire.dev/gpu-health": report.to_json()}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, desired_condition(report, None, now)]}}


class MemoryClient:
    """A NodeClient stand-in holding one Node in memory (strategic merge of conditions by type)."""

    def __init__(self, node: dict):
        self.node = node
        self.writes: list[NodeGpuHealth] = []

    def get(self) -> dict:
        return copy.deepcopy(self.node)

    def write(self, report: NodeGpuHealth, node: dict | None, now: datetime) -> None:
        self.writes.append(report)
        meta = self.node.setdefault("metadata", {})
        meta.setdefault("labels", {})["guywire.dev/gpu-health"] = report.state.value
        meta.setdefault("annotations", {})["guywire.dev/gpu-health"] = report.to_json()
        conds = [c for c in self.node.setdefault("status", {}).get("conditions", []) if c["type"] != "GPUUnhealthy"]
        self.node["status"]["conditions"] = conds + [desired_condition(report, None, now)]


@pytest.mark.parametrize("node, expected", [
    ({"metadata": {"labels": {"nvidia.com/gpu.count": "8"}}, "status": {"capacity": {"nvidia.com/gpu": "4"}}}, 8),
    ({"status": {"capacity": {"nvidia.com/gpu": "8"}, "allocatable": {"nvidia.com/gpu": "7"}}}, 8),
    ({"status": {"allocatable": {"nvidia.com/gpu": "4"}}}, 4),
    ({"metadata": {"labels": {"nvidia.com/gpu.count": "many"}}}, None),
    ({}, None),
    (None, None),
])
def test_expected_gpus_come_from_the_node(node, expected):
    assert expected_gpus_of(node) == expected


@pytest.mark.parametrize("node, gpu_node", [
    ({"metadata": {"labels": {"nvidia.com/gpu.present": "true"}}}, True),
    ({"metadata": {"labels": {"nvidia.com/gpu.count": "2"}}}, True),
    ({"status": {"capacity": {"nvidia.com/gpu": "0"}}}, True),
    ({"metadata": {"labels": {"nvidia.com/gpu.present": "false"}}}, False),
    ({"status": {"capacity": {"cpu": "8"}}}, False),
    (None, False),
])
def test_a_node_is_a_gpu_node_when_labels_or_capacity_say_so(node, gpu_node):
    assert is_gpu_node(node) is gpu_node


@pytest.mark.parametrize("node", [
    {"metadata": {"name": "g1", "labels": {"nvidia.com/gpu.present": "true"}}},
    {"metadata": {"name": "g1"}, "status": {"capacity": {"nvidia.com/gpu": "0"}}},
])
def test_a_gpu_node_with_no_visible_gpu_is_unhealthy_without_an_expected_count(node):
    fake = FakeNvml({"gpus": []})
    client = MemoryClient(node)
    with NvmlReader(fake, clock=fake.clock) as reader:
        agent = NodeAgent(reader, node_name="g1", client=client, clock=ManualClock(T0), err=io.StringIO())
        agent.cycle()
    assert agent.last_report is not None and agent.last_report.state is HealthState.UNHEALTHY
    assert "NVML sees no GPU" in agent.last_report.reasons[0]
    assert client.node["metadata"]["labels"]["guywire.dev/gpu-health"] == "Unhealthy"


def test_a_node_that_claims_no_gpu_with_none_visible_stays_healthy():
    fake = FakeNvml({"gpus": []})
    with NvmlReader(fake, clock=fake.clock) as reader:
        agent = NodeAgent(reader, node_name="c1", client=MemoryClient({"metadata": {"name": "c1"}}),
                          clock=ManualClock(T0), err=io.StringIO())
        agent.cycle()
    assert agent.last_report is not None and agent.last_report.state is HealthState.HEALTHY


def test_the_condition_is_a_fault_only_when_unhealthy():
    bad = report_of({"gpus": [{"xids": [79]}]})
    cond = desired_condition(bad, None, T0)
    assert (cond["type"], cond["status"], cond["reason"]) == ("GPUUnhealthy", "True", "Unhealthy")
    assert cond["message"].startswith("GPU 0: XID 79 (GPU has fallen off the bus)")
    assert cond["message"].endswith("Recommended action: RebootNode.")
    degraded = desired_condition(report_of({"gpus": [{"temperature": 88}]}), None, T0)
    assert (degraded["status"], degraded["reason"]) == ("False", "Degraded")
    healthy = desired_condition(report_of({"gpus": [{}, {}]}), None, T0)
    assert (healthy["status"], healthy["reason"], healthy["message"]) == ("False", "Healthy",
                                                                          "All 2 GPU(s) are healthy.")


def test_the_transition_time_moves_only_when_the_status_does():
    earlier = {"type": "GPUUnhealthy", "status": "False", "lastTransitionTime": "2026-11-01T00:00:00Z"}
    assert desired_condition(report_of({"gpus": [{}]}), earlier, T0)["lastTransitionTime"] == "2026-11-01T00:00:00Z"
    flipped = desired_condition(report_of({"gpus": [{"lost": True}]}), earlier, T0)
    assert flipped["lastTransitionTime"] == "2026-11-24T10:00:00Z"


def test_condition_message_is_capped():
    report = report_of({"gpus": [{"xids": [4000 + i for i in range(60)]}]})
    assert len(condition_message(report)) <= 1024


def test_needs_write_only_when_something_changed_or_a_heartbeat_is_due():
    report = report_of({"gpus": [{"temperature": 60}]})
    node = node_showing(report)
    later = T0 + timedelta(seconds=60)
    same_but_warmer = report_of({"gpus": [{"temperature": 70, "powerUsage": 500}]}, now=later)
    assert fingerprint(same_but_warmer) == fingerprint(report), "readings alone are not a change"
    assert needs_write(same_but_warmer, node, later, 300) is None
    assert needs_write(same_but_warmer, node, T0 + timedelta(seconds=150), 300) == "heartbeat"
    assert needs_write(report_of({"gpus": [{"temperature": 88}]}, later), node, later, 300) == "the report changed"
    assert needs_write(report, None, later, 300) == "the Node could not be read"
    assert needs_write(report, {"metadata": {}}, later, 300) == "no report yet"
    relabelled = copy.deepcopy(node)
    relabelled["metadata"]["labels"] = {}
    assert needs_write(report, relabelled, later, 300) == "the label differs"
    no_condition = copy.deepcopy(node)
    no_condition["status"]["conditions"] = []
    assert needs_write(report, no_condition, later, 300) == "the condition differs"


def test_the_agent_writes_on_change_and_heartbeat_only():
    clock = ManualClock(T0)
    fake = FakeNvml({"bootId": "b1", "gpus": [{}], "steps": [
        {"reads": 3, "gpus": [{"temperature": 61}]},  # readings move, nothing changes
        {"reads": 2, "gpus": [{"remappedRows": {"pending": True}}]},  # Degraded
    ]}, clock)
    client = MemoryClient({"metadata": {"name": "g1"}, "status": {"capacity": {"nvidia.com/gpu": "1"}}})
    reader = NvmlReader(fake, clock=fake.clock)
    reader.open()
    agent = NodeAgent(reader, node_name="g1", client=client, report_max_age_s=300, boot_id=lambda: fake.boot_id,
                      clock=clock, err=io.StringIO())
    written = []
    for _ in range(6):
        agent.cycle()
        written.append(len(client.writes))
        clock.advance(30)
    assert written == [1, 1, 1, 1, 2, 2]
    assert client.node["metadata"]["labels"]["guywire.dev/gpu-health"] == "Degraded"
    clock.advance(150)  # half of reportMaxAge since the last write
    agent.cycle()
    assert len(client.writes) == 3 and client.writes[-1].state is HealthState.DEGRADED
    reader.close()


class RefusingClient(MemoryClient):
    """Reads its Node; every write is refused the way the API server refuses one (an ApiException with a Status)."""

    def __init__(self, node: dict, status: int, reason: str, body: str):
        super().__init__(node)
        self.refusal = (status, reason, body)

    def write(self, report: NodeGpuHealth, node: dict | None, now: datetime) -> None:
        from kubernetes.client.rest import ApiException

        status, reason, body = self.refusal
        exc = ApiException(status=status, reason=reason)
        exc.body = body
        raise exc


@pytest.mark.parametrize("body, said", [
    (json.dumps({"kind": "Status", "message": "nodes \"g2\" is forbidden: ValidatingAdmissionPolicy 'own-node' "
                 "denied request: the agent may change only its own Node. Set restrictToOwnNode=false."}),
     ": nodes \"g2\" is forbidden: ValidatingAdmissionPolicy 'own-node' denied request: the agent may change only "
     "its own Node. Set restrictToOwnNode=false."),
    ("<html>proxy error</html>", "."),  # no Status: the HTTP reason alone
    (json.dumps({"kind": "Status", "message": "x" * 5000}), None),
])
def test_a_refused_write_logs_what_the_api_server_said(body, said):
    fake = FakeNvml({"bootId": "b1", "gpus": [{}]})
    reader = NvmlReader(fake, clock=fake.clock)
    reader.open()
    err = io.StringIO()
    client = RefusingClient({"metadata": {"name": "g2"}}, 403, "Forbidden", body)
    agent = NodeAgent(reader, node_name="g2", client=client, clock=ManualClock(T0), err=err)
    assert agent.cycle() is False
    line = next(ln for ln in err.getvalue().splitlines() if "cannot write Node g2" in ln)
    if said is None:  # a huge message is clipped, never dumped whole
        assert "HTTP 403 Forbidden: xxx" in line and len(line) < 1200
    else:
        assert line.endswith("(no report yet): HTTP 403 Forbidden" + said), line
    reader.close()


def test_the_agent_restores_latches_from_its_node():
    clock = ManualClock(T0)
    fake = FakeNvml({"bootId": "b1", "gpus": [{"uuid": "GPU-a", "xids": [48]}]}, clock)
    with NvmlReader(fake, clock=fake.clock) as reader:
        first = HealthTracker().assess(reader.read(), clock.now(), boot_id="b1")
    client = MemoryClient(node_showing(first))
    clock.advance(30)
    restarted = FakeNvml({"bootId": "b1", "gpus": [{"uuid": "GPU-a"}]}, clock)
    with NvmlReader(restarted, clock=restarted.clock) as reader:
        agent = NodeAgent(reader, node_name="g1", client=client, boot_id=lambda: "b1", clock=clock,
                          err=io.StringIO())
        agent.cycle()
    assert agent.last_report.state is HealthState.UNHEALTHY and client.writes == []


def test_metrics_carry_node_gpu_and_uuid_only():
    fake = FakeNvml({"gpus": [{"uuid": "GPU-a", "temperature": 64, "powerUsage": 310.5, "xids": [13],
                               "clocksEventReasons": ["HwSlowdown"]},
                              {"uuid": "GPU-b", "notSupported": ["remappedRows", "temperature"]}]})
    metrics = GpuMetrics()
    with NvmlReader(fake, clock=fake.clock) as reader:
        agent = NodeAgent(reader, node_name="g1", dry_run=True, metrics=metrics, out=io.StringIO(),
                          err=io.StringIO())
        agent.cycle()
    text = generate_latest(metrics.registry).decode()
    assert 'guywire_gpu_temperature_celsius{gpu="0",node="g1",uuid="GPU-a"} 64.0' in text
    assert 'guywire_gpu_power_watts{gpu="0",node="g1",uuid="GPU-a"} 310.5' in text
    assert 'guywire_gpu_health_state{gpu="0",node="g1",uuid="GPU-a"} 1.0' in text
    assert 'guywire_gpu_clocks_event_reasons{gpu="0",node="g1",uuid="GPU-a"} 8.0' in text
    assert 'guywire_gpu_xid_events_total{gpu="0",node="g1",uuid="GPU-a"} 1.0' in text
    assert 'guywire_node_gpu_health_state{node="g1"} 1.0' in text
    assert 'guywire_gpu_temperature_celsius{gpu="1"' not in text, "an unknown reading has no series"
    assert 'guywire_gpu_remapped_rows_pending{gpu="1"' not in text
    for line in text.splitlines():
        if line.startswith("guywire_") and "{" in line:
            labels = {kv.split("=")[0] for kv in line[line.index("{") + 1:line.index("}")].split(",")}
            assert labels <= {"node", "gpu", "uuid"}, line


def test_cli_once_dry_run(tmp_path: Path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("gpus:\n- {uuid: GPU-a, remappedRows: {failure: true}}\n- {uuid: GPU-b}\n")
    assert main(["node-agent", "--once", "--dry-run", "--fake-nvml", str(scenario)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["state"] == "Unhealthy" and report["action"] == "ReplaceGPU" and len(report["gpus"]) == 2
    assert "GPUs are Unhealthy" in err


@pytest.mark.parametrize("argv, fragment", [
    (["--fake-nvml", "/nonexistent/scenario.yaml", "--dry-run"], "--fake-nvml /nonexistent/scenario.yaml"),
    (["--fake-nvml", "{scenario}"], "no node name: pass --node-name or set NODE_NAME"),
    (["--fake-nvml", "{bad}", "--dry-run"], "unknown key 'temprature'"),
    (["--fake-nvml", "{scenario}", "--dry-run", "--health-config", "{bad}"], "health.yaml"),
    (["--fake-nvml", "{noinit}", "--dry-run"], "cannot read GPUs: the NVML library (libnvidia-ml.so.1) was not found"),
    (["--fake-nvml", "{scenario}", "--node-name", "n", "--kubeconfig", "/nonexistent/kc"],
     "guywire node-agent: kubeconfig /nonexistent/kc: no such file; pass --kubeconfig an existing file"),
    (["--fake-nvml", "{scenario}", "--node-name", "n", "--kubeconfig", "/dev/zero"],
     "kubeconfig /dev/zero: not a regular file"),
])
def test_cli_refuses_plainly(tmp_path: Path, capsys, monkeypatch, argv, fragment):
    monkeypatch.delenv("NODE_NAME", raising=False)
    (tmp_path / "s.yaml").write_text("gpus: [{}]\n")
    (tmp_path / "bad.yaml").write_text("gpus: [{temprature: 1}]\n")
    (tmp_path / "health.yaml").write_text("xids: {1: Broken}\n")
    (tmp_path / "noinit.yaml").write_text("gpus: []\nnvmlInitError: LibraryNotFound\n")
    paths = {"scenario": tmp_path / "s.yaml", "bad": tmp_path / "bad.yaml", "noinit": tmp_path / "noinit.yaml"}
    argv = [a.format(**paths) if "{" in a else a for a in argv]
    if "--health-config" in argv:
        argv[argv.index("--health-config") + 1] = str(tmp_path / "health.yaml")
    assert main(["node-agent", "--once", *argv]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("count", ["-1", "65", "99999999", "eight"])
def test_expected_gpus_has_the_scenario_s_bound(capsys, count):
    with pytest.raises(SystemExit) as exit_:
        main(["node-agent", "--once", "--dry-run", f"--expected-gpus={count}"])
    assert exit_.value.code == 2
    assert f"argument --expected-gpus: {count!r} is not a GPU count from 0 to 64;" in capsys.readouterr().err


def test_interval_flag_takes_durations(capsys):
    with pytest.raises(SystemExit):
        main(["node-agent", "--interval", "soon"])
    assert "is not a duration" in capsys.readouterr().err
