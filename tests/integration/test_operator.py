"""The real operator (`guywire run`, kopf included) against a real HTTP Kubernetes API on loopback.

One API server and one operator per module: scenarios build on each other the way
a user's cluster does (create, fix, break a policy, close a cycle, restart, faults).
"""
from __future__ import annotations

import copy
from pathlib import Path

import kmock
import pytest
import yaml

from guywire.views.annotations import COMPLEXITY_SCORE, VIOLATIONS
from guywire.cli import parser
from guywire.operator.main import run_in_thread

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


from tests.examples import example_objects
from tests.integration.barrier import BARRIER_PATH, caught_up, is_sentinel


def run_args(kube_api, *extra: str):
    return parser().parse_args(["run", "--kubeconfig", str(kube_api.kubeconfig_path), "--standalone",
                                "--metrics-port", "0", "--health-port", "0", "--status-interval", "0.2s",
                                "--events-per-second", "200", "--own-namespace", "guywire", *extra])


class Operator:
    def __init__(self, kube_api, *extra: str):
        self.args = run_args(kube_api, *extra)
        self.thread = self.stop_flag = None

    def start(self):
        self.thread, self.stop_flag, ready = run_in_thread(self.args)
        assert ready.wait(15), "the operator did not start"
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the operator did not stop"


@pytest.fixture(scope="module")
def cluster(kube_api):
    kube_api.add_resource("wgpolicyk8s.io/v1alpha2/policyreports", kmock.ResourceInfo(
        kind="PolicyReport", singular="policyreport", namespaced=True, verbs=VERBS))
    kube_api.add_resource("wgpolicyk8s.io/v1alpha2/clusterpolicyreports", kmock.ResourceInfo(
        kind="ClusterPolicyReport", singular="clusterpolicyreport", namespaced=False, verbs=VERBS))
    kube_api.add_resource("networking.istio.io/v1/virtualservices", kmock.ResourceInfo(
        kind="VirtualService", singular="virtualservice", namespaced=True, verbs=VERBS))
    for obj in example_objects():
        if obj["kind"] == "Namespace" and kube_api.get("namespaces", obj["metadata"]["name"]):
            continue
        kube_api.create(obj)
    op = Operator(kube_api).start()
    yield kube_api, op
    if op.thread.is_alive():
        op.stop()


def annotations(api, plural, ns, name) -> dict:
    obj = api.get(plural, name, ns) or {}
    return obj.get("metadata", {}).get("annotations", {})


def warnings_for(api, kind, ns, name) -> list[dict]:
    return [e for e in api.events_for(kind, ns, name) if e.get("type") == "Warning"]


def policy_status(api, name, ns=None) -> dict:
    plural = "complexitypolicies.guywire.dev" if ns else "clustercomplexitypolicies.guywire.dev"
    return (api.get(plural, name, ns) or {}).get("status", {})


def test_the_operator_counts_each_kind_before_kopf_lists_it(cluster):
    """The listing gate (operator/gate.py): a limit=1 list per kind, before kopf's paged listing of it,
    and no workload annotated before the whole cluster was listed."""
    api, _ = cluster
    assert api.wait_for(lambda: annotations(api, "deployments.apps", "ml", "gateway").get(COMPLEXITY_SCORE),
                        timeout=TIMEOUT)
    reqs = api.requests
    deploy = "/apis/apps/v1/deployments"
    counted = next(i for i, r in enumerate(reqs) if r.method == "GET" and r.path == deploy
                   and r.query.get("limit") == "1")
    listed = next(i for i, r in enumerate(reqs) if r.method == "GET" and r.path == deploy
                  and r.query.get("limit") != "1" and r.query.get("watch") not in ("true", "1"))
    assert counted < listed
    last_list = max(i for i, r in enumerate(reqs) if r.method == "GET" and r.query.get("watch") not in ("true", "1")
                    and r.query.get("limit") not in (None, "1"))
    first_patch = min(i for i, r in enumerate(reqs) if r.method == "PATCH" and "/deployments/" in r.path)
    assert last_list < first_patch


