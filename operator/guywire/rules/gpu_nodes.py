"""GPU rules: workloads headed for GPU nodes whose health report says Unhealthy or Degraded, and GPU nodes
without a fresh report.

The report is the JSON the node agent writes in the Node annotation guywire.dev/gpu-health
(`model.gpu_report`). The rules read the Node views in the inventory and, for pods already
placed, `ctx.gpu_pods` (workload key -> node names, filled by the operator from the
pods' spec.nodeName). Parsed reports are memoised in `ctx.node_health` per node and
annotation value.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

from ..model.gpu_health import GPU_HEALTH_ANNOTATION, GPU_PRESENT_LABEL, HealthState
from ..model.selectors import labels_match, node_affinity_matches
from ..model.severity import Severity
from ..views.workload import Node, PodTemplate, Workload
from .base import Context, Issue, measured, rule

if TYPE_CHECKING:
    from ..model.gpu_report import NodeGpuHealth
    from ..model.policy import GpuRules


def node_report(ctx: Context, node: Node) -> tuple[NodeGpuHealth | None, str | None]:
    """The node's GPU health report, parsed once per annotation value. Never raises."""
    from ..model.gpu_report import NodeGpuHealth, parse_gpu_health  # pydantic: only where there are GPU nodes to read

    raw = node.annotations.get(GPU_HEALTH_ANNOTATION)
    cached = ctx.node_health.get(node.name)
    if isinstance(cached, NodeGpuHealth):  # filled in by a caller that parsed it already
        return cached, None
    if isinstance(cached, tuple) and len(cached) == 3 and cached[0] == raw:
        return cached[1], cached[2]
    report, error = parse_gpu_health(raw)
    ctx.node_health[node.name] = (raw, report, error)
    return report, error


def is_gpu_node(node: Node) -> bool:
    return node.labels.get(GPU_PRESENT_LABEL, "").lower() == "true" or node.allocatable_gpus > 0


def pinned_nodes(t: PodTemplate, ctx: Context) -> tuple[str, list[Node]] | None:
    """How the template is pinned and the known nodes it can land on; None when it is not pinned or cannot be judged.

    Pinning is nodeName, nodeSelector or required node affinity. Among the matching nodes, only GPU nodes
    count when there are any: a pod that requests GPUs cannot run anywhere else.
    """
    nodes = ctx.inventory.nodes
    if t.node_name:
        node = nodes.get(t.node_name)
        return ("nodeName", [node]) if node else None
    if not t.node_selector and not t.node_affinity:
        return None
    if any(not term for term in t.node_affinity):
        return None  # a term of matchFields only: not read into the view, so not judged
    found = [n for n in nodes.values()
             if labels_match(t.node_selector, n.labels)
             and (not t.node_affinity or node_affinity_matches(t.node_affinity, n.labels))]
    gpu = [n for n in found if is_gpu_node(n)]
    how = " and ".join(x for x, on in (("nodeSelector", t.node_selector), ("node affinity", t.node_affinity)) if on)
    return (how, gpu or found) if found else None


def node_agents(ctx: Context) -> list[Workload]:
    """The guywire node-agent DaemonSets among the inputs (a container that runs ``node-agent``), looked up
    once per evaluation pass."""
    found = ctx.memo.get("node-agents")
    if found is None:
        found = ctx.memo["node-agents"] = [
            w for w in ctx.inventory.workloads.values() if w.kind == "DaemonSet"
            and any("node-agent" in c.args for t in w.templates for c in t.containers)]
    return found


def why_no_agent_runs(node: Node, agents: list[Workload]) -> str | None:
    """Why none of ``agents`` can be scheduled on ``node`` (its nodeSelector or required node affinity
    leaves the node out), or None when one can, or when there is no agent to judge by."""
    reasons = []
    for a in agents:
        for t in a.templates:
            missing = [f"{k}={v}" for k, v in t.node_selector.items() if node.labels.get(k) != v]
            if missing:
                reasons.append(f"DaemonSet {a.namespace}/{a.name} selects nodes labelled {', '.join(missing)}, "
                               "which this node is not")
            elif t.node_affinity and not node_affinity_matches(t.node_affinity, node.labels):
                reasons.append(f"DaemonSet {a.namespace}/{a.name}'s required node affinity leaves this node out")
            else:
                return None
    return "; ".join(reasons) or None


