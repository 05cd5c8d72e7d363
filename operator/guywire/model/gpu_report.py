"""The GPU health report the node agent writes on its Node, and what readers make of it.

The agent (``guywire node-agent``) writes the report as JSON in the Node annotation
``guywire.dev/gpu-health``; the rules and the operator read it back with
``parse_gpu_health``, which never raises. Readers ignore fields they do not know, so a
newer agent can add fields without breaking an older operator.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from pydantic.alias_generators import to_camel

from ..clock import aware, rfc3339
from .gpu_health import (  # noqa: F401 - re-exported
    GPU_HEALTH_ANNOTATION, GPU_HEALTH_LABEL, GPU_CONDITION_TYPE, GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT,
    GPU_PRESENT_LABEL, GPU_COUNT_LABEL, NVIDIA_GPU_RESOURCE, Action, HealthState,
)


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class XidEvent(_Report):
    """One XID the driver raised on a GPU, and what guywire made of it."""

    xid: int
    name: str = ""
    effect: HealthState = HealthState.HEALTHY  # the state it puts the GPU in (Healthy: reported only)
    action: Action = Action.NONE
    at: datetime | None = None

    @field_serializer("at")
    def _at(self, v: datetime | None) -> str | None:
        return rfc3339(v) if v else None


class LatchedXid(XidEvent):
    """An XID that keeps its GPU Degraded or Unhealthy until the GPU is reset or the node reboots."""

    boot_id: str | None = None


class GpuHealth(_Report):
    index: int
    uuid: str | None = None
    name: str | None = None
    state: HealthState = HealthState.HEALTHY
    reasons: list[str] = Field(default_factory=list)
    action: Action = Action.NONE
    latched: list[LatchedXid] = Field(default_factory=list)
    recent_xids: list[XidEvent] = Field(default_factory=list)  # reported, not necessarily latched
    unknown: list[str] = Field(default_factory=list)  # readings that answered NOT_SUPPORTED
    readings: dict[str, Any] = Field(default_factory=dict)


class NodeGpuHealth(_Report):
    """The whole report: ``state`` is the worst GPU's (or Unhealthy for a node-level fault)."""

    state: HealthState
    reported_at: datetime
    reasons: list[str] = Field(default_factory=list)
    action: Action = Action.NONE
    gpus: list[GpuHealth] = Field(default_factory=list)
    gpu_count: int | None = None  # GPUs NVML sees
    expected_gpus: int | None = None  # GPUs the Node advertises
    driver_version: str | None = None
    boot_id: str | None = None
    agent_version: str | None = None

    @field_serializer("reported_at")
    def _reported_at(self, v: datetime) -> str:
        return rfc3339(v)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True), ensure_ascii=False,
                          separators=(",", ":"))

    def age(self, now: datetime) -> float:
        """Seconds since the report was written (negative when the writer's clock is ahead)."""
        return (aware(now) - aware(self.reported_at)).total_seconds()

    def summary(self, limit: int = 3) -> str:
        """The first reasons, for messages: ``GPU 3: XID 79 ...; GPU 5: ...``."""
        if not self.reasons:
            return self.state.value
        shown = "; ".join(r.rstrip(".") for r in self.reasons[:limit])
        more = len(self.reasons) - limit
        return shown + (f"; and {more} more" if more > 0 else "")


def parse_gpu_health(value: Any) -> tuple[NodeGpuHealth | None, str | None]:
    """Read the annotation value. Returns (report, None), (None, error sentence) or (None, None) when absent.

    Never raises: a Node with a garbled annotation is reported, not crashed on.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except (TypeError, ValueError) as exc:
        return None, f"annotation {GPU_HEALTH_ANNOTATION} is not JSON ({exc})."
    if not isinstance(data, dict):
        return None, f"annotation {GPU_HEALTH_ANNOTATION} is not a JSON object."
    try:
        return NodeGpuHealth.model_validate(data), None
    except ValidationError as err:
        parts = []
        for e in err.errors()[:3]:
            loc = ".".join(str(x) for x in e["loc"]) or "(root)"
            parts.append(f"{loc}: {e['msg'].rstrip('.')}")
        return None, f"annotation {GPU_HEALTH_ANNOTATION} does not hold a GPU health report ({'; '.join(parts)})."
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        return None, f"annotation {GPU_HEALTH_ANNOTATION} could not be read ({type(exc).__name__}: {exc})."


__all__ = [
    "Action", "GPU_CONDITION_TYPE", "GPU_COUNT_LABEL", "GPU_HEALTH_ANNOTATION", "GPU_HEALTH_LABEL",
    "GPU_PRESENT_LABEL", "GPU_TAINT_EFFECT", "GPU_TAINT_KEY", "GPU_TAINT_VALUE", "GpuHealth", "HealthState",
    "LatchedXid", "NVIDIA_GPU_RESOURCE", "NodeGpuHealth", "XidEvent", "parse_gpu_health",
]