def test_workloads_are_annotated_evented_and_counted_in_status(cluster):
    api, _ = cluster
    ann = api.wait_for(lambda: (a := annotations(api, "deployments.apps", "ml", "gateway")).get(VIOLATIONS) and a,
                       timeout=TIMEOUT)
    assert ann[VIOLATIONS].split(",")[0] == "GW-RTY-002"
    assert int(ann[COMPLEXITY_SCORE]) > 0 and ann["guywire.dev/evaluated-at"].endswith("Z")
    events = api.wait_for(lambda: warnings_for(api, "Deployment", "ml", "gateway"), timeout=TIMEOUT)
    assert any(e["reason"] == "GW-RTY-002" and "27 calls" in e["message"] for e in events)
    status = api.wait_for(lambda: (s := policy_status(api, "ai-baseline")).get("violating") and s, timeout=TIMEOUT)
    assert status["matched"] >= 8 and status["violating"] >= 5
    ready = [c for c in status["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True" and ready["reason"] == "Evaluated"
    assert status["findings"][0]["severity"] in ("Critical", "High")
    clean = annotations(api, "deployments.apps", "search", "search-api")
    assert api.wait_for(lambda: annotations(api, "deployments.apps", "search", "search-api").get(COMPLEXITY_SCORE),
                        timeout=TIMEOUT)
    assert not annotations(api, "deployments.apps", "search", "search-api").get(VIOLATIONS), clean
    # one Event per workload x rule, whatever the number of passes
    caught_up(api)
    reasons = [e["reason"] for e in warnings_for(api, "Deployment", "ml", "retriever")]
    assert len(reasons) == len(set(reasons))


def test_policy_reports_and_blast_radius_are_written(cluster):
    api, _ = cluster
    report = api.wait_for(lambda: api.get("policyreports.wgpolicyk8s.io", "guywire-ml", "ml"), timeout=TIMEOUT)
    assert report["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "guywire"
    gateway = [r for r in report["results"] if r["resources"][0]["name"] == "gateway"]
    assert any(r["rule"] == "GW-RTY-002" and r["result"] == "fail" for r in gateway)
    assert report["summary"]["fail"] == len([r for r in report["results"] if r["result"] == "fail"])
    blast = api.wait_for(lambda: annotations(api, "statefulsets.apps", "data", "vector-db").get(
        "guywire.dev/blast-radius"), timeout=TIMEOUT)
    assert blast.startswith("entryPoints=") and "workloads=" in blast


def test_a_mesh_retry_policy_feeds_the_retry_rules(cluster):
    api, _ = cluster
    api.create({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "embedder", "namespace": "ml"},
                "spec": {"hosts": ["embedder"], "http": [{"route": [{"destination": {"host": "embedder"}}],
                                                          "retries": {"attempts": 4, "perTryTimeout": "1s"}}]}})
    api.wait_for(lambda: "GW-RTY-006" in annotations(api, "deployments.apps", "ml", "retriever").get(VIOLATIONS, ""),
                 timeout=TIMEOUT)


def test_own_annotations_do_not_trigger_another_evaluation(cluster):
    api, _ = cluster
    api.wait_for(lambda: annotations(api, "deployments.apps", "ml", "embedder").get(VIOLATIONS), timeout=TIMEOUT)
    caught_up(api)  # every write the operator had pending is made
    api.clear_requests()
    caught_up(api)  # ... and the watch events of those writes are handled, and a pass has run after them
    patches = [r for r in api.requests if r.method == "PATCH" and "/deployments/" in r.path
               and BARRIER_PATH not in r.path]
    assert patches == [], [str(r) for r in patches]


def test_a_fixed_workload_clears_its_annotation_and_gets_a_normal_event(cluster):
    api, _ = cluster
    before = policy_status(api, "ai-baseline")["violating"]
    dep = api.get("deployments.apps", "embedder", "ml")
    containers = copy.deepcopy(dep["spec"]["template"]["spec"]["containers"])
    containers[0]["resources"]["limits"] = {"memory": "2Gi"}
    api.patch("deployments.apps", "embedder", {"spec": {"template": {"spec": {"containers": containers}}}}, "ml")
    api.wait_for(lambda: not annotations(api, "deployments.apps", "ml", "embedder").get(VIOLATIONS),
                 timeout=TIMEOUT)
    normal = api.wait_for(lambda: [e for e in api.events_for("Deployment", "ml", "embedder")
                                   if e.get("type") == "Normal" and e["reason"] == "GW-OBS-004"], timeout=TIMEOUT)
    assert "no longer violated" in normal[0]["message"]
    api.wait_for(lambda: policy_status(api, "ai-baseline")["violating"] == before - 1, timeout=TIMEOUT)


def test_a_bad_policy_is_not_ready_and_the_others_are_unaffected(cluster):
    api, _ = cluster
    api.create({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                "metadata": {"name": "broken"}, "spec": {"rules": {"retries": {"maxAttempts": "three"}}}})
    status = api.wait_for(lambda: policy_status(api, "broken").get("conditions"), timeout=TIMEOUT)
    assert status[0]["status"] == "False" and status[0]["reason"] == "InvalidSpec"
    assert "spec.rules.retries.maxAttempts" in status[0]["message"]
    good = policy_status(api, "ai-baseline")
    assert {c["type"]: c["status"] for c in good["conditions"]} == {"Ready": "True", "EvaluationErrors": "False"}
    assert annotations(api, "deployments.apps", "ml", "gateway").get(VIOLATIONS)
    assert policy_status(api, "gpu-serving", "ml")["conditions"][0]["status"] == "True"


def test_a_dependency_that_closes_a_cycle_annotates_both_ends(cluster):
    api, _ = cluster
    assert "GW-DEP-004" not in annotations(api, "statefulsets.apps", "data", "vector-db").get(VIOLATIONS, "")
    api.patch("statefulsets.apps", "vector-db", {"metadata": {"annotations": {
        "guywire.dev/depends-on": "rag-orchestrator.ml"}}}, "data")
    api.wait_for(lambda: "GW-DEP-004" in annotations(api, "statefulsets.apps", "data", "vector-db").get(VIOLATIONS, ""),
                 timeout=TIMEOUT)
    api.wait_for(lambda: "GW-DEP-004" in annotations(api, "deployments.apps", "ml", "rag-orchestrator").get(
        VIOLATIONS, ""), timeout=TIMEOUT)
    events = api.wait_for(lambda: [e for e in warnings_for(api, "StatefulSet", "data", "vector-db")
                                   if e["reason"] == "GW-DEP-004"], timeout=TIMEOUT)
    assert "data/vector-db -> ml/rag-orchestrator" in events[0]["message"]


def test_a_restarted_operator_converges_without_duplicate_events(cluster):
    api, op = cluster
    caught_up(api)

    def all_events():  # a sentinel's other Warnings may still be on their way when the barrier passes
        return sorted((e["involvedObject"]["name"], e["reason"], e["type"])
                      for e in api.objects("events") if e.get("source", {}).get("component") == "guywire"
                      and not is_sentinel(e["involvedObject"]["name"]))
    before = all_events()
    op.stop()
    op.start()
    caught_up(api)  # the restarted operator annotated a workload: it has listed and judged them all
    caught_up(api)  # and one created after that: every Event of its first pass is posted
    assert all_events() == before
    assert annotations(api, "deployments.apps", "ml", "gateway").get(VIOLATIONS)


def test_injected_conflicts_gone_watches_and_server_errors_converge(cluster):
    api, _ = cluster
    api.inject("PATCH", r"/deployments/reranker$", 500, times=2)
    api.inject("PATCH", r"/deployments/reranker$", 409, times=1)
    api.inject("POST", r"/events$", 503, times=2)
    api.expire_watches()
    dep = api.get("deployments.apps", "reranker", "ml")
    c = copy.deepcopy(dep["spec"]["template"]["spec"]["containers"])
    c[0]["image"] = "ghcr.io/example/reranker:latest"
    api.patch("deployments.apps", "reranker", {"spec": {"template": {"spec": {"containers": c}}}}, "ml")
    api.wait_for(lambda: "GW-OBS-007" in annotations(api, "deployments.apps", "ml", "reranker").get(VIOLATIONS, ""),
                 timeout=TIMEOUT)
    api.wait_for(lambda: [e for e in warnings_for(api, "Deployment", "ml", "reranker") if e["reason"] == "GW-OBS-007"],
                 timeout=TIMEOUT)
    assert not api.internal_errors


def test_a_deleted_workload_leaves_the_graph(cluster):
    api, _ = cluster
    def mentions_reranker() -> bool:
        return any(f["workload"] == "Deployment ml/reranker" for f in policy_status(api, "ai-baseline")["findings"])

    assert mentions_reranker()
    api.delete("deployments.apps", "reranker", "ml")
    api.wait_for(lambda: not mentions_reranker(), timeout=TIMEOUT)