AGENT_PLACEMENT_HINT = ("Point the chart's nodeAgent.nodeSelector or nodeAgent.affinity at a label this node has "
                        "(GKE: cloud.google.com/gke-accelerator, EKS: k8s.amazonaws.com/accelerator; README, "
                        "'GPU node agent on GKE and EKS').")


def _state(ctx: Context, node: Node) -> HealthState | None:
    report, _ = node_report(ctx, node)
    return report.state if report else None


def _names(nodes: list[Node]) -> str:
    shown = ", ".join(f'"{n.name}"' for n in nodes[:3])
    return shown + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")


def _why(ctx: Context, node: Node) -> str:
    report, _ = node_report(ctx, node)
    if report is None:
        return ""
    return f"{report.summary(limit=2)}; recommended action {report.action.value}"


def _placement_issues(w: Workload, ctx: Context, target: HealthState) -> Iterator[Issue]:
    """Issues for pods on, or pinned only to, nodes in state `target` (Degraded: Degraded but not all Unhealthy)."""
    if not w.requests_gpu:
        return
    running = [ctx.inventory.nodes[n] for n in sorted(ctx.gpu_pods.get(w.key, ())) if n in ctx.inventory.nodes]
    bad = [n for n in running if _state(ctx, n) is target]
    if bad:
        yield Issue(f"runs GPU pods on {'node' if len(bad) == 1 else 'nodes'} {_names(bad)}, whose GPUs are "
                    f"{target.value} (\"{bad[0].name}\": {_why(ctx, bad[0])}). "
                    + ("Move the pods to healthy GPU nodes and repair the node."
                       if target is HealthState.UNHEALTHY else
                       "Plan to move the pods, and repair the node when they are drained."))
    on_bad = {n.name for n in bad}
    for t in w.templates:
        if not any(c.gpu_resources for c in t.containers):
            continue
        pinned = pinned_nodes(t, ctx)
        if pinned is None:
            continue
        how, nodes = pinned
        states = [_state(ctx, n) for n in nodes]
        if target is HealthState.UNHEALTHY:
            hit = all(s is HealthState.UNHEALTHY for s in states)
        else:
            hit = (all(s in (HealthState.DEGRADED, HealthState.UNHEALTHY) for s in states)
                   and any(s is HealthState.DEGRADED for s in states))
        if not hit or (how == "nodeName" and nodes[0].name in on_bad):
            continue
        worst = next(n for n, s in zip(nodes, states) if s is target)
        if len(nodes) == 1:
            alone = "" if how == "nodeName" else " alone"
            where = f'to GPU node "{worst.name}"{alone}, which is {target.value} ({_why(ctx, worst)})'
        else:
            label = target.value if target is HealthState.UNHEALTHY else "Degraded or Unhealthy"
            where = f'to GPU nodes {_names(nodes)}, all {label} ("{worst.name}": {_why(ctx, worst)})'
        yield Issue(f"is pinned by {how} {where}. Point nodeName, nodeSelector or node affinity at healthy GPU "
                    "nodes, or repair the node.", location=t.role)


@rule(id="GW-GPU-001", name="unhealthy-gpu-node", severity=Severity.HIGH, section="gpu",
      switch="block_unhealthy_nodes",
      summary="GPU pods run on, or are pinned only to, nodes whose GPUs are Unhealthy.",
      remediation="Point nodeName, nodeSelector or required node affinity at healthy GPU nodes (kubectl get nodes "
                  "-L guywire.dev/gpu-health), move running pods off the node, and repair it as its report's "
                  "action says (reset the GPU, reboot the node, or replace the GPU).")
def unhealthy_gpu_node(w: Workload, params: GpuRules, ctx: Context) -> Iterator[Issue]:
    """A GPU with uncorrectable memory errors, a failed row remap, a critical XID or one that fell off the
    bus keeps accepting pods and fails them in ways that look like model bugs: NaNs, hangs, CUDA errors
    that vanish on a retry elsewhere. The node agent (`guywire node-agent`) classifies every GPU through
    NVML and writes the node's report in the annotation guywire.dev/gpu-health (docs/gpu-health.md lists
    what makes a GPU Unhealthy). Raised for a workload that requests GPUs when its pods run on an
    Unhealthy node, or when nodeName, nodeSelector or required node affinity leave it only Unhealthy GPU
    nodes to land on. Under Enforce the admission webhook refuses such a workload; turn that off with
    `rules.gpu.blockUnhealthyNodes: false`. Nodes without a report are never counted as Unhealthy."""
    yield from _placement_issues(w, ctx, HealthState.UNHEALTHY)


