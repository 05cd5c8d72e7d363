"""GPU health names every reader shares: the Node annotation, label, taint and condition, and the
health states and actions, ordered. Plain Python: the rules import this without pydantic (the report
models themselves are in ``model.gpu_report``)."""
from __future__ import annotations

from enum import Enum

GPU_HEALTH_ANNOTATION = "guywire.dev/gpu-health"
GPU_HEALTH_LABEL = "guywire.dev/gpu-health"
GPU_CONDITION_TYPE = "GPUUnhealthy"
GPU_TAINT_KEY = "guywire.dev/gpu-unhealthy"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
MAX_NODE_GPUS = 64  # a node holds at most 16 today: a count beyond this is a typo, never a node


class HealthState(str, Enum):
    """Healthy < Degraded < Unhealthy; the node's state is its worst GPU's."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"

    @property
    def rank(self) -> int:
        return _STATE_RANK[self]

    @classmethod
    def worst(cls, states: "list[HealthState] | tuple[HealthState, ...]") -> "HealthState":
        return max(states, key=lambda s: s.rank, default=cls.HEALTHY)


_STATE_RANK = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}


class Action(str, Enum):
    """What a person (or a remediation controller) should do, mildest first."""

    NONE = "None"
    INVESTIGATE = "Investigate"  # cooling, power, cabling, PCIe seating: look before acting
    DRAIN = "Drain"  # stop new work on the GPU, let running work finish
    RESET_GPU = "ResetGPU"  # nvidia-smi -r (or the remediation controller's reset) once drained
    REBOOT_NODE = "RebootNode"
    REPLACE_GPU = "ReplaceGPU"  # field diagnostics, then RMA

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    @classmethod
    def strongest(cls, actions: "list[Action] | tuple[Action, ...]") -> "Action":
        return max(actions, key=lambda a: a.rank, default=cls.NONE)


_ACTION_RANK = {a: i for i, a in enumerate(Action)}
