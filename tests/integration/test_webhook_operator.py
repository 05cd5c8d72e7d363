"""AdmissionReviews over HTTPS to the running operator (`guywire run --webhook-port`), backed by the
test API server: the webhook reads the operator's live index."""
from __future__ import annotations

import copy
import json
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml

from guywire.cli import parser
from guywire.operator.main import run_in_thread
from tests.certs import write_self_signed
from tests.integration.barrier import BARRIER_PATH, caught_up

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from tests.examples import example, example_objects


@pytest.fixture(scope="module")
def webhook(kube_api, tmp_path_factory):
    for obj in example_objects():
        if not (obj["kind"] == "Namespace" and kube_api.get("namespaces", obj["metadata"]["name"])):
            kube_api.create(obj)
    cert, key = write_self_signed(tmp_path_factory.mktemp("tls"))
    port = free_port()
    args = parser().parse_args([
        "run", "--kubeconfig", str(kube_api.kubeconfig_path), "--standalone", "--metrics-port", "0",
        "--health-port", "0", "--status-interval", "0.2s", "--webhook-host", "127.0.0.1",
        "--webhook-port", str(port), "--webhook-cert", str(cert), "--webhook-key", str(key)])
    thread, stop, ready = run_in_thread(args)
    assert ready.wait(15)
    url = f"https://127.0.0.1:{port}/validate/workloads"
    kube_api.wait_for(lambda: (kube_api.get("deployments.apps", "gateway", "ml") or {}).get("metadata", {})
                      .get("annotations", {}).get("guywire.dev/violations"), timeout=20)
    yield kube_api, url
    stop.set()
    thread.join(20)


def post(url: str, req: dict) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}).encode()
    r = urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}),
                               context=ctx, timeout=5)
    return json.loads(r.read())["response"]


def request(obj: dict, operation="CREATE", old=None, dry_run=False, uid="u-1") -> dict:
    return {"uid": uid, "operation": operation, "kind": {"group": "apps", "version": "v1", "kind": obj["kind"]},
            "namespace": obj["metadata"]["namespace"], "name": obj["metadata"]["name"], "object": obj,
            "oldObject": old, "dryRun": dry_run, "userInfo": {"username": "alice"}}


def test_enforce_denies_and_the_uid_matches(webhook):
    api, url = webhook
    obj = example("Deployment", "llm-server")
    obj["metadata"]["name"] = "llm-server-b"
    resp = post(url, request(obj, uid="abc-123"))
    assert resp["uid"] == "abc-123" and resp["allowed"] is False
    assert resp["status"]["message"].startswith("guywire: ComplexityPolicy ml/gpu-serving (Enforce) denies")


def test_warn_allows_with_kubectl_warnings(webhook):
    api, url = webhook
    obj = example("Deployment", "retriever")
    obj["metadata"]["name"] = "retriever-b"
    resp = post(url, request(obj))
    assert resp["allowed"] is True
    assert any(w.startswith("[GW-RTY-005") for w in resp["warnings"])


def test_a_request_closing_a_cycle_is_denied_and_the_index_is_unchanged(webhook):
    api, url = webhook
    api.create({"apiVersion": "guywire.dev/v1alpha1", "kind": "ComplexityPolicy",
                "metadata": {"name": "no-cycles", "namespace": "data"},
                "spec": {"enforcement": "Enforce", "rules": {"observability": {"metrics": False}}}})
    api.wait_for(lambda: (api.get("complexitypolicies.guywire.dev", "no-cycles", "data") or {}).get(
        "status", {}).get("conditions"), timeout=20)  # the operator has read the policy
    old = example("StatefulSet", "vector-db")
    new = copy.deepcopy(old)
    new["metadata"].setdefault("annotations", {})["guywire.dev/depends-on"] = "gateway.ml"
    req = request(new, "UPDATE", old=old)
    req["kind"] = {"group": "apps", "version": "v1", "kind": "StatefulSet"}
    resp = post(url, req)
    assert resp["allowed"] is False
    assert "[GW-DEP-004 dependency-cycle]" in resp["status"]["message"]
    # denied: the cluster, and so the index, never had that edge; the gateway's annotation is untouched
    caught_up(api)
    ann = api.get("deployments.apps", "gateway", "ml")["metadata"]["annotations"]
    assert "GW-DEP-004" not in ann.get("guywire.dev/violations", "")


def test_dry_run_has_no_side_effects(webhook):
    api, url = webhook
    caught_up(api)  # nothing earlier is still to be written
    api.clear_requests()
    obj = example("Deployment", "llm-server")
    obj["metadata"]["name"] = "llm-server-dry"
    resp = post(url, request(obj, dry_run=True))
    assert resp["allowed"] is False
    caught_up(api)
    writes = [r for r in api.requests if r.method in ("POST", "PATCH", "PUT", "DELETE") and BARRIER_PATH not in r.path]
    assert writes == [], [str(r) for r in writes]
