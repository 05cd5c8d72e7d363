"""The README's Helm values for GitOps and for GPU nodes without NVIDIA's GPU Operator, rendered by the real
helm: the stable certificate modes render the same manifests every time (the generated CA does not, which
is why they exist), and the GKE/EKS node-agent values place the agent on those platforms' GPU labels."""
from __future__ import annotations

import re

import pytest
import yaml

from guywire.rules.gpu_nodes import why_no_agent_runs
from guywire.views.workload import parse_node, parse_workload

from .test_helm_chart import CHART, ROOT, helm, run_helm  # noqa: F401 - helm is the module's fixture

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    assert f"### {title}\n" in README, f"README has the section {title!r}"
    return README.split(f"### {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def values_blocks(title: str, top: str) -> list[dict]:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section(title), re.S)]
    return [b for b in blocks if isinstance(b, dict) and top in b]


def render(helm: str, tmp_path, values: dict, name: str = "values") -> str:  # noqa: F811
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return run_helm(helm, "template", "guywire", str(CHART), "--namespace", "guywire", "-f", str(path)).stdout


def test_stable_certificate_modes_render_the_same_every_time(helm, tmp_path):  # noqa: F811
    modes = values_blocks("Webhook certificates under Argo CD and Flux", "webhook")
    assert len(modes) == 2, "cert-manager and your own Secret"
    for i, values in enumerate(modes):
        first, second = render(helm, tmp_path, values, f"m{i}"), render(helm, tmp_path, values, f"m{i}")
        assert first == second
        assert "kind: Secret\n" not in first, "no generated Secret to drift"
    generated = [render(helm, tmp_path, {}, f"g{i}") for i in range(2)]
    assert generated[0] != generated[1], "helm template makes a new CA each time: the reason for the modes"


def test_gke_and_eks_values_place_the_node_agent_on_their_gpu_labels(helm, tmp_path):  # noqa: F811
    platforms = values_blocks("GPU node agent on GKE and EKS", "nodeAgent")
    labels = {"cloud.google.com/gke-accelerator": "nvidia-l4", "k8s.amazonaws.com/accelerator": "nvidia-tesla-a10g"}
    assert len(platforms) == 2
    for i, values in enumerate(platforms):
        docs = [d for d in yaml.safe_load_all(render(helm, tmp_path, values, f"p{i}")) if d]
        (agent,) = [d for d in docs if d["kind"] == "DaemonSet"]
        spec = agent["spec"]["template"]["spec"]
        assert "nvidia.com/gpu.present" not in (spec.get("nodeSelector") or {})
        assert "runtimeClassName" not in spec
        (expr,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"][0]["matchExpressions"]
        node = parse_node({"kind": "Node", "metadata": {"name": "gpu", "labels": {expr["key"]: labels[expr["key"]]}}})
        assert why_no_agent_runs(node, [parse_workload(agent)]) is None
        default = [d for d in yaml.safe_load_all(render(helm, tmp_path, {}, "default")) if d]
        (default_agent,) = [d for d in default if d["kind"] == "DaemonSet"]
        assert "nvidia.com/gpu.present" in why_no_agent_runs(node, [parse_workload(default_agent)])


@pytest.mark.parametrize("title", ["Webhook certificates under Argo CD and Flux", "GPU node agent on GKE and EKS"])
def test_the_sections_are_under_install_with_helm(title):
    assert README.index("## Install with Helm") < README.index(f"### {title}") < README.index(
        "## The dependency graph of the example")
