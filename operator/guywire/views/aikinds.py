"""The pod templates inside AI custom resources: KServe, KubeRay, Kubeflow, LeaderWorkerSet, JobSet, Knative.

Each kind gives one Workload view with one PodTemplate per role (``predictor``,
``workerGroup "gpu"``, ``replica "Worker"``…), the labels its controller puts on
the pods (so user Services that select them resolve), and the Services the
controller creates (so ``depends-on: chat-predictor`` resolves). Shapes follow the
projects' published CRDs; a field of the wrong shape is read as absent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .annotations import parse_declarations
from ..model.finding import SourceRef
from .workload import (
    DEFAULT_NAMESPACE, Container, ParseError, PodTemplate, Workload, _dict, _list, _str_dict, annotations_of,
    controller_of, object_meta, parse_container, parse_pod_template,
)

#: KServe's built-in model formats: a predictor written as one of these runs the format's server.
KSERVE_FORMATS = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml", "lightgbm",
                  "paddle", "huggingface", "torchserve")


@dataclass(frozen=True, slots=True)
class AIKind:
    kind: str
    group: str  # API group prefix the kind must come from (Knative's Service shares the core kind name)
    version: str
    plural: str
    batch: bool
    templates: Callable[[str, dict], list[PodTemplate]]
    services: Callable[[str, dict], list[str]] = lambda name, spec: []
    platform_probes: bool = False
    platform_metrics: bool = False
    namespaced: bool = True


def _with_labels(t: PodTemplate, labels: dict[str, str]) -> PodTemplate:
    t.labels = {**labels, **t.labels}
    return t


# ----- KServe -------------------------------------------------------------------------------------
def _named(containers: list, default: str) -> list[dict]:
    """Containers as written, the first unnamed one given the name its controller gives it."""
    out = []
    for i, c in enumerate(containers):
        c = _dict(c)
        out.append(c if c.get("name") or i else {**c, "name": default})
    return out


def _kserve_component(name: str, role: str, comp: dict) -> PodTemplate | None:
    if not comp:
        return None
    containers: list[Container] = []
    for fmt in KSERVE_FORMATS:
        spec = comp.get(fmt)
        if isinstance(spec, dict):
            c = parse_container({**spec, "name": spec.get("name") or "kserve-container"})
            containers.append(c)
    # KServe names the first custom container kserve-container when it has no name
    containers += [parse_container(c) for c in _named(_list(comp.get("containers")), "kserve-container")]
    containers = [parse_container(c, init=True) for c in _list(comp.get("initContainers"))] + containers
    if not containers:
        return None
    # the component's own labels and annotations (ComponentExtensionSpec) go onto its pods
    tpl = parse_pod_template(None, role=role, pod_spec=comp,
                             metadata={"labels": comp.get("labels"), "annotations": comp.get("annotations")})
    tpl.containers = containers
    labels = {"serving.kserve.io/inferenceservice": name, "component": role, "app": f"{name}-{role}"}
    return _with_labels(tpl, labels)


def _isvc_templates(name: str, spec: dict) -> list[PodTemplate]:
    out = []
    for role in ("predictor", "transformer", "explainer"):
        comp = _dict(spec.get(role))
        t = _kserve_component(name, role, comp)
        if t:
            out.append(t)
        worker = _dict(comp.get("workerSpec"))  # multi-node serving: the predictor's worker pods
        if role == "predictor" and _list(worker.get("containers")):
            wt = parse_pod_template(None, role="predictor workerSpec", pod_spec=worker, metadata={})
            out.append(_with_labels(wt, {"serving.kserve.io/inferenceservice": name, "component": "predictor-worker",
                                         "app": f"{name}-predictor-worker"}))
    return out


def _isvc_services(name: str, spec: dict) -> list[str]:
    names = [name]
    for role in ("predictor", "transformer", "explainer"):
        if spec.get(role):
            names += [f"{name}-{role}", f"{name}-{role}-default"]
    return names


def _runtime_templates(name: str, spec: dict) -> list[PodTemplate]:
    tpl = parse_pod_template(None, role=None, pod_spec=spec, metadata={})
    return [tpl] if tpl.containers else []


# ----- KubeRay ------------------------------------------------------------------------------------
def _ray_cluster(name: str, cluster: dict) -> list[PodTemplate]:
    out = []
    head = _dict(cluster.get("headGroupSpec"))
    if isinstance(head.get("template"), dict):
        out.append(_with_labels(parse_pod_template(head["template"], role="headGroup"),
                                {"ray.io/cluster": name, "ray.io/node-type": "head", "ray.io/group": "headgroup",
                                 "ray.io/is-ray-node": "yes"}))
    for group in _list(cluster.get("workerGroupSpecs")):
        group = _dict(group)
        if isinstance(group.get("template"), dict):
            gname = str(group.get("groupName") or "workers")
            out.append(_with_labels(parse_pod_template(group["template"], role=f'workerGroup "{gname}"'),
                                    {"ray.io/cluster": name, "ray.io/node-type": "worker", "ray.io/group": gname,
                                     "ray.io/is-ray-node": "yes"}))
    return out


def _raycluster_services(name: str, spec: dict) -> list[str]:
    """KubeRay's head Service: ``<cluster>-head-svc``, or the name set in headGroupSpec.headService."""
    custom = _dict(_dict(_dict(spec.get("headGroupSpec")).get("headService")).get("metadata")).get("name")
    return [str(custom) if custom else f"{name}-head-svc"]


