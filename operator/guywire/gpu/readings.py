"""Plain readings of one NVML pass: what ``gpu.nvml`` returns and ``gpu.classify`` judges.

``None`` always means unknown (the call answered NOT_SUPPORTED, or failed); the reading's
name is then listed in ``unknown`` (not supported) or ``errors`` (failed otherwise). The readings
(their names, NVML calls, fields and what the annotation shows) are described in ``gpu.signals``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class RemappedRows:
    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@dataclass(slots=True)
class XidSeen:
    """One XID event from NVML's event set, attributed to a GPU."""

    xid: int
    uuid: str | None
    index: int | None
    at: datetime


@dataclass(slots=True)
class GpuReadings:
    index: int
    uuid: str | None = None
    name: str | None = None
    lost: bool = False  # NVML_ERROR_GPU_IS_LOST on some call: the GPU fell off the bus or stopped answering
    lost_during: str | None = None  # the reading that found it lost
    reset_required: bool = False  # NVML_ERROR_RESET_REQUIRED
    inaccessible: str | None = None  # NVML could not open the GPU at all (the error, in words)
    temperature_c: float | None = None
    slowdown_temperature_c: float | None = None
    shutdown_temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows: RemappedRows | None = None
    clocks_event_reasons: list[str] | None = None  # names such as HwSlowdown
    clocks_event_mask: int | None = None
    utilization_gpu_pct: float | None = None
    utilization_memory_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    nvlink_active: list[int] | None = None
    nvlink_down: list[int] | None = None  # links that answer inactive while others of this GPU are active
    pcie_replay_counter: int | None = None
    pcie_replays_per_minute: float | None = None  # from two counter samples at least a window apart
    recovery_action: int | None = None  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    xids: list[XidSeen] = field(default_factory=list)  # XID events since the last read
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # fields of signals without an attribute here


@dataclass(slots=True)
class NodeReadings:
    """One pass over every GPU NVML sees."""

    gpus: list[GpuReadings]
    driver_version: str | None = None
    gpu_count: int | None = None  # what nvmlDeviceGetCount answered
    errors: list[str] = field(default_factory=list)  # node-level failures (counting GPUs, events)
    unattributed_xids: list[XidSeen] = field(default_factory=list)  # events whose GPU could not be named
