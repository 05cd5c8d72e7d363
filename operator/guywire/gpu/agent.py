"""``guywire node-agent``: read the GPUs through NVML, classify them, write the verdict on the agent's own Node.

On its own Node, and only when something changed (or every ``reportMaxAge / 2`` as a
heartbeat), it writes:

- condition ``GPUUnhealthy`` through the nodes/status subresource: True when the node
  is Unhealthy (a fault, as node-problem-detector and NVSentinel conditions mean it),
  False with reason Degraded or Healthy; the message lists the reasons;
- label ``guywire.dev/gpu-health=<state>``;
- annotation ``guywire.dev/gpu-health``: the JSON report.

RBAC: get and patch on nodes and nodes/status.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TextIO

from .. import __version__
from ..clock import SYSTEM, Clock, rfc3339
from ..model.messages import clip
from ..model.gpu_report import (
    GPU_CONDITION_TYPE, GPU_COUNT_LABEL, GPU_HEALTH_ANNOTATION, GPU_HEALTH_LABEL, GPU_PRESENT_LABEL,
    NVIDIA_GPU_RESOURCE, HealthState, NodeGpuHealth, parse_gpu_health,
)
from .classify import DEFAULT_TABLE, HealthConfigError, HealthTable, HealthTracker, load_health_config
from .nvml import NvmlReader, NvmlUnavailable, load_pynvml

EXIT_OK, EXIT_ERROR = 0, 2
CONDITION_MESSAGE_LIMIT = 1024
EVENT_SETTLE_S = 0.5  # after an XID wakes the agent, let a burst of events arrive before reading


# ----- pure helpers: what to write ---------------------------------------------------------------
def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def expected_gpus_of(node: dict | None) -> int | None:
    """GPUs the Node says it has: the GPU feature discovery count label, else capacity, else allocatable."""
    if not node:
        return None
    labels = (node.get("metadata") or {}).get("labels") or {}
    found = _int(labels.get(GPU_COUNT_LABEL))
    if found is not None:
        return found
    status = node.get("status") or {}
    for key in ("capacity", "allocatable"):
        found = _int((status.get(key) or {}).get(NVIDIA_GPU_RESOURCE))
        if found is not None:
            return found
    return None


def is_gpu_node(node: dict | None) -> bool:
    """Whether the Node says it has GPUs: the GPU feature discovery labels (``nvidia.com/gpu.present=true``, a
    count above zero), or ``nvidia.com/gpu`` in its capacity or allocatable, whatever the number."""
    if not node:
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if str(labels.get(GPU_PRESENT_LABEL, "")).lower() == "true" or (_int(labels.get(GPU_COUNT_LABEL)) or 0) > 0:
        return True
    status = node.get("status") or {}
    return any(NVIDIA_GPU_RESOURCE in (status.get(key) or {}) for key in ("capacity", "allocatable"))


def condition_message(report: NodeGpuHealth) -> str:
    if report.state is HealthState.HEALTHY:
        n = len(report.gpus)
        return f"All {n} GPU(s) are healthy." if n else "No GPU problem found."
    text = " ".join(r if r.endswith(".") else r + "." for r in report.reasons)
    text += f" Recommended action: {report.action.value}."
    return clip(text, CONDITION_MESSAGE_LIMIT)


def desired_condition(report: NodeGpuHealth, previous: dict | None, now: datetime) -> dict:
    status = "True" if report.state is HealthState.UNHEALTHY else "False"
    transition = rfc3339(now)
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    return {"type": GPU_CONDITION_TYPE, "status": status, "reason": report.state.value,
            "message": condition_message(report), "lastHeartbeatTime": rfc3339(now),
            "lastTransitionTime": transition}


def fingerprint(report: NodeGpuHealth | None) -> str | None:
    """The report minus what changes on every read: time, readings, recent XIDs, the agent's version."""
    if report is None:
        return None
    data = report.model_dump(mode="json", by_alias=True, exclude_none=True,
                             exclude={"reported_at": True, "agent_version": True,
                                      "gpus": {"__all__": {"readings", "recent_xids"}}})
    return json.dumps(data, sort_keys=True)