def _raycluster_templates(name: str, spec: dict) -> list[PodTemplate]:
    return _ray_cluster(name, spec)


def _rayservice_templates(name: str, spec: dict) -> list[PodTemplate]:
    return _ray_cluster(name, _dict(spec.get("rayClusterConfig")))


def _rayjob_templates(name: str, spec: dict) -> list[PodTemplate]:
    out = _ray_cluster(name, _dict(spec.get("rayClusterSpec")))
    if isinstance(spec.get("submitterPodTemplate"), dict):
        out.append(parse_pod_template(spec["submitterPodTemplate"], role="submitter"))
    return out


# ----- Kubeflow training --------------------------------------------------------------------------
def _replica_specs(name: str, spec: dict) -> list[PodTemplate]:
    """PyTorchJob, TFJob, MPIJob, XGBoostJob, PaddleJob, JAXJob: ``<x>ReplicaSpecs: {Role: {template}}``."""
    out = []
    for key, value in spec.items():
        if not key.endswith("ReplicaSpecs"):
            continue
        for role, rs in _dict(value).items():
            rs = _dict(rs)
            if isinstance(rs.get("template"), dict):
                out.append(_with_labels(parse_pod_template(rs["template"], role=f'replica "{role}"'),
                                        {"training.kubeflow.org/job-name": name,
                                         "training.kubeflow.org/replica-type": str(role).lower()}))
    return out


def _trainjob_templates(name: str, spec: dict) -> list[PodTemplate]:
    trainer = _dict(spec.get("trainer"))
    if not trainer:
        return []
    container = parse_container({"name": "node", "image": trainer.get("image"), "command": trainer.get("command"),
                                 "args": trainer.get("args"), "env": trainer.get("env"),
                                 "resources": {"requests": _dict(trainer.get("resourcesPerNode")).get("requests"),
                                               "limits": _dict(trainer.get("resourcesPerNode")).get("limits")}})
    return [PodTemplate(role="trainer", labels={"trainer.kubeflow.org/trainjob-name": name}, annotations={},
                        containers=[container])]


# ----- LeaderWorkerSet, JobSet, Knative ----------------------------------------------------------
def _lws_templates(name: str, spec: dict) -> list[PodTemplate]:
    lwt = _dict(spec.get("leaderWorkerTemplate"))
    out = []
    for key, role in (("leaderTemplate", "leader"), ("workerTemplate", "worker")):
        if isinstance(lwt.get(key), dict):
            labels = {"leaderworkerset.sigs.k8s.io/name": name}
            if role == "leader":  # Services select the leader by its worker index, 0
                labels["leaderworkerset.sigs.k8s.io/worker-index"] = "0"
            out.append(_with_labels(parse_pod_template(lwt[key], role=role), labels))
    return out


def _jobset_templates(name: str, spec: dict) -> list[PodTemplate]:
    out = []
    for rj in _list(spec.get("replicatedJobs")):
        rj = _dict(rj)
        tpl = _dict(_dict(_dict(rj.get("template")).get("spec")).get("template"))
        if tpl:
            rname = str(rj.get("name") or "job")
            out.append(_with_labels(parse_pod_template(tpl, role=f'replicatedJob "{rname}"'),
                                    {"jobset.sigs.k8s.io/jobset-name": name,
                                     "jobset.sigs.k8s.io/replicatedjob-name": rname}))
    return out


def _knative_templates(name: str, spec: dict) -> list[PodTemplate]:
    tpl = _dict(spec.get("template"))
    if not tpl:
        return []
    pod = _dict(tpl.get("spec"))
    if isinstance(pod.get("containers"), list):  # Knative names an unnamed container user-container
        tpl = {**tpl, "spec": {**pod, "containers": _named(pod["containers"], "user-container")}}
    return [_with_labels(parse_pod_template(tpl), {"serving.knative.dev/service": name})]


