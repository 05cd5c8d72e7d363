"""Admission decisions on AdmissionReview requests, judged against the bundled example cluster."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from guywire.engine.admission import MAX_WARNING_CHARS, MAX_WARNINGS, Admission, BadReview, parse_review
from guywire.cli import build
from guywire.engine.evaluator import Engine
from tests.examples import example

ROOT = Path(__file__).resolve().parents[2]


def example_engine() -> Engine:
    inventory, policies, diags, _, _ = build([str(ROOT / "examples")], [])
    assert not [d for d in diags if d.error]
    engine = Engine(policies, inventory)
    engine.evaluate_all()
    return engine


def example_object(kind: str, name: str) -> dict:
    return example(kind, name)


def request(obj: dict, operation: str = "CREATE", old: dict | None = None, dry_run: bool = False,
            user: str = "alice") -> dict:
    group = {"Deployment": "apps", "StatefulSet": "apps", "Job": "batch"}.get(obj["kind"], "")
    return {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "operation": operation,
            "kind": {"group": group, "version": "v1", "kind": obj["kind"]},
            "namespace": obj["metadata"].get("namespace"), "name": obj["metadata"]["name"],
            "object": obj, "oldObject": old, "dryRun": dry_run, "userInfo": {"username": user}}


@pytest.fixture()
def engine() -> Engine:
    return example_engine()


def test_enforce_policy_denies_a_violating_gpu_deployment_with_every_rule(engine):
    obj = example_object("Deployment", "llm-server")
    d = Admission(engine).decide(request(obj, "UPDATE", old=obj))
    # oldObject equal to object (ignoring guywire's annotations) is not judged again
    assert d.allowed and d.outcome == "skipped"
    changed = copy.deepcopy(obj)
    changed["spec"]["replicas"] = 3
    d = Admission(engine).decide(request(changed, "UPDATE", old=obj))
    assert not d.allowed and d.outcome == "denied"
    first, *rest = d.message.splitlines()
    assert first.startswith("guywire: ComplexityPolicy ml/gpu-serving (Enforce) denies Deployment ml/llm-server")
    assert rest[0].startswith("[GW-OBS-005 incomplete-gpu-resources]")  # worst first
    assert any("[GW-OBS-007 mutable-image]" in line for line in rest)
    review = d.review()
    assert review["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert review["response"]["status"]["code"] == 403


def test_warn_policy_allows_with_at_most_ten_warnings(engine):
    obj = example_object("Deployment", "retriever")
    obj["metadata"]["name"] = "retriever-canary"
    d = Admission(engine).decide(request(obj))
    assert d.allowed and d.outcome == "warned"
    assert any(w.startswith("[GW-RTY-005 retry-without-backoff]") for w in d.warnings)
    assert len(d.warnings) <= MAX_WARNINGS + 1
    assert all(len(w) <= MAX_WARNING_CHARS for w in d.warnings)


def test_a_new_dependency_that_closes_a_cycle_is_judged_on_the_graph_after_the_request(engine):
    before = {k: list(v) for k, v in engine.results.items()}
    obj = example_object("Deployment", "embedder")
    obj["metadata"].setdefault("annotations", {})["guywire.dev/depends-on"] = "rag-orchestrator"
    d = Admission(engine).decide(request(obj, "UPDATE", old=example_object("Deployment", "embedder")))
    assert d.allowed  # ai-baseline only warns
    assert any("[GW-DEP-004 dependency-cycle]" in w for w in d.warnings)
    # the index is as it was: the request was only imagined
    assert {k: list(v) for k, v in engine.results.items()} == before
    assert "rag-orchestrator" not in engine.inventory.workloads[("ml", "Deployment", "embedder")].annotations.get(
        "guywire.dev/depends-on", "")


def test_dry_run_is_answered_the_same_and_flagged(engine):
    obj = example_object("Deployment", "llm-server")
    obj["spec"]["replicas"] = 4
    d = Admission(engine).decide(request(obj, "UPDATE", old=example_object("Deployment", "llm-server"),
                                         dry_run=True))
    assert not d.allowed and d.dry_run


@pytest.mark.parametrize("namespace", ["kube-system", "guywire"])
def test_system_and_own_namespaces_are_never_evaluated(engine, namespace):
    obj = example_object("Deployment", "llm-server")
    obj["metadata"]["namespace"] = namespace
    d = Admission(engine, own_namespace="guywire").decide(request(obj))
    assert d.allowed and d.outcome == "skipped" and not d.warnings


def test_own_service_account_is_never_judged(engine):
    obj = example_object("Deployment", "llm-server")
    own = "system:serviceaccount:guywire:guywire"
    d = Admission(engine, own_users=frozenset({own})).decide(request(obj, user=own))
    assert d.allowed and d.outcome == "skipped"


def test_exempted_rules_are_not_reported(engine):
    obj = example_object("Deployment", "llm-server")
    obj["metadata"]["name"] = "llm-exempt"
    obj["metadata"]["labels"]["app.kubernetes.io/version"] = "0.6.3"
    obj["metadata"]["annotations"] = {"guywire.dev/exempt": "GW-OBS-*, GW-GPU-*",
                                      "guywire.dev/exempt-reason": "vendor image, PLAT-1234"}
    d = Admission(engine).decide(request(obj))
    assert d.allowed, d.message


def test_an_unreadable_object_is_allowed_with_a_warning(engine):
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "ml"},
           "spec": {"template": "not an object"}}
    d = Admission(engine).decide(request(obj))
    assert d.allowed and d.outcome == "error"
    assert "spec.template" in d.warnings[0]


def test_a_bad_policy_is_denied_naming_the_field(engine):
    pol = {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "p"},
           "spec": {"rules": {"retries": {"maxAtempts": 3}}}}
    r = request(pol)
    r["kind"] = {"group": "guywire.dev", "version": "v1alpha1", "kind": "ClusterComplexityPolicy"}
    d = Admission(engine).decide(r)
    assert not d.allowed
    assert "spec.rules.retries.maxAtempts: unknown field" in d.message


def test_controller_owned_objects_and_deletes_are_skipped(engine):
    obj = example_object("Deployment", "llm-server")
    obj["metadata"]["ownerReferences"] = [{"kind": "Thing", "name": "t", "controller": True}]
    assert Admission(engine).decide(request(obj)).outcome == "skipped"
    assert Admission(engine).decide(request(example_object("Deployment", "llm-server"), "DELETE")).outcome == "skipped"


def test_before_the_index_is_ready_requests_are_allowed_and_say_so(engine):
    d = Admission(engine, ready=False).decide(request(example_object("Deployment", "llm-server")))
    assert d.allowed and "not evaluated" in d.warnings[0]


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "not JSON"),
    (b"[]", "not an AdmissionReview object"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}}).encode(),
     "only admission.k8s.io/v1"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).encode(), "request is missing"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}).encode(),
     "request.uid"),
])
def test_malformed_reviews_are_refused_with_a_reason(body, fragment):
    with pytest.raises(BadReview, match=fragment):
        parse_review(body)


def _review(**changes) -> bytes:
    req = request(example_object("Deployment", "llm-server"))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = req
        for p in parents:
            node = node[p]
        node[last] = value
    return json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req}).encode()


@pytest.mark.parametrize("body, message", [
    (_review(uid=7), "request.uid must be a string."),
    (_review(uid=""), "request.uid is missing."),
    (_review(object__metadata=["not", "a", "mapping"]), "request.object.metadata must be an object."),
    (_review(object__metadata="llm"), "request.object.metadata must be an object."),
    (_review(oldObject={"metadata": 3}), "request.oldObject.metadata must be an object."),
], ids=["uid-int", "uid-empty", "metadata-list", "metadata-str", "old-metadata-int"])
def test_a_wrongly_typed_field_is_named(body, message):
    with pytest.raises(BadReview) as err:
        parse_review(body)
    assert str(err.value) == message
