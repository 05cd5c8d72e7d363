"""The GPU taint writer (opt-in): nodes whose GPUs report Unhealthy tainted, recovered ones untainted, at
most ``taint_max_fraction`` of the GPU nodes at once (the circuit breaker, see guywire.gpu.taint); a
held-back taint is said once, as a Warning Event on each node held back."""
from __future__ import annotations

import logging

from ..views.annotations import GPU_HEALTH
from ..gpu.taint import NodeTaintState, TaintPlan, has_taint, plan_taints, taint_spec
from ..kube.client import NODE, ApiFailure, KubeClient
from .metrics import OperatorMetrics
from ..model.gpu_report import GPU_TAINT_KEY, parse_gpu_health
from ..rules.gpu_nodes import is_gpu_node
from .event_writer import EventWriter
from .index import Index
from .settings import Settings

log = logging.getLogger("guywire.operator")


class TaintWriter:
    def __init__(self, client: KubeClient | None, index: Index, events: EventWriter, settings: Settings,
                 metrics: OperatorMetrics):
        self.client, self.index, self.events, self.settings, self.metrics = client, index, events, settings, metrics
        self.node_taints: dict[str, list] = {}  # node -> its spec.taints, as observed or as written
        self.dirty = False
        self.breaker_message: str | None = None

    def seen(self, name: str, taints: list) -> None:
        self.node_taints[name] = taints
        self.dirty = True

    def forget(self, name: str) -> None:
        self.node_taints.pop(name, None)
        self.dirty = True

    def plan(self) -> TaintPlan:
        """What to taint and untaint now, from the nodes' reports."""
        states = []
        for name, node in self.index.engine.inventory.nodes.items():
            report, _ = parse_gpu_health(node.annotations.get(GPU_HEALTH))
            taints = self.node_taints.get(name, [])
            states.append(NodeTaintState(name=name, gpu_node=is_gpu_node(node),
                                         state=report.state if report else None,
                                         tainted=has_taint({"spec": {"taints": taints}})))
        return plan_taints(states, self.settings.taint_max_fraction)

    async def write(self) -> None:
        self.dirty = False
        plan = self.plan()
        for name, add in [(n, True) for n in plan.taint] + [(n, False) for n in plan.untaint]:
            current = [t for t in self.node_taints.get(name, []) if not (isinstance(t, dict)
                                                                          and t.get("key") == GPU_TAINT_KEY)]
            taints = current + [taint_spec()] if add else current
            try:
                await self.client.merge_patch(NODE.path(None, name), {"spec": {"taints": taints}})
            except ApiFailure as exc:
                log.warning("Cannot %s node %s: %s; will retry.", "taint" if add else "untaint", name, exc)
                self.dirty = True
                continue
            self.node_taints[name] = taints
            log.info("%s node %s (%s).", "Tainted" if add else "Untainted", name,
                     "GPUs Unhealthy" if add else "GPUs recovered")
        self.metrics.taints.set(sum(1 for t in self.node_taints.values() if has_taint({"spec": {"taints": t}})))
        message = plan.message()
        if message and message != self.breaker_message:
            log.warning("%s", message)
            for name in plan.held_back:
                self.events.put(("node", name, "breaker"), dict(
                    involved={"apiVersion": "v1", "kind": "Node", "name": name, "namespace": "default"},
                    reason="GPUTaintHeldBack", type_="Warning", message=message,
                    key=f"{name}|breaker|{message}"))
        self.breaker_message = message