AI_KINDS: dict[str, AIKind] = {k.kind: k for k in [
    AIKind("InferenceService", "serving.kserve.io", "v1beta1", "inferenceservices", False, _isvc_templates,
           _isvc_services, platform_probes=True),
    AIKind("ServingRuntime", "serving.kserve.io", "v1alpha1", "servingruntimes", False, _runtime_templates),
    AIKind("ClusterServingRuntime", "serving.kserve.io", "v1alpha1", "clusterservingruntimes", False,
           _runtime_templates, namespaced=False),
    # KubeRay injects readiness/liveness probes and a "metrics" port (8080) into Ray containers.
    AIKind("RayCluster", "ray.io", "v1", "rayclusters", False, _raycluster_templates,
           _raycluster_services, platform_probes=True, platform_metrics=True),
    AIKind("RayService", "ray.io", "v1", "rayservices", False, _rayservice_templates,
           lambda name, spec: [f"{name}-head-svc", f"{name}-serve-svc"], platform_probes=True,
           platform_metrics=True),
    AIKind("RayJob", "ray.io", "v1", "rayjobs", True, _rayjob_templates, platform_probes=True,
           platform_metrics=True),
    AIKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", True, _replica_specs),
    AIKind("TFJob", "kubeflow.org", "v1", "tfjobs", True, _replica_specs),
    AIKind("MPIJob", "kubeflow.org", "v1", "mpijobs", True, _replica_specs),
    AIKind("XGBoostJob", "kubeflow.org", "v1", "xgboostjobs", True, _replica_specs),
    AIKind("PaddleJob", "kubeflow.org", "v1", "paddlejobs", True, _replica_specs),
    AIKind("JAXJob", "kubeflow.org", "v1", "jaxjobs", True, _replica_specs),
    AIKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", True, _trainjob_templates),
    AIKind("LeaderWorkerSet", "leaderworkerset.x-k8s.io", "v1", "leaderworkersets", False, _lws_templates,
           lambda name, spec: [name]),
    AIKind("JobSet", "jobset.x-k8s.io", "v1alpha2", "jobsets", True, _jobset_templates,
           lambda name, spec: [str(_dict(spec.get("network")).get("subdomain") or name)]),
    AIKind("KnativeService", "serving.knative.dev", "v1", "services", False, _knative_templates,
           lambda name, spec: [name], platform_probes=True, platform_metrics=True),
]}


def ai_kind_of(obj: dict) -> AIKind | None:
    kind = obj.get("kind")
    api = str(obj.get("apiVersion") or "")
    if kind == "Service" and api.startswith("serving.knative.dev/"):
        return AI_KINDS["KnativeService"]
    spec = AI_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None or spec.kind == "KnativeService":
        return None
    return spec if api.split("/")[0] == spec.group else None


def parse_ai_workload(obj: dict, spec: AIKind, source: SourceRef | None = None,
                      default_namespace: str = DEFAULT_NAMESPACE) -> Workload:
    name, ns, meta = object_meta(obj)
    if not name:
        raise ParseError(f"{spec.kind} ?: metadata.name is missing.")
    body = obj.get("spec")
    if not isinstance(body, dict):
        raise ParseError(f"{spec.kind} {name}: spec is missing or not an object.")
    try:
        templates = spec.templates(name, body)
    except ParseError as exc:
        raise ParseError(f"{spec.kind} {name}: {exc}") from None
    if not templates and not (spec.kind == "RayJob" and body.get("clusterSelector")):
        # (a RayJob with clusterSelector runs on an existing RayCluster, evaluated on its own: no pods of its own)
        raise ParseError(f"{spec.kind} {name}: no pod template or container found in spec.")
    annotations = annotations_of(meta)
    return Workload(
        kind=spec.kind, namespace=ns or default_namespace, name=name, labels=_str_dict(meta.get("labels")),
        annotations=annotations, templates=templates, decl=parse_declarations(annotations), source=source,
        uid=str(meta["uid"]) if meta.get("uid") else None,
        generation=meta.get("generation") if isinstance(meta.get("generation"), int) else None,
        owner=controller_of(meta), batch=spec.batch, api_version=str(obj.get("apiVersion") or ""),
        implicit_services=tuple(dict.fromkeys(spec.services(name, body))),
        platform_probes=spec.platform_probes, platform_metrics=spec.platform_metrics,
    )


__all__ = ["AI_KINDS", "AIKind", "ai_kind_of", "parse_ai_workload"]
