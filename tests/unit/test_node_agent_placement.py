"""GW-GPU-003 says when no node agent can run on a GPU node (its DaemonSet's nodeSelector or node affinity
leaves the node out), as on GKE or EKS without NVIDIA's GPU Operator; the README gives the values."""
from __future__ import annotations

import re
from pathlib import Path

from guywire.rules.gpu_nodes import why_no_agent_runs
from guywire.views.workload import parse_node, parse_workload

ROOT = Path(__file__).resolve().parents[2]


def agent(spec: dict) -> object:
    return parse_workload({"apiVersion": "apps/v1", "kind": "DaemonSet",
                           "metadata": {"name": "guywire-node-agent", "namespace": "guywire"},
                           "spec": {"template": {"spec": {**spec, "containers": [
                               {"name": "node-agent", "image": "guywire:0.1.0", "args": ["node-agent"]}]}}}})


GKE = parse_node({"kind": "Node", "metadata": {"name": "gke-l4", "labels": {
    "cloud.google.com/gke-accelerator": "nvidia-l4"}}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}})
EKS = parse_node({"kind": "Node", "metadata": {"name": "eks-g5", "labels": {
    "k8s.amazonaws.com/accelerator": "nvidia-tesla-a10g"}}})
DEFAULT = agent({"nodeSelector": {"nvidia.com/gpu.present": "true"}})


def exists(label: str) -> dict:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": label, "operator": "Exists"}]}]}}}}


def test_the_default_agent_cannot_run_on_gke_or_eks_gpu_nodes():
    for node in (GKE, EKS):
        why = why_no_agent_runs(node, [DEFAULT])
        assert why and "selects nodes labelled nvidia.com/gpu.present=true" in why


def test_the_readme_values_place_the_agent_on_gke_and_eks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### GPU node agent on GKE and EKS", 1)[1].split("\n## ", 1)[0]
    for label, node in (("cloud.google.com/gke-accelerator", GKE), ("k8s.amazonaws.com/accelerator", EKS)):
        assert re.search(rf"key: {re.escape(label)}, operator: Exists", section), label
        assert why_no_agent_runs(node, [agent(exists(label))]) is None
        assert why_no_agent_runs(node, [agent(exists("some.other/label"))]).endswith("leaves this node out")


def test_without_an_agent_among_the_inputs_nothing_is_claimed():
    assert why_no_agent_runs(GKE, []) is None