def find_condition(node: dict | None) -> dict | None:
    for c in ((node or {}).get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == GPU_CONDITION_TYPE:
            return c
    return None


def needs_write(report: NodeGpuHealth, node: dict | None, now: datetime, report_max_age_s: float) -> str | None:
    """Why the Node must be written now, or None when what it shows is current."""
    if node is None:
        return "the Node could not be read"
    meta = node.get("metadata") or {}
    written, _ = parse_gpu_health((meta.get("annotations") or {}).get(GPU_HEALTH_ANNOTATION))
    if written is None:
        return "no report yet"
    if fingerprint(written) != fingerprint(report):
        return "the report changed"
    if (meta.get("labels") or {}).get(GPU_HEALTH_LABEL) != report.state.value:
        return "the label differs"
    cond = find_condition(node)
    want = desired_condition(report, cond, now)
    if cond is None or any(cond.get(k) != want[k] for k in ("status", "reason", "message")):
        return "the condition differs"
    if written.age(now) >= report_max_age_s / 2:
        return "heartbeat"
    return None


# ----- the API server ----------------------------------------------------------------------------
class NodeClient:
    """The agent's only API calls: read its Node, patch its metadata, patch its status."""

    PATCH = "application/strategic-merge-patch+json"

    def __init__(self, api: Any, node_name: str):
        self.api = api
        self.node_name = node_name

    @classmethod
    def connect(cls, node_name: str, kubeconfig: str | None = None) -> "NodeClient":
        """Raises ConfigError (one line naming the file and what to do) as ``guywire run`` does."""
        from kubernetes import client

        from ..kube.client import load_config

        return cls(client.CoreV1Api(client.ApiClient(load_config(kubeconfig))), node_name)

    def get(self) -> dict:
        node = self.api.read_node(self.node_name)
        return self.api.api_client.sanitize_for_serialization(node)

    def write(self, report: NodeGpuHealth, node: dict | None, now: datetime) -> None:
        cond = desired_condition(report, find_condition(node), now)
        self.api.patch_node_status(self.node_name, {"status": {"conditions": [cond]}}, _content_type=self.PATCH)
        self.api.patch_node(self.node_name, {"metadata": {
            "labels": {GPU_HEALTH_LABEL: report.state.value},
            "annotations": {GPU_HEALTH_ANNOTATION: report.to_json()}}}, _content_type=self.PATCH)


# ----- the agent ---------------------------------------------------------------------------------------
def read_boot_id(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


class NodeAgent:
    def __init__(self, reader: NvmlReader, *, node_name: str, client: NodeClient | None = None,
                 dry_run: bool = False, table: HealthTable = DEFAULT_TABLE, report_max_age_s: float = 300.0,
                 expected_gpus: Callable[[dict | None], int | None] = expected_gpus_of,
                 boot_id: Callable[[], str | None] = lambda: None, metrics: Any = None,
                 clock: Clock = SYSTEM,
                 out: TextIO | None = None, err: TextIO | None = None):
        self.reader = reader
        self.node_name = node_name
        self.client = client
        self.dry_run = dry_run
        self.tracker = HealthTracker(table=table)
        self.report_max_age_s = report_max_age_s
        self.expected_gpus = expected_gpus
        self.boot_id = boot_id
        self.metrics = metrics
        self.clock = clock
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.threaded = False
        self.restored = False
        self.writes = 0
        self.last_report: NodeGpuHealth | None = None
        self.last_state: HealthState | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()

    def log(self, text: str) -> None:
        print(f"guywire node-agent: {text}", file=self.err, flush=True)

    def _node(self) -> dict | None:
        if self.client is None:
            return None
        try:
            return self.client.get()
        except Exception as exc:  # noqa: BLE001 - API hiccups are retried next cycle
            self.log(f"cannot read Node {self.node_name}: {_api_error(exc)}")
            return None

    def cycle(self) -> bool:
        """Read, classify, publish. Returns False when the report could not be written."""
        node = self._node()
        if not self.restored and node is not None:
            previous, _ = parse_gpu_health(((node.get("metadata") or {}).get("annotations") or {})
                                           .get(GPU_HEALTH_ANNOTATION))
            self.tracker.restore(previous)
            self.restored = True
        readings = self.reader.read(drain_events=not self.threaded)
        now = self.clock.now()
        report = self.tracker.assess(readings, now, boot_id=self.boot_id(), expected_gpus=self.expected_gpus(node),
                                     gpu_node=is_gpu_node(node), agent_version=__version__)
        self.last_report = report
        for g in readings.gpus:
            for seen in g.xids:
                rule = self.tracker.table.xid(seen.xid)
                effect = "reported only" if rule.state is HealthState.HEALTHY else f"the GPU is {rule.state.value}"
                named = f"GPU {g.index}" + (f" ({g.uuid})" if g.uuid else "")
                self.log(f"{named} raised XID {seen.xid} ({rule.description}): {effect}.")
        if report.state is not self.last_state:
            self.log(f"node {self.node_name} GPUs are {report.state.value}"
                     + (f": {report.summary()}." if report.reasons else "."))
            self.last_state = report.state
        if self.metrics is not None:
            self.metrics.update(self.node_name, readings, report)
        if self.dry_run:
            print(report.to_json(), file=self.out, flush=True)
            return True
        if self.client is None:
            return True
        why = needs_write(report, node, now, self.report_max_age_s)
        if why is None:
            return True
        try:
            self.client.write(report, node, now)
            self.writes += 1
        except Exception as exc:  # noqa: BLE001
            self.log(f"cannot write Node {self.node_name} ({why}): {_api_error(exc)}")
            return False
        return True

    def run(self, interval_s: float, once: bool = False) -> int:
        if once:
            return EXIT_OK if self.cycle() else EXIT_ERROR
        if self.reader.xids is not None:
            self.reader.xids.start(on_event=self._wake.set)
            self.threaded = self.reader.xids.set is not None
        try:
            while not self._stop.is_set():
                try:
                    self.cycle()
                except Exception as exc:  # noqa: BLE001 - one bad pass must not stop the watch
                    self.log(f"a read failed and is retried next interval: {type(exc).__name__}: {exc}")
                if self._wake.wait(interval_s) and not self._stop.is_set():
                    self._stop.wait(EVENT_SETTLE_S)
                self._wake.clear()
        finally:
            if self.reader.xids is not None:
                self.reader.xids.stop()
        return EXIT_OK

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _api_error(exc: Exception) -> str:
    """``HTTP 403 Forbidden: <the API server's message>.``; the message says which policy refused what."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status:
        from ..kube.client import api_message

        said = api_message(exc)
        said = f": {clip(said, 1000)}" if said and said != reason else ""
        return f"HTTP {status} {reason or ''}".strip() + said.rstrip(".") + "."
    return f"{type(exc).__name__}: {exc}".rstrip(".") + "."


# ----- entry point -------------------------------------------------------------------------------------
def run_node_agent(args: Any, out: TextIO | None = None, err: TextIO | None = None, clock: Clock = SYSTEM) -> int:
    """``guywire node-agent``: returns the exit code. ``clock`` stamps reports, conditions and XID events."""
    out, err = out or sys.stdout, err or sys.stderr

    def fail(text: str) -> int:
        print(f"guywire node-agent: {text}", file=err, flush=True)
        return EXIT_ERROR

    table = DEFAULT_TABLE
    if args.health_config:
        try:
            table = load_health_config(args.health_config)
        except HealthConfigError as exc:
            return fail(str(exc))
    fake = None
    if args.fake_nvml:
        from .fake import FakeNvml, FakeScenarioError

        try:
            fake = FakeNvml(Path(args.fake_nvml), clock)
        except (OSError, FakeScenarioError) as exc:
            return fail(f"--fake-nvml {args.fake_nvml}: {exc}")
        reader = NvmlReader(fake, clock=fake.clock)
    else:
        try:
            reader = NvmlReader(load_pynvml(), clock)
        except NvmlUnavailable as exc:
            return fail(f"cannot read GPUs: {exc} Run it on a GPU node, or try it with --fake-nvml FILE.")
    node_name = args.node_name
    if not node_name and not args.dry_run:
        return fail("no node name: pass --node-name or set NODE_NAME (the downward API's spec.nodeName).")
    node_name = node_name or "dry-run"
    try:
        reader.open()
    except NvmlUnavailable as exc:
        return fail(f"cannot read GPUs: {exc} Run it on a GPU node, or try it with --fake-nvml FILE.")
    client = None
    try:
        if not args.dry_run or args.kubeconfig:
            from ..kube.client import ConfigError

            try:
                client = NodeClient.connect(node_name, args.kubeconfig)
            except ConfigError as exc:
                return fail(str(exc))
            except Exception as exc:  # noqa: BLE001 - no config, bad file: say so and stop
                return fail(f"cannot reach the API server: {type(exc).__name__}: {exc}")
        metrics = None
        if args.metrics_port:
            from prometheus_client import start_http_server

            from .gpu_metrics import GpuMetrics

            metrics = GpuMetrics()
            start_http_server(args.metrics_port, registry=metrics.registry)

        def expected(node: dict | None) -> int | None:
            if args.expected_gpus is not None:
                return args.expected_gpus
            found = expected_gpus_of(node)
            return found if found is not None else (fake.expected_gpus if fake else None)

        def boot_id() -> str | None:
            if fake is not None and fake.boot_id:
                return fake.boot_id
            return read_boot_id(args.boot_id_file)

        agent = NodeAgent(reader, node_name=node_name, client=client, dry_run=args.dry_run, table=table,
                          report_max_age_s=args.report_max_age, expected_gpus=expected, boot_id=boot_id,
                          metrics=metrics, clock=clock, out=out, err=err)
        if not args.once:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    signal.signal(sig, lambda *_: agent.stop())
                except ValueError:  # not the main thread (tests)
                    pass
            agent.log(f"watching the GPUs of node {node_name} every {args.interval:g}s "
                      f"(NVML driver {reader.driver_version or 'unknown'}).")
        return agent.run(args.interval, once=args.once)
    finally:
        reader.close()


__all__ = ["NodeAgent", "NodeClient", "condition_message", "desired_condition", "expected_gpus_of", "fingerprint",
           "is_gpu_node",
           "needs_write", "run_node_agent"]
