"""The node agent's Prometheus metrics: one series per GPU, labels node, gpu (index) and uuid only.

The health states and ``lost`` are the agent's own; every other series is a signal's (``gpu.signals``).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..model.gpu_report import HealthState, NodeGpuHealth
from .readings import NodeReadings
from .signals import SIGNALS, Metric, Signal

LABELS = ("node", "gpu", "uuid")
STATE_VALUE = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}


class GpuMetrics:
    """Gauges in a registry of their own, so the agent's endpoint serves GPU figures and nothing else."""

    def __init__(self, registry: CollectorRegistry | None = None, signals: tuple[Signal, ...] = SIGNALS):
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def g(name: str, doc: str, labels: tuple[str, ...] = LABELS) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.state = g("guywire_gpu_health_state", "GPU health: 0 Healthy, 1 Degraded, 2 Unhealthy.")
        self.node_state = g("guywire_node_gpu_health_state", "Node GPU health: 0 Healthy, 1 Degraded, 2 Unhealthy.",
                            ("node",))
        self.lost = g("guywire_gpu_lost", "1 when NVML reports the GPU lost.")
        metrics = [m for s in signals for m in s.metrics]
        self.gauges: list[tuple[Gauge, Metric]] = [(g(m.name, m.help), m) for m in metrics if not m.counter]
        self.counters: list[tuple[Counter, Metric]] = [
            (Counter(m.name, m.help, LABELS, registry=r), m) for m in metrics if m.counter]

    def update(self, node: str, readings: NodeReadings, report: NodeGpuHealth) -> None:
        self.node_state.labels(node).set(STATE_VALUE[report.state])
        states = {gpu.index: gpu for gpu in report.gpus}
        for g in readings.gpus:
            gpu = states.get(g.index)
            uuid = g.uuid or (gpu.uuid if gpu else None) or ""
            labels = (node, str(g.index), uuid)
            if gpu is not None:
                self.state.labels(*labels).set(STATE_VALUE[gpu.state])
            self.lost.labels(*labels).set(1 if g.lost else 0)
            for gauge, metric in self.gauges:
                value = metric.value(g)
                if value is None:
                    try:
                        gauge.remove(*labels)
                    except KeyError:
                        pass
                else:
                    gauge.labels(*labels).set(float(value))
            for counter, metric in self.counters:
                value = metric.value(g)
                if value:
                    counter.labels(*labels).inc(value)