@rule(id="GW-GPU-002", name="degraded-gpu-node", severity=Severity.MEDIUM, section="gpu",
      switch="warn_degraded_nodes",
      summary="GPU pods run on, or are pinned only to, nodes whose GPUs are Degraded.",
      remediation="Prefer healthy GPU nodes (widen the nodeSelector or affinity), and schedule the node's repair: "
                  "a pending row remap or page retirement needs a GPU reset; throttling and PCIe replays need "
                  "cooling, power or seating checked.")
def degraded_gpu_node(w: Workload, params: GpuRules, ctx: Context) -> Iterator[Issue]:
    """A Degraded GPU still works but runs slower or is one reset away from healing: a pending row remap
    or page retirement, a temperature at the slowdown threshold, hardware slowdown or power-brake
    throttling, or PCIe replays above DCGM's limit. Training jobs on it run at the speed of the slowest
    rank. Raised for a workload that requests GPUs when its pods run on a Degraded node, or when its
    pinning leaves only Degraded (or Unhealthy, at least one Degraded) GPU nodes. Turned off with
    `rules.gpu.warnDegradedNodes: false`."""
    yield from _placement_issues(w, ctx, HealthState.DEGRADED)


def report_age(seconds: float) -> int:
    """An age as a message shows it: whole seconds under 2 minutes, whole minutes under 2 hours, whole hours
    beyond; rounded up, so an age past the limit never reads as the limit."""
    step = 1 if seconds < 120 else 60 if seconds < 7200 else 3600
    return -(-math.ceil(seconds) // step) * step


@rule(id="GW-GPU-003", name="stale-gpu-health-report", severity=Severity.MEDIUM, section="gpu", target="node",
      unit="seconds", limit_from="rules.gpu.reportMaxAge",
      summary="A GPU node has no GPU health report, or one older than reportMaxAge.",
      remediation="Run the guywire node-agent DaemonSet on every GPU node (the Helm chart's nodeAgent) and read "
                  "the logs of its pod on this node; a running agent refreshes the report at least every "
                  "reportMaxAge / 2.")
def stale_gpu_health_report(node: Node, params: GpuRules, ctx: Context) -> Iterator[Issue]:
    """Without a fresh report nothing tells a healthy GPU node from a broken one, and GW-GPU-001/002 stay
    silent about it. A GPU node is one labelled nvidia.com/gpu.present=true or advertising allocatable
    GPUs. Its report (annotation guywire.dev/gpu-health) is stale when its reportedAt is older than
    `rules.gpu.reportMaxAge` at the time of evaluation (the CLI's `--now`); its age is then the
    finding's observed figure, rounded up to whole seconds, minutes (from 2 minutes) or hours (from 2
    hours) as the message shows it. A missing or unreadable report has no age, and no figures. When
    the node agent's DaemonSet is among the inputs and its nodeSelector or required node affinity
    leaves the node out (the chart's default label nvidia.com/gpu.present on GKE or EKS without
    NVIDIA's GPU Operator), the message says that no agent can run there, and why. The finding is on
    the Node."""
    if not is_gpu_node(node):
        return
    report, error = node_report(ctx, node)
    if error:
        yield Issue(f"has a GPU health report that cannot be read: {error} Check the node agent's version and logs.")
        return
    if report is None:
        blocked = why_no_agent_runs(node, node_agents(ctx))
        if blocked:
            yield Issue(f"has no GPU health report (annotation {GPU_HEALTH_ANNOTATION}), and no node agent can run "
                        f"on it: {blocked}. {AGENT_PLACEMENT_HINT}")
            return
        yield Issue(f"has no GPU health report (annotation {GPU_HEALTH_ANNOTATION}), so no node agent watches its "
                    "GPUs. Run the guywire node-agent DaemonSet on GPU nodes.")
        return
    if ctx.now is None:
        return
    age = report.age(ctx.now)
    if age > params.report_max_age:
        blocked = why_no_agent_runs(node, node_agents(ctx))
        if blocked:
            yield measured("has a GPU health report {observed} old (limit {limit}), and no node agent can run on it "
                           "now: {blocked}. {hint}", observed=report_age(age), limit=params.report_max_age,
                           unit="seconds", blocked=blocked, hint=AGENT_PLACEMENT_HINT)
            return
        yield measured("has a GPU health report {observed} old (limit {limit}), so the node agent stopped "
                       "reporting. Check the node-agent pod on this node.",
                       observed=report_age(age), limit=params.report_max_age, unit="seconds")
