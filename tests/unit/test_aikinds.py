"""AI workload kinds (KServe, KubeRay, Kubeflow training, LeaderWorkerSet, JobSet, Knative) read from manifests in the
shape of the projects' public samples (tests/fixtures/aikinds/): roles become locations, pod fields are read, the
Services their controllers create resolve, and they show the same kinds of problems a Deployment would."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from guywire.cli import build, main
from guywire.engine.evaluator import Engine
from guywire.views.inventory import Inventory, view_of
from guywire.model.policy import baseline_policy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "aikinds"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
#: Rules judged per container, from the pod template alone: a template must give the same findings
#: whether a Deployment or an AI kind carries it.
TEMPLATE_RULES = ("GW-OBS-004", "GW-OBS-005", "GW-OBS-007")


@pytest.fixture(scope="module")
def engine() -> Engine:
    inventory, policies, diagnostics, files, _ = build([str(FIXTURES)], [])
    assert files == len(list(FIXTURES.glob("*.yaml")))
    assert [d.render() for d in diagnostics if d.error] == []
    e = Engine([baseline_policy()], inventory)
    e.evaluate_all()
    return e


def W(engine: Engine, kind: str, ns: str, name: str):
    return engine.inventory.workloads[(ns, kind, name)]


def rendered(engine: Engine) -> list[str]:
    return [f.render() for f in engine.result().findings]


@pytest.mark.parametrize("kind, ns, name, roles, batch", [
    ("InferenceService", "ml", "chat", ["predictor", "transformer"], False),
    ("ServingRuntime", "ml", "vllm-runtime", [None], False),
    ("RayCluster", "ml", "chat", ["headGroup", 'workerGroup "gpu"', 'workerGroup "cpu"'], False),
    ("RayService", "ml", "summarizer", ["headGroup", 'workerGroup "gpu-group"'], False),
    ("RayJob", "ml", "finetune", ["headGroup", 'workerGroup "trainers"', "submitter"], True),
    ("RayJob", "ml", "nightly-eval", [], True),  # clusterSelector: runs on the RayCluster chat, no pods of its own
    ("PyTorchJob", "training", "llama-finetune", ['replica "Master"', 'replica "Worker"'], True),
    ("MPIJob", "training", "horovod-bench", ['replica "Launcher"', 'replica "Worker"'], True),
    ("TrainJob", "training", "mnist", ["trainer"], True),
    ("LeaderWorkerSet", "serving", "vllm", ["leader", "worker"], False),
    ("JobSet", "training", "pretrain", ['replicatedJob "driver"', 'replicatedJob "workers"'], True),
    ("KnativeService", "serving", "embedder", [None], False),
])
def test_each_kind_is_read_with_its_roles(engine, kind, ns, name, roles, batch):
    w = W(engine, kind, ns, name)
    assert [t.role for t in w.templates] == roles
    assert w.batch is batch


@pytest.mark.parametrize("kind, ns, name, gpus", [
    ("InferenceService", "ml", "chat", {"predictor": 1.0, "transformer": 0.0}),
    ("ServingRuntime", "ml", "vllm-runtime", {None: 1.0}),
    ("RayCluster", "ml", "chat", {"headGroup": 0.0, 'workerGroup "gpu"': 1.0, 'workerGroup "cpu"': 0.0}),
    ("RayJob", "ml", "finetune", {"headGroup": 0.0, 'workerGroup "trainers"': 2.0, "submitter": 0.0}),
    ("PyTorchJob", "training", "llama-finetune", {'replica "Master"': 4.0, 'replica "Worker"': 4.0}),
    ("TrainJob", "training", "mnist", {"trainer": 1.0}),
    ("LeaderWorkerSet", "serving", "vllm", {"leader": 8.0, "worker": 8.0}),
    ("JobSet", "training", "pretrain", {'replicatedJob "driver"': 0.0, 'replicatedJob "workers"': 8.0}),
])
def test_gpu_requests_are_read_per_role(engine, kind, ns, name, gpus):
    w = W(engine, kind, ns, name)
    assert {t.role: sum(c.gpu_count for c in t.containers) for t in w.templates} == gpus
    assert w.requests_gpu


def test_containers_ports_probes_env_and_annotations_are_read(engine):
    chat = W(engine, "InferenceService", "ml", "chat")
    predictor, transformer = chat.templates
    assert predictor.annotations["prometheus.io/scrape"] == "true", "the component's annotations go onto its pods"
    assert [c.name for c in transformer.containers] == ["kserve-container"], "KServe's name for an unnamed container"
    assert ("FEATURE_STORE_URL", "http://feature-store.data.svc.cluster.local:6566") in transformer.containers[0].env
    assert predictor.containers[0].limits["memory"] == "24Gi"
    head = W(engine, "RayCluster", "ml", "chat").templates[0]
    assert [p.name for p in head.containers[0].ports] == ["gcs-server", "dashboard", "client", "serve"]
    leader = W(engine, "LeaderWorkerSet", "serving", "vllm").templates[0]
    assert leader.containers[0].ports[0].port == 8080 and not leader.containers[0].readiness_probe
    assert leader.labels["role"] == "leader"
    (ui,) = W(engine, "Deployment", "ml", "chat-ui").templates
    assert ui.containers[0].readiness_probe and ui.containers[0].liveness_probe
    embedder = W(engine, "KnativeService", "serving", "embedder")
    assert [c.name for c in embedder.containers] == ["user-container"], "Knative's name for an unnamed container"
    assert embedder.templates[0].annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert W(engine, "TrainJob", "training", "mnist").containers[0].env == [("EPOCHS", "5")]
    assert W(engine, "InferenceService", "ml", "chat").decl.retry.attempts == 3


@pytest.mark.parametrize("caller, dependency, target", [
    (("ml", "Deployment", "chat-ui"), "chat-predictor", ("ml", "InferenceService", "chat")),
    (("ml", "Deployment", "gateway"), "chat-head-svc", ("ml", "RayCluster", "chat")),
    (("ml", "Deployment", "gateway"), "summarizer-serve-svc", ("ml", "RayService", "summarizer")),
    (("serving", "Deployment", "indexer"), "embedder", ("serving", "KnativeService", "embedder")),
    # a user Service selecting the leaders by the labels LeaderWorkerSet puts on them
    (("serving", "Deployment", "router"), "vllm-leader", ("serving", "LeaderWorkerSet", "vllm")),
    (("ml", "InferenceService", "chat"), "feature-store", ("data", "StatefulSet", "feature-store")),
])
def test_services_the_controllers_create_resolve(engine, caller, dependency, target):
    (edge,) = [e for e in engine.graph.out[caller] if e.dep.name == dependency]
    assert edge.resolved and edge.targets == (target,)


def test_implicit_services_per_kind(engine):
    services = {k for k, s in engine.inventory.services.items() if s.backend is not None}
    assert {("ml", "chat"), ("ml", "chat-predictor"), ("ml", "chat-transformer"), ("ml", "chat-head-svc"),
            ("ml", "summarizer-head-svc"), ("ml", "summarizer-serve-svc"), ("serving", "vllm"),
            ("serving", "embedder"), ("training", "pretrain-nodes")} <= services


@pytest.mark.parametrize("expected", [
    '[GW-OBS-005 incomplete-gpu-resources] RayCluster ml/chat workerGroup "gpu" container "ray-worker": uses '
    'nvidia.com/gpu=1 without a memory limit.',
    '[GW-OBS-007 mutable-image] RayCluster ml/chat workerGroup "cpu" container "ray-worker": uses image '
    '"rayproject/ray-ml:latest"',
    '[GW-OBS-001 missing-readiness-probe] LeaderWorkerSet serving/vllm leader container "vllm-leader": has no '
    'readinessProbe',
    '[GW-OBS-003 metrics-not-exposed] LeaderWorkerSet serving/vllm: exposes no metrics',
    '[GW-OBS-007 mutable-image] ServingRuntime ml/vllm-runtime container "kserve-container": uses image '
    '"vllm/vllm-openai:latest"',
    '[GW-OBS-004 missing-resources] PyTorchJob training/llama-finetune replica "Worker" container "pytorch": sets no '
    'requests.cpu, requests.memory, limits.memory.',
    '[GW-OBS-005 incomplete-gpu-resources] TrainJob training/mnist trainer container "node": uses nvidia.com/gpu=1 '
    'without a memory limit.',
    '[GW-OBS-005 incomplete-gpu-resources] JobSet training/pretrain replicatedJob "workers" container "trainer"',
    '[GW-OBS-007 mutable-image] MPIJob training/horovod-bench replica "Launcher" container "launcher"',
    '[GW-OBS-007 mutable-image] KnativeService serving/embedder container "user-container": uses image '
    '"ghcr.io/example/embedder"',
    '[GW-DEP-001 unresolved-dependency] InferenceService ml/chat: depends on "moderation"',
    '[GW-OBS-006 missing-labels] MPIJob training/horovod-bench: has no label app.kubernetes.io/name.',
])
def test_the_problems_a_deployment_would_have_are_found_with_the_role_as_location(engine, expected):
    found = rendered(engine)
    assert any(expected in f for f in found), "\n".join(found)


def test_what_the_platform_does_is_not_asked_for(engine):
    found = engine.result().findings
    by = {(f.workload.kind, f.rule) for f in found}
    # KServe model servers, KubeRay and Knative are probed by their platform; KubeRay and Knative export metrics
    for kind in ("InferenceService", "RayCluster", "RayService", "RayJob", "KnativeService"):
        assert (kind, "GW-OBS-001") not in by and (kind, "GW-OBS-002") not in by, kind
    for kind in ("RayCluster", "RayService", "KnativeService"):
        assert (kind, "GW-OBS-003") not in by, kind
    # training and batch jobs end: no probes or metrics expected
    for kind in ("PyTorchJob", "MPIJob", "TrainJob", "JobSet", "RayJob"):
        assert not {r for k, r in by if k == kind} & {"GW-OBS-001", "GW-OBS-002", "GW-OBS-003"}, kind
    # the predictor's prometheus.io/scrape (a component annotation) counts
    assert ("InferenceService", "GW-OBS-003") not in by


def _as_deployment(namespace: str, name: str, template) -> dict:
    def container(c) -> dict:
        out = {"name": c.name, "image": c.image, "resources": {"requests": c.requests, "limits": c.limits}}
        if c.ports:
            out["ports"] = [{"name": p.name, "containerPort": p.port} for p in c.ports if p.name]
        return out
    pod = {"containers": [container(c) for c in template.main_containers],
           "initContainers": [container(c) for c in template.containers if c.init]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": pod}}}


def _container_findings(engine: Engine, key, role) -> set[tuple[str, str]]:
    out = set()
    for f in engine.findings_for(key):
        if f.rule not in TEMPLATE_RULES or not f.location:
            continue
        where = f.location
        if role is not None:
            if not where.startswith(role + " "):
                continue
            where = where[len(role) + 1:]
        out.add((f.rule, f"{where}: {f.message}"))
    return out


def test_a_pod_template_gives_the_same_findings_in_an_ai_kind_as_in_a_deployment(engine):
    compared = 0
    for key, w in sorted(engine.inventory.workloads.items()):
        if w.kind in ("Deployment", "StatefulSet"):
            continue
        for i, t in enumerate(w.templates):
            name = f"copy-{i}-{w.name}"
            alone = Inventory()
            alone.add(view_of(_as_deployment(w.namespace, name, t)))
            e = Engine([baseline_policy()], alone)
            e.evaluate_all()
            as_deployment = _container_findings(e, (w.namespace, "Deployment", name), None)
            assert _container_findings(engine, key, t.role) == as_deployment, f"{w.kind} {w.name} {t.role}"
            compared += 1
    assert compared >= 20


# ----- readings fixed with these samples ------------------------------------------------------------------


def test_kserve_multi_node_predictor_workers_are_a_role():
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "llama-405b", "namespace": "ml"},
            "spec": {"predictor": {
                "model": {"modelFormat": {"name": "huggingface"}, "storageUri": "pvc://models/llama",
                          "resources": {"limits": {"nvidia.com/gpu": "8", "memory": "500Gi"}}},
                "workerSpec": {"pipelineParallelSize": 2, "tensorParallelSize": 8,
                               "containers": [{"name": "worker-container", "image": "kserve/huggingfaceserver:v0.15.0",
                                               "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}}
    w = view_of(isvc)
    assert [t.role for t in w.templates] == ["predictor", "predictor workerSpec"]
    assert w.templates[1].containers[0].gpu_count == 8


def test_ray_cluster_head_service_may_be_renamed():
    rc = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "chat", "namespace": "ml"},
          "spec": {"headGroupSpec": {"headService": {"metadata": {"name": "ray-head"}},
                                     "template": {"spec": {"containers": [{"name": "ray-head", "image": "r:1"}]}}}}}
    assert view_of(rc).implicit_services == ("ray-head",)


def test_a_ray_job_on_an_existing_cluster_is_read_not_refused():
    rj = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "eval", "namespace": "ml"},
          "spec": {"entrypoint": "python eval.py", "clusterSelector": {"ray.io/cluster": "chat"}}}
    assert view_of(rj).templates == []


def test_a_workload_kind_of_another_group_is_not_an_ai_kind():
    odd = {"apiVersion": "example.com/v1", "kind": "RayCluster", "metadata": {"name": "x"}, "spec": {}}
    assert view_of(odd) is None


# ----- the real samples --------------------------------------------------------------------------------------


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no manifest corpus at {CORPUS}")
def test_public_samples_show_the_problems_deployments_show(capsys):
    rc = main(["check", "-o", "json", str(CORPUS)])
    data = json.loads(capsys.readouterr().out)
    assert rc == 1
    ai = {"InferenceService", "RayCluster", "RayService", "RayJob", "PyTorchJob", "LeaderWorkerSet", "JobSet"}
    rules_on = {}
    for f in data["findings"]:
        rules_on.setdefault(f["workload"]["kind"] in ai, set()).add(f["rule"])
    template_rules = set(TEMPLATE_RULES)
    assert template_rules <= rules_on[False], "the samples' Deployments show the template problems"
    assert template_rules <= rules_on[True], "and so do the AI kinds"
    assert {"GW-OBS-001", "GW-OBS-002", "GW-OBS-003", "GW-OBS-006"} <= rules_on[True]


def test_fixtures_are_not_mutated_by_reading(engine):
    before = copy.deepcopy(engine.inventory.workloads[("ml", "InferenceService", "chat")].templates[0].labels)
    view_of(json.loads(json.dumps({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                   "metadata": {"name": "chat", "namespace": "ml"},
                                   "spec": {"predictor": {"sklearn": {"storageUri": "gs://x"}}}})))
    assert engine.inventory.workloads[("ml", "InferenceService", "chat")].templates[0].labels == before
