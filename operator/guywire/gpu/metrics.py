"""The node agent's Prometheus metrics: one series per GPU, labels node, gpu (index) and uuid only."""
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..model.gpu import HealthState, NodeGpuHealth
from .readings import GpuReadings, NodeReadings

LABELS = ("node", "gpu", "uuid")
STATE_VALUE = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}


class GpuMetrics:
    """Gauges in a registry of their own, so the agent's endpoint serves GPU figures and nothing else."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def g(name: str, doc: str, labels: tuple[str, ...] = LABELS) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.state = g("guywire_gpu_health_state", "GPU health: 0 Healthy, 1 Degraded, 2 Unhealthy.")
        self.node_state = g("guywire_node_gpu_health_state", "Node GPU health: 0 Healthy, 1 Degraded, 2 Unhealthy.",
                            ("node",))
        self.lost = g("guywire_gpu_lost", "1 when NVML reports the GPU lost.")
        self.gauges: list[tuple[Gauge, Callable[[GpuReadings], Any]]] = [
            (g("guywire_gpu_temperature_celsius", "GPU temperature."), lambda x: x.temperature_c),
            (g("guywire_gpu_slowdown_temperature_celsius", "Temperature at which the GPU slows down."),
             lambda x: x.slowdown_temperature_c),
            (g("guywire_gpu_shutdown_temperature_celsius", "Temperature at which the GPU shuts down."),
             lambda x: x.shutdown_temperature_c),
            (g("guywire_gpu_power_watts", "Power draw."), lambda x: x.power_w),
            (g("guywire_gpu_power_limit_watts", "Enforced power limit."), lambda x: x.power_limit_w),
            (g("guywire_gpu_ecc_uncorrected_volatile_errors", "Uncorrected ECC errors since the last reset."),
             lambda x: x.ecc_uncorrected_volatile),
            (g("guywire_gpu_ecc_uncorrected_aggregate_errors", "Uncorrected ECC errors over the GPU's life."),
             lambda x: x.ecc_uncorrected_aggregate),
            (g("guywire_gpu_retired_pages_pending", "1 when page retirements are pending."),
             lambda x: x.retired_pages_pending),
            (g("guywire_gpu_remapped_rows_correctable", "Rows remapped for correctable errors."),
             lambda x: x.remapped_rows.correctable if x.remapped_rows else None),
            (g("guywire_gpu_remapped_rows_uncorrectable", "Rows remapped for uncorrectable errors."),
             lambda x: x.remapped_rows.uncorrectable if x.remapped_rows else None),
            (g("guywire_gpu_remapped_rows_pending", "1 when a row remap waits for a GPU reset."),
             lambda x: x.remapped_rows.pending if x.remapped_rows else None),
            (g("guywire_gpu_remapped_rows_failure", "1 when row remapping failed."),
             lambda x: x.remapped_rows.failure if x.remapped_rows else None),
            (g("guywire_gpu_clocks_event_reasons", "NVML clock event (throttle) reason bitmask."),
             lambda x: x.clocks_event_mask),
            (g("guywire_gpu_utilization_ratio", "GPU utilisation, 0 to 1."),
             lambda x: x.utilization_gpu_pct / 100 if x.utilization_gpu_pct is not None else None),
            (g("guywire_gpu_memory_used_bytes", "Framebuffer memory used."),
             lambda x: x.memory_used_mib * 2**20 if x.memory_used_mib is not None else None),
            (g("guywire_gpu_memory_total_bytes", "Framebuffer memory."),
             lambda x: x.memory_total_mib * 2**20 if x.memory_total_mib is not None else None),
            (g("guywire_gpu_nvlink_down_links", "NVLink links down while others are up."),
             lambda x: len(x.nvlink_down) if x.nvlink_down is not None else None),
            (g("guywire_gpu_pcie_replays_per_minute", "PCIe replays per minute."),
             lambda x: x.pcie_replays_per_minute),
            (g("guywire_gpu_recovery_action", "The driver's recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)."),
             lambda x: x.recovery_action),
        ]
        self.xids = Counter("guywire_gpu_xid_events", "XID events seen.", LABELS, registry=r)

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
            for gauge, read in self.gauges:
                value = read(g)
                if value is None:
                    try:
                        gauge.remove(*labels)
                    except KeyError:
                        pass
                else:
                    gauge.labels(*labels).set(float(value))
            if g.xids:
                self.xids.labels(*labels).inc(len(g.xids))
