"""Scenario 4: the real API server calls guywire's webhook over TLS (the chart's configuration with the
URL and caBundle patched in), and kubectl shows what users see."""
from __future__ import annotations

import copy
import os
import signal

import pytest
import yaml

from tests.cluster.controlplane import wait_until
from tests.examples import example

TIMEOUT = 60
RECEIVED = "guywire_admission_duration_seconds_count"


@pytest.fixture(scope="module")
def webhook(operator):
    wait_until(lambda: operator.evaluated_all() >= 1, TIMEOUT, "the operator to index the cluster")
    return operator


def renamed(kind: str, name: str, new: str) -> dict:
    obj = example(kind, name)
    obj["metadata"]["name"] = new
    return obj


def test_warn_prints_warning_lines_and_allows(webhook):
    cluster = webhook.cluster
    out = cluster.apply(renamed("Deployment", "retriever", "retriever-b"))
    assert "deployment.apps/retriever-b created" in out.stdout
    warnings = [ln for ln in out.stderr.splitlines() if ln.startswith("Warning: ")]
    assert any(ln.startswith("Warning: [GW-RTY-005") for ln in warnings), out.stderr
    assert cluster.get("deployment", "retriever-b", "ml") is not None
    # the API server says how long it waits (the chart's timeoutSeconds), which bounds a large review's work
    assert "(?timeout=3s): a large review gets 2.5 s." in webhook.log(), webhook.log()[-3000:]


def test_enforce_refuses_with_guywires_message(webhook):
    cluster = webhook.cluster
    out = cluster.apply(renamed("Deployment", "llm-server", "llm-server-b"), check=False)
    assert out.returncode != 0
    assert 'admission webhook "workloads.guywire.dev" denied the request: ' \
           "guywire: ComplexityPolicy ml/gpu-serving (Enforce) denies" in out.stderr, out.stderr
    assert "[GW-OBS-007" in out.stderr and "[GW-OBS-005" in out.stderr, out.stderr
    assert cluster.get("deployment", "llm-server-b", "ml") is None


def test_server_side_dry_run_changes_nothing(webhook):
    cluster = webhook.cluster
    received = webhook.metric(RECEIVED)
    out = cluster.apply(renamed("Deployment", "retriever", "retriever-dry"), "--dry-run=server")
    assert "retriever-dry created (server dry run)" in out.stdout, out.stdout
    assert "Warning: [GW-RTY-005" in out.stderr, "the webhook was asked and answered"
    assert webhook.metric(RECEIVED) > received
    denied = cluster.apply(renamed("Deployment", "llm-server", "llm-server-dry"), "--dry-run=server", check=False)
    assert denied.returncode != 0 and "denies" in denied.stderr
    assert cluster.get("deployment", "retriever-dry", "ml") is None
    assert cluster.get("deployment", "llm-server-dry", "ml") is None
    events = cluster.kubectl("get", "events", "-n", "ml", "--field-selector",
                             "involvedObject.name=retriever-dry", "-o", "name").stdout
    assert events == ""


def test_a_request_that_closes_a_cycle_is_refused(webhook):
    cluster = webhook.cluster
    cluster.apply({"apiVersion": "guywire.dev/v1alpha1", "kind": "ComplexityPolicy",
                   "metadata": {"name": "no-cycles", "namespace": "data"},
                   "spec": {"enforcement": "Enforce", "rules": {"observability": {"metrics": False}}}})
    wait_until(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                           ((cluster.get("cxp", "no-cycles", "data") or {}).get("status") or {}).get("conditions", [])),
               TIMEOUT, "policy data/no-cycles Ready")
    old = cluster.get("statefulset", "vector-db", "data")["metadata"].get("annotations", {})
    out = cluster.kubectl("annotate", "--overwrite", "statefulset/vector-db", "-n", "data",
                          "guywire.dev/depends-on=gateway.ml", check=False)
    assert out.returncode != 0
    assert "[GW-DEP-004 dependency-cycle]" in out.stderr, out.stderr
    now = cluster.get("statefulset", "vector-db", "data")["metadata"].get("annotations", {})
    assert now.get("guywire.dev/depends-on") == old.get("guywire.dev/depends-on")
    cluster.kubectl("delete", "cxp", "no-cycles", "-n", "data")


def test_kube_system_is_never_sent(webhook):
    cluster = webhook.cluster
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "probe"},
               "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:latest"}]}}}}}}
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe", "labels": {"team": "ml"}}})
    received = webhook.metric(RECEIVED)
    system = copy.deepcopy(cronjob)
    system["metadata"]["namespace"] = "kube-system"
    cluster.apply(system)
    probe = copy.deepcopy(cronjob)
    probe["metadata"]["namespace"] = "probe"
    out = cluster.apply(probe)
    assert "Warning: [GW-" in out.stderr, "the same object elsewhere is sent and judged"
    assert webhook.metric(RECEIVED) == received + 1, "only the probe namespace's request reached guywire"


def test_with_the_operator_hung_apply_fails_open_after_the_timeout(webhook):
    """The port still accepts connections but nothing answers: the API server gives up after the chart's
    timeoutSeconds and, failurePolicy Ignore, admits the object."""
    cluster = webhook.cluster
    os.kill(webhook.process.pid, signal.SIGSTOP)
    try:
        out = cluster.kubectl("apply", "-f", "-", "--request-timeout=30s", check=False,
                              input=yaml.safe_dump(renamed("Deployment", "llm-server", "llm-server-hung")))
    finally:
        os.kill(webhook.process.pid, signal.SIGCONT)
    assert out.returncode == 0, out.stderr
    assert "llm-server-hung created" in out.stdout
    log = (cluster.dir / "kube-apiserver.log").read_text(errors="replace")
    assert "Failed calling webhook, failing open workloads.guywire.dev" in log


def test_with_the_operator_stopped_apply_fails_open(webhook):
    cluster = webhook.cluster
    webhook.stop()
    try:
        out = cluster.kubectl("apply", "-f", "-", "--request-timeout=30s", check=False,
                              input=yaml.safe_dump(renamed("Deployment", "llm-server", "llm-server-open")))
        assert out.returncode == 0, out.stderr
        assert "llm-server-open created" in out.stdout
    finally:
        webhook.start()
    wait_until(lambda: webhook.evaluated_all() >= 1, TIMEOUT, "the restarted operator to index the cluster")
    out = cluster.apply(renamed("Deployment", "llm-server", "llm-server-c"), check=False)
    assert out.returncode != 0 and "denies" in out.stderr, "the webhook is back"
