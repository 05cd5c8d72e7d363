"""The chart's own-node admission policy (``nodeAgent.restrictToOwnNode``) on the real API server: the node agent's
ServiceAccount, with a token bound to its Pod (as the DaemonSet pod's mounted token is), writes its GPU report on the
Node that Pod runs on; on another Node, and with a token that names no node (bound to no pod, or a long-lived Secret
token, which has no user extra at all), the API server refuses with the policy's message, which says what was
refused and how to fix it.

The other modules run the agent with a token bound to no pod, so the release goes back to
``restrictToOwnNode=false`` at the end, and this module's Nodes and Pod are deleted (test_gpu counts GPU Nodes)."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import Release
from tests.cluster.controlplane import ROOT, wait_until
from tests.cluster.gpunodes import gpu_node, ready, run_agent

TIMEOUT = 60
HEALTHY = ROOT / "scenarios" / "nvml" / "h100-healthy.yaml"
UNHEALTHY = ROOT / "scenarios" / "nvml" / "h100-fallen-off-the-bus.yaml"
NODE_A, NODE_B = "own-node-a", "own-node-b"
POD = "guywire-node-agent-on-own-node-a"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
HEALTH = "guywire.dev/gpu-health"


@dataclass
class OwnNode:
    release: Release
    policy: str
    service_account: str
    bound: Path  # a kubeconfig with a token bound to POD, on NODE_A

    @property
    def cluster(self):
        return self.release.cluster


def agent_pod(namespace: str, service_account: str, node: str) -> dict:
    """A Pod of the agent's ServiceAccount on ``node`` (kwok runs it): what a token is bound to."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": namespace},
            "spec": {"serviceAccountName": service_account, "nodeName": node, "automountServiceAccountToken": False,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "node-agent", "image": "ghcr.io/guywire/guywire:test"}]}}


def running(cluster, namespace: str) -> bool:
    return ((cluster.get("pod", POD, namespace) or {}).get("status") or {}).get("phase") == "Running"


def denied_by(cluster, kubeconfig: Path, node: str, policy: str) -> str | None:
    """The API server's refusal of a (dry-run) label patch on ``node``, when the policy made it."""
    patch = json.dumps({"metadata": {"labels": {HEALTH: "Healthy"}}})
    out = cluster.kubectl("patch", "node", node, "--dry-run=server", "--type=merge", "-p", patch,
                          kubeconfig=kubeconfig, check=False)
    return out.stderr if out.returncode != 0 and policy in out.stderr else None


