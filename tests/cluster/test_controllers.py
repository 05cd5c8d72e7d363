"""Scenario 5: with kube-controller-manager running, a Deployment's ReplicaSet and Pods appear, and guywire
judges the Deployment (through the owner), never the ReplicaSet or its Pods as workloads of their own."""
from __future__ import annotations

import json

from tests.cluster.controlplane import wait_until
from tests.examples import example

TIMEOUT = 60


def owned_by(cluster, resource: str, ns: str, kind: str, name: str) -> list[dict]:
    items = json.loads(cluster.kubectl("get", resource, "-n", ns, "-o", "json").stdout)["items"]
    return [o for o in items if any(r.get("kind") == kind and r.get("name") == name and r.get("controller")
                                    for r in o["metadata"].get("ownerReferences", []))]


def test_the_deployment_is_judged_once_never_its_replicaset_or_pods(operator):
    cluster = operator.cluster
    dep = example("Deployment", "reranker")
    dep["metadata"]["name"] = "reranker-ctrl"
    dep["spec"]["replicas"] = 2
    cluster.apply(dep)
    rs = wait_until(lambda: owned_by(cluster, "replicasets", "ml", "Deployment", "reranker-ctrl"), TIMEOUT,
                    "the deployment controller to create a ReplicaSet")
    assert len(rs) == 1
    rs_name = rs[0]["metadata"]["name"]
    pods = wait_until(lambda: len(p := owned_by(cluster, "pods", "ml", "ReplicaSet", rs_name)) == 2 and p, TIMEOUT,
                      "the replicaset controller to create two Pods")
    ann = wait_until(lambda: (cluster.get("deployment", "reranker-ctrl", "ml")["metadata"].get("annotations") or {})
                     .get("guywire.dev/violations"), TIMEOUT, "the Deployment annotated")
    assert ann
    # the Deployment's own rows made it to the PolicyReport: a full pass over ml ran after its Pods existed
    wait_until(lambda: any(r["resources"][0]["name"] == "reranker-ctrl" for r in
                           (cluster.get("policyreports.wgpolicyk8s.io", "guywire-ml", "ml") or {}).get("results", [])),
               TIMEOUT, "reranker-ctrl in the PolicyReport")
    # The deployment controller copies a Deployment's annotations onto its ReplicaSet (the emulator has no
    # such controller), so guywire's annotations show there too: written by kube-controller-manager, never
    # by guywire, which patches no ReplicaSet and no Pod.
    dep_ann = {k: v for k, v in cluster.get("deployment", "reranker-ctrl", "ml")["metadata"]["annotations"].items()
               if k.startswith("guywire.dev/")}
    for p in pods:
        own = {k for k in (cluster.get("pod", p["metadata"]["name"], "ml")["metadata"].get("annotations") or {})
               if k.startswith("guywire.dev/")}
        assert own == set(), (p["metadata"]["name"], own)
    writes = [(e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name")) for e in cluster.audit_events()
              if e["user"]["username"] == operator.release.operator_user and e["verb"] in ("patch", "update")
              and e["objectRef"].get("resource") in ("replicasets", "pods")]
    assert writes == []
    wait_until(lambda: {k: v for k, v in (cluster.get("replicaset", rs_name, "ml")["metadata"].get("annotations")
                                          or {}).items() if k.startswith("guywire.dev/")} == dep_ann, TIMEOUT,
               "the deployment controller to copy the Deployment's annotations to its ReplicaSet")
    names = {rs_name, *(p["metadata"]["name"] for p in pods)}
    report = cluster.get("policyreports.wgpolicyk8s.io", "guywire-ml", "ml")
    judged = {r["resources"][0]["name"] for r in report["results"]}
    assert not judged & names, judged & names

    # judged once: the report's rows for the Deployment are the rules of its violations annotation, none twice
    def rules() -> list[str] | None:
        report = cluster.get("policyreports.wgpolicyk8s.io", "guywire-ml", "ml")
        rows = sorted(r["rule"] for r in report["results"] if r["resources"][0]["name"] == "reranker-ctrl")
        held = cluster.get("deployment", "reranker-ctrl", "ml")["metadata"]["annotations"]["guywire.dev/violations"]
        return rows if set(rows) == set(held.split(",")) else None

    rows = wait_until(rules, TIMEOUT, "reranker-ctrl's PolicyReport rows to name the rules of its annotation")
    assert len(rows) == len(set(rows)), f"a rule reported twice for reranker-ctrl: {rows}"
    items = json.loads(cluster.kubectl("get", "events", "-n", "ml", "-o", "json").stdout)["items"]
    mine = [e for e in items if (e.get("source") or {}).get("component") == "guywire"
            or e.get("reportingComponent") == "guywire"]
    assert {e["involvedObject"]["kind"] for e in mine} <= {"Deployment", "StatefulSet", "Job"}, \
        {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in mine}
    status = cluster.get("ccxp", "ai-baseline")["status"]
    refs = {f.get("workload", "") for f in status.get("findings", [])}
    assert not any(n in ref for ref in refs for n in names), refs
