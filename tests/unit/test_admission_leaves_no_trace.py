"""Admission judges a request on a preview of the cluster and leaves the operator's index exactly as it was.

For every workload kind and every AI kind guywire reads (enumerated from workload.WORKLOAD_KINDS and
aikinds.AI_KINDS, so a new kind is covered or this test fails asking for a sample), the operator's
state is indexed, then sent: a CREATE, an UPDATE that grows the object (a KServe transformer, a
KubeRay head Service name, a JobSet subdomain: new controller-made Services), a CREATE an Enforce
policy denies, an UPDATE an Enforce policy denies because it closes a dependency cycle, and a
DELETE. After each, the whole state (inventory, Services, graph indexes, edges, analysis, stored
results, fingerprints, everything OperatorState holds) is compared with the state before: identical.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from guywire.views.aikinds import AI_KINDS, AIKind, ai_kind_of
from guywire.views.inventory import view_of
from guywire.operator.state import OperatorState
from guywire.views.workload import WORKLOAD_KINDS
from tests.snapshot import deep_state, differences

from . import manifests

STRICT = "guywire.test/strict"  # the label the Enforce policy selects
POLICIES = [
    {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "warn-all"},
     "spec": {"enforcement": "Warn"}},
    {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "enforce-strict"},
     "spec": {"enforcement": "Enforce", "match": {"selector": {"matchLabels": {STRICT: "true"}}}}},
]
PINNED, MUTABLE = "registry.example/app:1.4.2", "registry.example/app:latest"


# ----- manifests of every kind ---------------------------------------------------------------------
def container(image: str, name: str = "main") -> dict:
    return manifests.container(name, image, env={"STORE_URL": "http://store:8080"},
                               ports=[{"name": "http", "containerPort": 8080}], probes=False)


def template(app: str, image: str) -> dict:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [container(image)]}}


# Per shape of AI kind (its templates function): a spec with pods, and the same spec grown so that its
# controller creates more Services where the kind allows it. A new kind with a new shape needs a line here.
Spec = Callable[[AIKind, str, str], dict]
Grow = Callable[[str, dict, str], dict]
SHAPES: dict[str, tuple[Spec, Grow]] = {
    "_isvc_templates": (
        lambda ai, name, image: {"predictor": {"containers": [container(image, "kserve-container")]}},
        lambda name, spec, image: {**spec, "transformer": {"containers": [container(image, "transformer")]}}),
    "_runtime_templates": (
        lambda ai, name, image: {"containers": [container(image)], "supportedModelFormats": [{"name": "vllm"}]},
        lambda name, spec, image: {**spec, "containers": [*spec["containers"], container(image, "sidecar")]}),
    "_raycluster_templates": (
        lambda ai, name, image: {"headGroupSpec": {"template": template(name, image)},
                                 "workerGroupSpecs": [{"groupName": "gpu", "template": template(name, image)}]},
        lambda name, spec, image: {**spec, "headGroupSpec": {**spec["headGroupSpec"],
                                                             "headService": {"metadata": {"name": f"{name}-head"}}}}),
    "_rayservice_templates": (
        lambda ai, name, image: {"rayClusterConfig": {"headGroupSpec": {"template": template(name, image)}}},
        lambda name, spec, image: {"rayClusterConfig": {
            **spec["rayClusterConfig"], "workerGroupSpecs": [{"groupName": "cpu", "template": template(name, image)}]}}),
    "_rayjob_templates": (
        lambda ai, name, image: {"rayClusterSpec": {"headGroupSpec": {"template": template(name, image)}},
                                 "submitterPodTemplate": template(name, image)},
        lambda name, spec, image: {**spec, "rayClusterSpec": {
            **spec["rayClusterSpec"], "workerGroupSpecs": [{"groupName": "w", "template": template(name, image)}]}}),
    "_replica_specs": (
        lambda ai, name, image: {f"{ai.kind[:-3].lower()}ReplicaSpecs": {"Master": {"template": template(name, image)}}},
        lambda name, spec, image: {k: {**v, "Worker": {"template": template(name, image)}} for k, v in spec.items()}),
    "_trainjob_templates": (
        lambda ai, name, image: {"trainer": {"image": image, "env": [{"name": "STORE_URL", "value": "http://store:8080"}]}},
        lambda name, spec, image: {"trainer": {**spec["trainer"], "resourcesPerNode": {"limits": {"nvidia.com/gpu": 1}}}}),
    "_lws_templates": (
        lambda ai, name, image: {"leaderWorkerTemplate": {"workerTemplate": template(name, image)}},
        lambda name, spec, image: {"leaderWorkerTemplate": {**spec["leaderWorkerTemplate"],
                                                            "leaderTemplate": template(name, image)}}),
    "_jobset_templates": (
        lambda ai, name, image: {"replicatedJobs": [{"name": "workers",
                                                      "template": {"spec": {"template": template(name, image)}}}]},
        lambda name, spec, image: {**spec, "network": {"subdomain": f"{name}-net"}}),
    "_knative_templates": (
        lambda ai, name, image: {"template": {"spec": {"containers": [container(image)]}}},
        lambda name, spec, image: {"template": {**spec["template"], "metadata": {"labels": {"tier": "canary"}}}}),
}

KINDS = sorted(WORKLOAD_KINDS) + sorted(AI_KINDS)


def manifest_kind(ai: AIKind) -> str:
    """The kind written in a manifest: KnativeService is a ``Service`` of serving.knative.dev."""
    return next(k for k in (ai.kind, "Service") if ai_kind_of({"kind": k, "apiVersion": f"{ai.group}/v1"}) is ai)


def namespace_of(kind: str) -> str:
    ai = AI_KINDS.get(kind)
    return "default" if ai is not None and not ai.namespaced else "ml"


def obj(kind: str, name: str, *, image: str = PINNED, depends_on: str = "store", strict: bool = False,
        grown: bool = False) -> dict:
    """An object of ``kind``; ``grown`` adds a role or a container (and the Services that come with it)."""
    labels = {STRICT: "true"} if strict else {}
    retry = "attempts=2, perTryTimeout=1s, backoff=exponential"
    ai = AI_KINDS.get(kind)
    if ai is None:
        containers = [container(image)] + ([container(image, "sidecar")] if grown else [])
        return manifests.deployment(name, kind=kind, depends_on=depends_on, retry=retry, labels=labels,
                                    containers=containers)
    make, grow = SHAPES[ai.templates.__name__]
    spec = make(ai, name, image)
    if grown:
        spec = grow(name, spec, image)
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": name, **labels},
                            "annotations": {"guywire.dev/depends-on": depends_on, "guywire.dev/retry": retry}}
    if ai.namespaced:
        meta["namespace"] = "ml"
    return {"apiVersion": f"{ai.group}/{ai.version}", "kind": manifest_kind(ai), "metadata": meta, "spec": spec}


def slug(kind: str) -> str:
    return kind.lower()


def cluster() -> list[dict]:
    """One object of every kind, each called by a Deployment ``call-<kind>``, and a ``store`` they all call."""
    out: list[dict] = [copy.deepcopy(p) for p in POLICIES]
    for ns in ("ml", "default"):
        out.append(manifests.deployment("store", ns, depends_on="external:db.example.com"))
        out.append(manifests.service("store", ns, port=8080))
    for kind in KINDS:
        out.append(obj(kind, slug(kind)))
        out.append(manifests.deployment(f"call-{slug(kind)}", namespace_of(kind), depends_on=slug(kind)))
    return out


def request(body: dict, operation: str, old: dict | None = None) -> dict:
    api = body["apiVersion"]
    group, version = api.split("/") if "/" in api else ("", api)
    meta = body["metadata"]
    return {"uid": f"{operation.lower()}-{meta['name']}", "operation": operation,
            "kind": {"group": group, "version": version, "kind": body["kind"]},
            "namespace": meta.get("namespace"), "name": meta["name"],
            "object": None if operation == "DELETE" else body, "oldObject": old,
            "dryRun": False, "userInfo": {"username": "alice"}}


def indexed_state() -> OperatorState:
    state = OperatorState(None)
    for body in cluster():
        state.observe(copy.deepcopy(body))
    state.warm_up()
    return state


@pytest.fixture(scope="module")
def state() -> OperatorState:
    return indexed_state()


# ----- the tests -----------------------------------------------------------------------------------
def test_every_ai_kind_has_a_sample_of_its_shape():
    missing = sorted(ai.kind for ai in AI_KINDS.values() if ai.templates.__name__ not in SHAPES)
    assert not missing, f"add a spec for {missing} to SHAPES, so admission is checked on them"


def test_the_cluster_holds_every_kind_and_the_growth_adds_controller_made_services(state):
    workloads = state.engine.inventory.workloads
    for kind in KINDS:
        assert (namespace_of(kind), kind, slug(kind)) in workloads, kind
        assert state.engine.results[(namespace_of(kind), kind, slug(kind))], kind  # judged by warn-all
    isvc = view_of(obj("InferenceService", "inferenceservice", grown=True))
    added = set(isvc.implicit_services) - set(view_of(obj("InferenceService", "inferenceservice")).implicit_services)
    assert added == {"inferenceservice-transformer", "inferenceservice-transformer-default"}
    assert not added & {k[1] for k in state.engine.inventory.services}


@pytest.mark.parametrize("kind", KINDS)
def test_admission_leaves_no_trace(state, kind):
    name, ns = slug(kind), namespace_of(kind)
    current = obj(kind, name)
    requests = {
        "CREATE": (request(obj(kind, f"{name}-new"), "CREATE"), "allowed"),
        "UPDATE that grows it": (request(obj(kind, name, grown=True, depends_on="store, external:api.example.com"),
                                         "UPDATE", current), "allowed"),
        "CREATE denied": (request(obj(kind, f"{name}-strict", image=MUTABLE, strict=True), "CREATE"), "denied"),
        "UPDATE denied, closing a cycle": (request(obj(kind, name, strict=True, grown=True,
                                                       depends_on=f"store, call-{name}"), "UPDATE", current),
                                           "denied"),
        "DELETE": (request(current, "DELETE", current), "skipped"),
    }
    before = deep_state(state)
    for what, (req, expected) in requests.items():
        decision = state.admission().decide(req)
        assert decision.outcome != "error", (what, decision.warnings)
        if expected == "allowed":
            assert decision.allowed, (what, decision.message)
        else:
            assert decision.outcome == expected, (what, decision.outcome, decision.warnings)
        if what.startswith("UPDATE denied"):  # judged on the graph as it would be after the request
            assert "[GW-DEP-004 dependency-cycle]" in decision.message, decision.message
            assert f"{ns}/call-{name}" in decision.message
        after = deep_state(state)
        assert after == before, f"{kind}: the {what} left a trace: " + "; ".join(differences(before, after))


def test_a_transformer_added_and_denied_stays_out_of_the_index():
    """The case reported in the issue, alone: the Services of the transformer are not indexed afterwards."""
    state = indexed_state()
    current = obj("InferenceService", "inferenceservice")
    grown = obj("InferenceService", "inferenceservice", grown=True, strict=True, image=MUTABLE)
    decision = state.admission().decide(request(grown, "UPDATE", current))
    assert not decision.allowed
    services = state.engine.inventory.services
    assert ("ml", "inferenceservice-transformer") not in services
    assert ("ml", "inferenceservice-transformer-default") not in services
    assert ("ml", "inferenceservice-predictor") in services


def rendered(per_policy: dict) -> dict[str, list[str]]:
    return {ref: sorted(f.render() for f in found) for ref, found in per_policy.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_the_request_is_judged_as_the_cluster_would_be_after_it(state, kind):
    """The findings the preview gives a request are those the operator stores once the object is really there."""
    name = slug(kind)
    for body in (obj(kind, f"{name}-new"), obj(kind, name, grown=True, strict=True, depends_on=f"store, call-{name}")):
        view = view_of(body)
        hypothetical = state.admission().judge_hypothetically(view, errors := {})
        assert not errors
        real = indexed_state()
        real.observe(copy.deepcopy(body))
        assert rendered(hypothetical) == rendered(real.engine.results[view.key])
        assert hypothetical, "a policy judged it"
