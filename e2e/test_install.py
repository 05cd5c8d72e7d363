"""Install the chart the way the README says, run the examples through it, and uninstall it cleanly.

The tests run in file order and share one release: install -> policies -> workloads (Warn warnings,
an Enforce denial) -> annotations, Events, policy status, metrics -> uninstall.
"""
from __future__ import annotations

import json

import pytest

from .conftest import CHART, EXAMPLES, IMAGE, NAMESPACE, RELEASE, Cluster, wait_for

EXAMPLE_NAMESPACES = ("ml", "data")


@pytest.fixture(scope="module")
def release(cluster: Cluster):
    """`helm install guywire helm/guywire -n guywire --create-namespace`, with the image under test."""
    repository, _, tag = IMAGE.rpartition(":")
    if not repository:
        repository, tag = IMAGE, "e2e"
    cluster.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                 "--set", "operator.auditInterval=1m", "--wait", "--timeout", "5m")
    state = {"installed": True}
    yield state
    if state["installed"]:  # a test failed before test_uninstall_leaves_nothing_behind
        cleanup(cluster)
        cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)


def cleanup(cluster: Cluster) -> None:
    cluster.kubectl("delete", "-f", str(EXAMPLES / "rag-stack"), "--ignore-not-found", "--wait=false", check=False)
    cluster.kubectl("delete", "-f", str(EXAMPLES / "policies"), "--ignore-not-found", check=False)
    for ns in EXAMPLE_NAMESPACES:
        cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def operator_logs(cluster: Cluster) -> str:
    return cluster.kubectl("logs", "-n", NAMESPACE, f"deployment/{RELEASE}", "--tail=80", check=False).stdout


def test_operator_is_running(cluster, release):
    deploy = cluster.get("deployment", RELEASE, "-n", NAMESPACE)
    assert deploy["status"].get("availableReplicas") == 1, json.dumps(deploy["status"])
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args
    vwc = cluster.get("validatingwebhookconfiguration", RELEASE)
    assert all(h["clientConfig"].get("caBundle") for h in vwc["webhooks"])
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "complexitypolicies.guywire.dev" in crds and "clustercomplexitypolicies.guywire.dev" in crds
    # No GPU nodes in kind: the node agent DaemonSet exists and schedules nothing.
    ds = cluster.get("daemonset", f"{RELEASE}-node-agent", "-n", NAMESPACE)
    assert ds["status"]["desiredNumberScheduled"] == 0


def test_policies_become_ready(cluster, release):
    cluster.kubectl("apply", "-f", str(EXAMPLES / "rag-stack" / "namespaces.yaml"))
    cluster.kubectl("apply", "-f", str(EXAMPLES / "policies"))

    def ready(kind: str, *where: str):
        def probe():
            obj = cluster.get(kind, *where)
            conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            return obj if conditions.get("Ready", {}).get("status") == "True" else None
        return probe

    wait_for("ClusterComplexityPolicy ai-baseline Ready", ready("clustercomplexitypolicy", "ai-baseline"))
    wait_for("ComplexityPolicy ml/gpu-serving Ready", ready("complexitypolicy", "gpu-serving", "-n", "ml"))


def test_warn_policy_warns_and_enforce_policy_denies_on_apply(cluster, release):
    out = cluster.kubectl("apply", "-f", str(EXAMPLES / "rag-stack"), check=False)
    # gpu-serving (Enforce) refuses the GPU Deployment that breaks its rules, naming them.
    assert out.returncode != 0, f"llm-server was admitted:\n{out.stdout}{out.stderr}"
    assert 'denied the request' in out.stderr and "llm-server" in out.stderr, out.stderr
    assert "GW-OBS-005" in out.stderr, out.stderr
    assert not cluster.exists("deployment", "llm-server", "-n", "ml")
    # ai-baseline (Warn) lets the rest in, and kubectl prints guywire's warnings.
    warnings = [line for line in out.stderr.splitlines() if line.startswith("Warning:")]
    assert any("GW-" in w for w in warnings), out.stderr
    for name in ("gateway", "rag-orchestrator", "retriever", "reranker", "embedder"):
        assert cluster.exists("deployment", name, "-n", "ml"), name


def test_workloads_are_annotated(cluster, release):
    def annotations():
        meta = cluster.get("deployment", "gateway", "-n", "ml")["metadata"]
        ann = meta.get("annotations", {})
        return ann if "GW-RTY-002" in ann.get("guywire.dev/violations", "") else None

    ann = wait_for("guywire.dev/violations on ml/gateway", annotations)
    assert ann["guywire.dev/complexity-score"]
    assert ann["guywire.dev/evaluated-at"]


def test_warning_events_are_posted_once_per_rule(cluster, release):
    def events():
        items = cluster.get("events", "-n", "ml", "--field-selector", "reason=GW-RTY-002")["items"]
        return [e for e in items if e["involvedObject"]["name"] == "gateway"]

    found = wait_for("a GW-RTY-002 Event on ml/gateway", events)
    assert all(e["type"] == "Warning" and "gateway" in e["message"] for e in found)
    # Deduplicated: one Event per workload, rule and message, however many reconciles ran.
    messages = [e["message"] for e in found]
    assert len(messages) == len(set(messages)), messages


def test_policy_status_counts_and_lists_findings(cluster, release):
    def status():
        st = cluster.get("clustercomplexitypolicy", "ai-baseline").get("status", {})
        return st if st.get("violating", 0) >= 1 and st.get("findings") else None

    st = wait_for("ai-baseline status with violations", status)
    assert st["matched"] >= st["violating"] >= 1
    assert any(f.get("rule", "").startswith("GW-") for f in st["findings"]), st["findings"][:3]
    assert st["observedGeneration"] >= 1


def test_metrics_are_served(cluster, release):
    path = f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}:metrics/proxy/metrics"
    text = wait_for("guywire metrics", lambda: cluster.kubectl("get", "--raw", path).stdout)
    assert "guywire_" in text


def test_uninstall_leaves_nothing_behind(cluster, release):
    cleanup(cluster)
    cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")
    release["installed"] = False
    selector = f"app.kubernetes.io/instance={RELEASE}"
    assert not cluster.exists("validatingwebhookconfiguration", RELEASE)
    assert not cluster.exists("clusterrole,clusterrolebinding", "-l", selector)
    wait_for("the release's pods to go", lambda: not cluster.exists("pods", "-n", NAMESPACE, "-l", selector),
             timeout=120)
    # A bare workload is admitted without a word from guywire: the webhook is gone, not failing open.
    out = cluster.kubectl("create", "deployment", "after-guywire", "--image=registry.k8s.io/pause:3.9",
                          "-n", "default", "--dry-run=server")
    assert "Warning" not in out.stderr
    # CRDs stay (Helm never deletes them); the policies were deleted above.
    assert cluster.kubectl("get", "clustercomplexitypolicies", "-o", "name").stdout.strip() == ""