@pytest.fixture(scope="module")
def own_node(release) -> OwnNode:
    cluster = release.cluster
    if not cluster.has_kwok:
        pytest.skip("kwok was not built: no fake kubelets to keep the Nodes Ready and run the agent's Pod "
                    "(see scripts/build-kube.sh)")
    release.install("--set", "nodeAgent.restrictToOwnNode=true")
    try:
        manifest = release.manifest()
        policy = next(o for o in manifest if o["kind"] == "ValidatingAdmissionPolicy")["metadata"]["name"]
        sa = next(o for o in manifest if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"]
        cluster.apply([gpu_node(NODE_A), gpu_node(NODE_B)])
        for n in (NODE_A, NODE_B):
            wait_until(lambda: ready(cluster, n), TIMEOUT, f"kwok to make node {n} Ready")
        cluster.apply(agent_pod(release.namespace, sa, NODE_A))
        wait_until(lambda: running(cluster, release.namespace), TIMEOUT, f"kwok to run Pod {POD} on {NODE_A}")
        bound = cluster.token_kubeconfig(release.namespace, sa, cluster.dir / "node-agent-bound.kubeconfig", pod=POD)
        # the API server loads policies and bindings from its informers: wait until this one refuses
        wait_until(lambda: denied_by(cluster, bound, NODE_B, policy), TIMEOUT, f"policy {policy} in force")
        yield OwnNode(release, policy, sa, bound)
    finally:
        cluster.kubectl("delete", "pod", POD, "-n", release.namespace, "--ignore-not-found", "--grace-period=0",
                        "--force", check=False)
        cluster.kubectl("delete", "node", NODE_A, NODE_B, "--ignore-not-found")
        release.install()
        assert not [o for o in release.manifest() if o["kind"] == "ValidatingAdmissionPolicy"]


def test_the_api_server_type_checks_the_policy_without_warnings(own_node):
    cluster = own_node.cluster

    def checked() -> dict | None:
        policy = cluster.get("validatingadmissionpolicy", own_node.policy)
        status = policy.get("status") or {}
        return status if status.get("observedGeneration") == policy["metadata"]["generation"] else None

    status = wait_until(checked, TIMEOUT, f"the API server to type-check {own_node.policy}")
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


def test_a_token_bound_to_the_agents_pod_names_the_pods_node(own_node):
    review = json.loads(own_node.cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=own_node.bound).stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == own_node.release.agent_user
    assert user["extra"][NODE_NAME_KEY] == [NODE_A]


def test_the_agent_writes_its_report_on_the_node_its_pod_runs_on(own_node):
    cluster = own_node.cluster
    out = run_agent(own_node.release, NODE_A, HEALTHY, kubeconfig=own_node.bound)
    assert out.returncode == 0, out.stderr
    node = cluster.get("node", NODE_A)
    cond = next(c for c in node["status"]["conditions"] if c["type"] == "GPUUnhealthy")
    assert cond["status"] == "False"
    assert node["metadata"]["labels"][HEALTH] == "Healthy"
    assert json.loads(node["metadata"]["annotations"][HEALTH])["state"] == "Healthy"
    assert ready(cluster, NODE_A), "kwok's Ready condition survived the agent's status patch"


def assert_refused(out, node: str, policy: str, why: str) -> None:
    """The agent's one pass failed (exit 2) and its log carries the policy's message: what, and how to fix it."""
    assert out.returncode == 2, out.stderr
    line = next((ln for ln in out.stderr.splitlines() if f"cannot write Node {node}" in ln), None)
    assert line is not None, out.stderr
    assert "HTTP 403" in line and policy in line, line
    assert "may change only the Node its own pod runs on" in line and f"not Node {node}" in line, line
    assert why in line, line
    assert "nodeAgent.restrictToOwnNode=false" in line, line


def untouched(cluster, node: str) -> bool:
    obj = cluster.get("node", node)
    return (HEALTH not in (obj["metadata"].get("labels") or {})
            and not any(c["type"] == "GPUUnhealthy" for c in obj["status"].get("conditions") or []))


def test_the_same_agent_is_refused_on_another_node(own_node):
    out = run_agent(own_node.release, NODE_B, UNHEALTHY, kubeconfig=own_node.bound, codes=(2,))
    assert_refused(out, NODE_B, own_node.policy, f"its token is bound to node {NODE_A}")  # nodes/status
    assert denied_by(own_node.cluster, own_node.bound, NODE_B, own_node.policy)  # nodes: labels, annotations
    assert untouched(own_node.cluster, NODE_B)


def test_a_token_bound_to_no_pod_is_refused_on_every_node(own_node):
    cluster = own_node.cluster
    for node in (NODE_A, NODE_B):
        # UNHEALTHY: a state NODE_A does not have yet, so the agent has something to write there
        out = run_agent(own_node.release, node, UNHEALTHY, codes=(2,))
        assert_refused(out, node, own_node.policy, "its token names no node (it is bound to no pod)")
    assert untouched(cluster, NODE_B)
    assert cluster.get("node", NODE_A)["metadata"]["labels"].get(HEALTH) != "Unhealthy"


def test_other_identities_are_not_restricted(own_node):
    # the policy matches the agent's identity only: the operator (with operator.taintUnhealthyGpuNodes) or an
    # administrator still changes any Node
    patch = json.dumps({"metadata": {"labels": {HEALTH: "Healthy"}}})
    out = own_node.cluster.kubectl("patch", "node", NODE_B, "--dry-run=server", "--type=merge", "-p", patch,
                                   check=False)
    assert out.returncode == 0, out.stderr


def test_a_long_lived_secret_token_is_refused_with_the_policys_message(own_node):
    # such a token carries no user extra at all: the policy must still say what and why, not fail on the CEL
    cluster, release = own_node.cluster, own_node.release
    name = "node-agent-long-lived-token"
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                   "metadata": {"name": name, "namespace": release.namespace,
                                "annotations": {"kubernetes.io/service-account.name": own_node.service_account}}})
    try:
        token = wait_until(lambda: ((cluster.get("secret", name, release.namespace) or {}).get("data") or {})
                           .get("token"), TIMEOUT, "the token controller to fill the Secret")
        kubeconfig = cluster.write_kubeconfig(cluster.dir / f"{name}.kubeconfig", name,
                                              token=base64.b64decode(token).decode())
        user = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
        assert "extra" not in user["status"]["userInfo"]
        out = run_agent(release, NODE_B, UNHEALTHY, kubeconfig=kubeconfig, codes=(2,))
        assert_refused(out, NODE_B, own_node.policy, "its token names no node (it is bound to no pod)")
        assert untouched(cluster, NODE_B)
    finally:
        cluster.kubectl("delete", "secret", name, "-n", release.namespace, "--ignore-not-found")
