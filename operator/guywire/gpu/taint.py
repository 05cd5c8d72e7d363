"""Which GPU nodes to taint and untaint: the pure decision behind ``guywire run --taint-unhealthy-gpu-nodes``.

The operator adds ``guywire.dev/gpu-unhealthy=true:NoSchedule`` to Unhealthy GPU nodes and
removes it when they recover, with a circuit breaker: never more than ``max_fraction`` of
the GPU nodes tainted, so a bad agent rollout, a driver update or a misread fleet cannot
take the whole GPU capacity away. Recovering nodes are always untainted, breaker or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from ..model.gpu_report import GPU_TAINT_EFFECT, GPU_TAINT_KEY, GPU_TAINT_VALUE, HealthState

DEFAULT_MAX_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class NodeTaintState:
    name: str
    gpu_node: bool  # labelled nvidia.com/gpu.present=true or allocatable nvidia.com/gpu > 0
    state: HealthState | None  # from its report; None: no report, or one that cannot be read
    tainted: bool  # carries guywire.dev/gpu-unhealthy now


@dataclass(slots=True)
class TaintPlan:
    taint: list[str] = field(default_factory=list)
    untaint: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)  # Unhealthy, left untainted by the circuit breaker
    gpu_nodes: int = 0
    limit: int = 0  # most GPU nodes that may carry the taint
    tainted_after: int = 0

    @property
    def tripped(self) -> bool:
        return bool(self.held_back)

    def message(self) -> str | None:
        """One sentence for an Event or log when the breaker holds nodes back; None otherwise."""
        if not self.held_back:
            return None
        names = ", ".join(self.held_back[:5]) + (f" and {len(self.held_back) - 5} more" if len(self.held_back) > 5
                                                 else "")
        return (f"Circuit breaker: {len(self.held_back)} Unhealthy GPU node(s) left untainted ({names}); "
                f"{self.tainted_after} of {self.gpu_nodes} GPU nodes carry {GPU_TAINT_KEY}, the limit is "
                f"{self.limit}. Repair the tainted nodes or raise --taint-max-fraction.")


def taint_limit(gpu_nodes: int, max_fraction: float) -> int:
    """floor(max_fraction x GPU nodes): tainted / GPU nodes never exceeds max_fraction."""
    return max(0, math.floor(gpu_nodes * max_fraction + 1e-9))


def plan_taints(nodes: Iterable[NodeTaintState], max_fraction: float = DEFAULT_MAX_FRACTION) -> TaintPlan:
    """Decide; never raises for well-typed input. Deterministic: candidates are taken in name order.

    - a tainted node whose report says Healthy or Degraded is untainted (always);
    - a tainted node that is no longer a GPU node is untainted;
    - a tainted node with no readable report keeps its taint (nothing says it recovered);
    - an Unhealthy GPU node is tainted while the count of tainted GPU nodes stays within the limit.
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be between 0 and 1, got {max_fraction!r}.")
    nodes = sorted(nodes, key=lambda n: n.name)
    plan = TaintPlan()
    gpu = [n for n in nodes if n.gpu_node]
    plan.gpu_nodes = len(gpu)
    plan.limit = taint_limit(len(gpu), max_fraction)
    for n in nodes:
        if n.tainted and (not n.gpu_node or n.state in (HealthState.HEALTHY, HealthState.DEGRADED)):
            plan.untaint.append(n.name)
    staying = sum(1 for n in gpu if n.tainted and n.name not in plan.untaint)
    room = max(0, plan.limit - staying)
    for n in gpu:
        if n.state is HealthState.UNHEALTHY and not n.tainted:
            if room > 0:
                plan.taint.append(n.name)
                room -= 1
            else:
                plan.held_back.append(n.name)
    plan.tainted_after = staying + len(plan.taint)
    return plan


def taint_spec() -> dict:
    """The taint as it goes into a Node's spec.taints."""
    return {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}


def has_taint(node: dict) -> bool:
    return any(isinstance(t, dict) and t.get("key") == GPU_TAINT_KEY
               for t in ((node.get("spec") or {}).get("taints") or []))


__all__ = ["DEFAULT_MAX_FRACTION", "NodeTaintState", "TaintPlan", "has_taint", "plan_taints", "taint_limit",
           "taint_spec"]
