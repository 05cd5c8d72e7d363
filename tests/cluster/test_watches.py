"""Scenario 7: watches for real. The kube-apiserver is restarted and etcd compacted past the operator's resume
point while the operator is frozen, so its watches come back to 410 Gone: it re-lists, loses none of the
changes it slept through (a Deployment changed, one created, one deleted), forgets what the list no longer has,
and keeps following the new server."""
from __future__ import annotations

import json
import os
import signal

from tests.cluster.controlplane import wait_until
from tests.examples import example

TIMEOUT = 90


def violations(cluster, name: str, ns: str = "ml") -> str:
    obj = cluster.get("deployment", name, ns) or {}
    return (obj.get("metadata", {}).get("annotations") or {}).get("guywire.dev/violations", "")


def report_names(cluster, ns: str = "ml") -> set[str]:
    report = cluster.get("policyreports.wgpolicyk8s.io", f"guywire-{ns}", ns) or {}
    return {r["resources"][0]["name"] for r in report.get("results") or []}


def test_compaction_and_an_apiserver_restart_lose_nothing(operator):
    cluster = operator.cluster
    doomed = example("Deployment", "retriever")
    doomed["metadata"]["name"] = "retriever-deleted-while-away"
    cluster.apply(doomed)
    wait_until(lambda: operator.evaluated_all() >= 1, TIMEOUT, "the operator to judge the cluster")
    wait_until(lambda: violations(cluster, "embedder"), TIMEOUT, "ml/embedder annotated")
    assert "GW-OBS-007" not in violations(cluster, "embedder")
    wait_until(lambda: "retriever-deleted-while-away" in report_names(cluster), TIMEOUT,
               "ml/retriever-deleted-while-away's findings in the PolicyReport")
    resume = json.loads(cluster.kubectl("get", "--raw", "/apis/apps/v1/deployments?limit=1").stdout)
    resume_rv = resume["metadata"]["resourceVersion"]

    pid = operator.process.pid
    os.kill(pid, signal.SIGSTOP)  # frozen: it misses every event below
    try:
        # The server is restarted first: an event the old one sent would wait in the frozen operator's socket
        # and reach it on resuming, with no re-listing. The new server never had the operator's watches.
        cluster.stop_apiserver()
        cluster.start_apiserver()
        cluster.kubectl("set", "image", "deployment/embedder", "-n", "ml", "*=ghcr.io/example/embedder:latest")
        fresh = example("Deployment", "retriever")
        fresh["metadata"]["name"] = "retriever-while-away"
        cluster.apply(fresh)
        cluster.kubectl("delete", "deployment", "retriever-deleted-while-away", "-n", "ml")
        status = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
        revision = status[0]["Status"]["header"]["revision"]
        cluster.etcdctl("compaction", str(revision))
        # what the operator meets when it resumes from where it was: the server no longer has that history
        gone = cluster.kubectl("get", "--raw", f"/apis/apps/v1/deployments?watch=1&resourceVersion={resume_rv}"
                                              "&timeoutSeconds=1", check=False)
        assert '"code":410' in gone.stdout or "410" in gone.stderr, (gone.stdout, gone.stderr)
    finally:
        os.kill(pid, signal.SIGCONT)

    wait_until(lambda: "GW-OBS-007" in violations(cluster, "embedder"), TIMEOUT,
               "the change made while the operator was frozen (GW-OBS-007 on ml/embedder)")
    wait_until(lambda: violations(cluster, "retriever-while-away"), TIMEOUT,
               "the Deployment created while the operator was frozen annotated")
    # the deletion came to it by no watch event: the re-listing no longer had the Deployment
    wait_until(lambda: "retriever-deleted-while-away" not in report_names(cluster), TIMEOUT,
               "the Deployment deleted while the operator was frozen gone from the PolicyReport")
    assert "Deployment ml/retriever-deleted-while-away is gone from the re-listing; forgetting it." in operator.log()
    # and it follows the new server's watch from here on
    cluster.kubectl("set", "image", "deployment/retriever-while-away", "-n", "ml", "*=ghcr.io/example/retriever:latest")
    wait_until(lambda: "GW-OBS-007" in violations(cluster, "retriever-while-away"), TIMEOUT,
               "a change after the restart (GW-OBS-007 on ml/retriever-while-away)")
    assert operator.process.alive()
    assert cluster.forbidden(operator.release.operator_user) == []
