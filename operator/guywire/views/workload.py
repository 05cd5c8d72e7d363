"""One view over every kind that runs pods, plus the other objects the rules read.

``parse_object`` turns a Kubernetes object (a dict) into a slim view; nothing here
raises on bad input: a field of the wrong shape is read as absent and, where it
matters, reported as a ParseError naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .annotations import Declarations, parse_declarations
from ..model.finding import ObjectRef, SourceRef
from ..model.units import parse_duration

DEFAULT_NAMESPACE = "default"
GPU_RESOURCE_PREFIXES = ("nvidia.com/gpu", "nvidia.com/mig-", "amd.com/gpu", "gpu.intel.com/")
LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"})
BATCH = frozenset({"Job", "CronJob"})
WORKLOAD_KINDS = LONG_RUNNING | BATCH
#: The API group each workload kind is served from; a Deployment from any other group is not one.
WORKLOAD_GROUPS = {"Deployment": "apps", "StatefulSet": "apps", "DaemonSet": "apps", "ReplicaSet": "apps",
                   "Pod": "", "Job": "batch", "CronJob": "batch"}


class ParseError(ValueError):
    """An object that cannot be read; the message names the object and the field."""


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str_dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


#: Annotations no rule reads that can be as large as the object itself (kubectl apply keeps a copy of
#: the whole object in one); views leave them out so an index of many objects stays small.
UNREAD_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def annotations_of(meta: Any) -> dict[str, str]:
    raw = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items() if k not in UNREAD_ANNOTATIONS}


def is_gpu_resource(name: str) -> bool:
    return name.startswith(GPU_RESOURCE_PREFIXES)


@dataclass(slots=True)
class Port:
    name: str
    port: int | None
    protocol: str = "TCP"


@dataclass(slots=True)
class Container:
    name: str
    image: str
    ports: list[Port] = field(default_factory=list)
    readiness_probe: bool = False
    liveness_probe: bool = False
    startup_probe: bool = False
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    env: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    init: bool = False
    sidecar: bool = False
    config_refs: list[str] = field(default_factory=list)  # "ConfigMap NAME" / "Secret NAME" read by envFrom or valueFrom
    _gpu: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def main(self) -> bool:
        return not self.init

    @property
    def gpu_resources(self) -> dict[str, str]:
        """GPU resources and their counts (limits first); worked out once, the rules ask often."""
        if self._gpu is None:
            names = {k for k in (*self.requests, *self.limits) if is_gpu_resource(k)}
            self._gpu = {k: self.limits.get(k) or self.requests.get(k, "") for k in sorted(names)}
        return self._gpu

    @property
    def gpu_count(self) -> float:
        total = 0.0
        for value in self.gpu_resources.values():
            try:
                total += float(value)
            except (TypeError, ValueError):
                total += 1
        return total


@dataclass(slots=True)
class PodTemplate:
    """One pod template of a workload. ``role`` names it when a workload has several (AI kinds)."""

    role: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    containers: list[Container]
    node_name: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: list[list[dict]] = field(default_factory=list)  # required terms (OR) of expressions (AND)
    restart_policy: str | None = None
    config_volumes: list[str] = field(default_factory=list)  # "ConfigMap NAME", "Secret NAME", "CSI DRIVER" mounted

    @property
    def main_containers(self) -> list[Container]:
        return [c for c in self.containers if not c.init]


@dataclass(slots=True)
class Workload:
    kind: str
    namespace: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    templates: list[PodTemplate]
    decl: Declarations
    source: SourceRef | None = None
    uid: str | None = None
    generation: int | None = None
    owner: tuple[str, str] | None = None  # the controller's (kind, name), e.g. a Deployment's ReplicaSet
    batch: bool = False  # runs to completion (Jobs, training jobs): no probes or metrics expected
    api_version: str = ""
    implicit_services: tuple[str, ...] = ()  # Services its controller creates (KServe, Ray, LWS, Knative)
    platform_probes: bool = False  # the platform probes its pods (KServe model servers, Knative)
    platform_metrics: bool = False  # the platform exports its metrics (Knative queue-proxy)
    # made once: the graph and the results hold the key in many places, one tuple instead of one each
    _key: tuple[str, str, str] | None = field(default=None, init=False, repr=False, compare=False)
    _ref: ObjectRef | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        if self._key is None:
            self._key = (self.namespace, self.kind, self.name)
        return self._key

    @property
    def ref(self) -> ObjectRef:
        if self._ref is None:
            self._ref = ObjectRef(self.kind, self.namespace, self.name)
        return self._ref

    @property
    def long_running(self) -> bool:
        return not self.batch

    @property
    def containers(self) -> list[Container]:
        return [c for t in self.templates for c in t.containers]

    @property
    def requests_gpu(self) -> bool:
        return any(c.gpu_resources for c in self.containers)

    @property
    def pod_labels(self) -> dict[str, str]:
        return self.templates[0].labels if self.templates else {}

    def container_location(self, template: PodTemplate, container: Container) -> str:
        kind = "init container" if container.init and not container.sidecar else (
            "sidecar" if container.sidecar else "container")
        where = f'{kind} "{container.name}"'
        return f"{template.role} {where}" if template.role else where


@dataclass(slots=True)
class Service:
    namespace: str
    name: str
    selector: dict[str, str]
    ports: list[Port]
    labels: dict[str, str]
    type: str = "ClusterIP"
    external_name: str | None = None
    source: SourceRef | None = None
    backend: tuple[str, str, str] | None = None  # set for a Service a workload's controller creates
    owner: tuple[str, str] | None = None  # the controller that made it (ownerReferences), e.g. an operator's CR
    mesh_retry: "MeshRetry | None" = None  # Linkerd's retry.linkerd.io/* annotations on the Service
    _key: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        if self._key is None:
            self._key = (self.namespace, self.name)
        return self._key

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("Service", self.namespace, self.name)


@dataclass(slots=True)
class Monitor:
    """A prometheus-operator ServiceMonitor / PodMonitor (or GMP PodMonitoring)."""

    kind: str
    namespace: str
    name: str
    selector: dict  # a LabelSelector as a dict
    namespaces: list[str] | None  # None: only its own namespace; ["*"]: any
    source: SourceRef | None = None

    def covers_namespace(self, ns: str) -> bool:
        if self.namespaces is None:
            return ns == self.namespace
        return "*" in self.namespaces or ns in self.namespaces


@dataclass(slots=True)
class Namespace:
    name: str
    labels: dict[str, str]


@dataclass(slots=True)
class Node:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    allocatable_gpus: float = 0.0
    source: SourceRef | None = None

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("Node", None, self.name)


def _ports(raw: Any) -> list[Port]:
    out = []
    for p in _list(raw):
        p = _dict(p)
        num = p.get("containerPort", p.get("port"))
        out.append(Port(name=str(p.get("name") or ""), port=num if isinstance(num, int) else None,
                        protocol=str(p.get("protocol") or "TCP")))
    return out


def _env(raw: Any) -> list[tuple[str, str]]:
    out = []
    for e in _list(raw):
        e = _dict(e)
        if "value" in e and e.get("name") is not None and e["value"] is not None:
            out.append((str(e["name"]), str(e["value"])))
    return out


def _config_refs(c: dict) -> list[str]:
    """ConfigMaps and Secrets a container reads into its environment (their contents are not in the view)."""
    out = []
    for src in _list(c.get("envFrom")):
        src = _dict(src)
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if isinstance(src.get(key), dict):
                out.append(f"{kind} {src[key].get('name') or '?'}")
    for e in _list(c.get("env")):
        ref = _dict(_dict(e).get("valueFrom"))
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if isinstance(ref.get(key), dict):
                out.append(f"{kind} {ref[key].get('name') or '?'}")
    return sorted(set(out))


def _config_volumes(spec: dict) -> list[str]:
    """ConfigMaps, Secrets and CSI drivers (secrets stores) a pod mounts."""
    out = []
    for v in _list(spec.get("volumes")):
        v = _dict(v)
        sources = [v] + [_dict(s) for s in _list(_dict(v.get("projected")).get("sources"))]
        for src in sources:
            if isinstance(src.get("configMap"), dict):
                out.append(f"ConfigMap {src['configMap'].get('name') or '?'}")
            if isinstance(src.get("secret"), dict):
                out.append(f"Secret {src['secret'].get('secretName') or src['secret'].get('name') or '?'}")
        if isinstance(v.get("csi"), dict):
            out.append(f"CSI {v['csi'].get('driver') or '?'}")
    return sorted(set(out))


def _resources(raw: Any) -> tuple[dict[str, str], dict[str, str]]:
    res = _dict(raw)
    return _str_dict(res.get("requests")), _str_dict(res.get("limits"))


def parse_container(raw: Any, init: bool = False) -> Container:
    c = _dict(raw)
    requests, limits = _resources(c.get("resources"))
    args = [str(a) for a in (*_list(c.get("command")), *_list(c.get("args")))]
    return Container(
        name=str(c.get("name") or "?"),
        image=str(c.get("image") or ""),
        ports=_ports(c.get("ports")),
        readiness_probe=bool(c.get("readinessProbe")),
        liveness_probe=bool(c.get("livenessProbe")),
        startup_probe=bool(c.get("startupProbe")),
        requests=requests,
        limits=limits,
        env=_env(c.get("env")),
        args=args,
        init=init,
        sidecar=init and c.get("restartPolicy") == "Always",
        config_refs=_config_refs(c),
    )


def parse_pod_template(template: Any, role: str | None = None, pod_spec: Any = None,
                       metadata: Any = None) -> PodTemplate:
    """Read a PodTemplateSpec (or a pod's metadata + spec when ``pod_spec`` is given)."""
    tpl = _dict(template)
    meta = _dict(metadata if pod_spec is not None else tpl.get("metadata"))
    spec = _dict(pod_spec if pod_spec is not None else tpl.get("spec"))
    where = "spec" if pod_spec is not None else "spec.template.spec"
    for key in ("containers", "initContainers"):
        if spec.get(key) is not None and not isinstance(spec[key], list):
            raise ParseError(f"{where}.{key} is a {type(spec[key]).__name__}, not a list of containers.")
    containers = [parse_container(c, init=True) for c in _list(spec.get("initContainers"))]
    containers += [parse_container(c) for c in _list(spec.get("containers"))]
    affinity = _dict(_dict(_dict(spec.get("affinity")).get("nodeAffinity"))
                     .get("requiredDuringSchedulingIgnoredDuringExecution"))
    terms = [[_dict(e) for e in _list(_dict(t).get("matchExpressions"))]
             for t in _list(affinity.get("nodeSelectorTerms"))]
    node_name = spec.get("nodeName")
    return PodTemplate(
        role=role,
        labels=_str_dict(meta.get("labels")),
        annotations=annotations_of(meta),
        containers=containers,
        node_name=str(node_name) if node_name else None,
        node_selector=_str_dict(spec.get("nodeSelector")),
        node_affinity=terms,
        restart_policy=spec.get("restartPolicy"),
        config_volumes=_config_volumes(spec),
    )


def _templates(kind: str, obj: dict, spec: dict) -> list[PodTemplate] | None:
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        if not isinstance(spec.get("template"), dict):
            return None
        t = parse_pod_template(spec["template"])
        name = _dict(obj.get("metadata")).get("name")
        if kind == "Job" and name:  # the Job controller labels its pods with the Job's name
            t.labels = {"job-name": str(name), "batch.kubernetes.io/job-name": str(name), **t.labels}
        return [t]
    if kind == "CronJob":
        job = _dict(_dict(spec.get("jobTemplate")).get("spec"))
        if not isinstance(job.get("template"), dict):
            return None
        return [parse_pod_template(job["template"])]
    if kind == "Pod":
        return [parse_pod_template(None, pod_spec=spec, metadata=obj.get("metadata"))]
    return None


def object_meta(obj: dict) -> tuple[str | None, str | None, dict]:
    meta = _dict(obj.get("metadata"))
    name = meta.get("name") or meta.get("generateName")  # objects made with kubectl create
    ns = meta.get("namespace")
    return (str(name) if name else None), (str(ns) if ns else None), meta


def controller_of(meta: dict) -> tuple[str, str] | None:
    for ref in _list(meta.get("ownerReferences")):
        ref = _dict(ref)
        if ref.get("controller") and ref.get("kind") and ref.get("name"):
            return str(ref["kind"]), str(ref["name"])
    return None


def parse_workload(obj: dict, source: SourceRef | None = None, default_namespace: str = DEFAULT_NAMESPACE) -> Workload:
    kind = str(obj.get("kind"))
    name, ns, meta = object_meta(obj)
    where = f"{kind} {name or '?'}"
    if not name:
        raise ParseError(f"{where}: metadata.name is missing.")
    spec = _dict(obj.get("spec"))
    if kind != "Pod" and not isinstance(obj.get("spec"), dict):
        raise ParseError(f"{where}: spec is missing or not an object.")
    try:
        templates = _templates(kind, obj, spec)
    except ParseError as exc:
        raise ParseError(f"{where}: {exc}") from None
    if templates is None:
        path = "spec.jobTemplate.spec.template" if kind == "CronJob" else "spec.template"
        raise ParseError(f"{where}: {path} is missing or not an object.")
    annotations = annotations_of(meta)
    return Workload(
        kind=kind, namespace=ns or default_namespace, name=name,
        labels=_str_dict(meta.get("labels")), annotations=annotations, templates=templates,
        decl=parse_declarations(annotations), source=source,
        uid=str(meta["uid"]) if meta.get("uid") else None,
        generation=meta.get("generation") if isinstance(meta.get("generation"), int) else None,
        owner=controller_of(meta),
        batch=kind in BATCH,
        api_version=str(obj.get("apiVersion") or ""),
    )


def parse_service(obj: dict, source: SourceRef | None = None, default_namespace: str = DEFAULT_NAMESPACE) -> Service:
    name, ns, meta = object_meta(obj)
    if not name:
        raise ParseError("Service ?: metadata.name is missing.")
    spec = _dict(obj.get("spec"))
    ns = ns or default_namespace
    annotations = meta.get("annotations")
    mesh_retry = linkerd_retry(_str_dict(annotations), f"Service {ns}/{name}") if isinstance(annotations, dict) \
        and any(str(k).startswith(LINKERD_RETRY) for k in annotations) else None
    return Service(namespace=ns, name=name, selector=_str_dict(spec.get("selector")),
                   ports=_ports(spec.get("ports")), labels=_str_dict(meta.get("labels")),
                   type=str(spec.get("type") or "ClusterIP"),
                   external_name=str(spec["externalName"]) if spec.get("externalName") else None, source=source,
                   owner=controller_of(meta), mesh_retry=mesh_retry)


MONITOR_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PodMonitoring", "ClusterPodMonitoring"})


def parse_monitor(obj: dict, source: SourceRef | None = None, default_namespace: str = DEFAULT_NAMESPACE) -> Monitor:
    kind = str(obj.get("kind"))
    name, ns, _ = object_meta(obj)
    if not name:
        raise ParseError(f"{kind} ?: metadata.name is missing.")
    spec = _dict(obj.get("spec"))
    nss = _dict(spec.get("namespaceSelector"))
    if kind == "ClusterPodMonitoring" or nss.get("any") is True:
        namespaces: list[str] | None = ["*"]
    elif _list(nss.get("matchNames")):
        namespaces = [str(n) for n in nss["matchNames"]]
    else:
        namespaces = None
    return Monitor(kind=kind, namespace=ns or default_namespace, name=name, selector=_dict(spec.get("selector")),
                   namespaces=namespaces, source=source)


def parse_namespace(obj: dict) -> Namespace:
    name, _, meta = object_meta(obj)
    if not name:
        raise ParseError("Namespace: metadata.name is missing.")
    return Namespace(name=name, labels=_str_dict(meta.get("labels")))


def parse_node(obj: dict, source: SourceRef | None = None) -> Node:
    name, _, meta = object_meta(obj)
    if not name:
        raise ParseError("Node ?: metadata.name is missing.")
    alloc = _dict(_dict(obj.get("status")).get("allocatable"))
    gpus = 0.0
    for key, value in alloc.items():
        if is_gpu_resource(str(key)):
            try:
                gpus += float(value)
            except (TypeError, ValueError):
                pass
    return Node(name=name, labels=_str_dict(meta.get("labels")), annotations=annotations_of(meta),
                allocatable_gpus=gpus, source=source)


# ----- service mesh (Istio) ------------------------------------------------------------------------
MESH_KINDS = frozenset({"VirtualService", "DestinationRule", "HTTPRoute", "ServiceProfile"})
ISTIO_GROUP = "networking.istio.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MESH_GROUPS = {"VirtualService": ISTIO_GROUP, "DestinationRule": ISTIO_GROUP, "HTTPRoute": GATEWAY_GROUP,
               "ServiceProfile": "linkerd.io"}
#: Linkerd's retry budget when a ServiceProfile sets none: retries may add 20% to the requests
#: (plus 10 retries a second; https://linkerd.io/2.15/tasks/configuring-retries/#retry-budgets).
LINKERD_RETRY_RATIO = 0.2
LINKERD_RETRY = "retry.linkerd.io/"
#: Envoy's retry back-off when a route sets none: 25ms base interval, exponential with full jitter.
ENVOY_BACKOFF = "exponential-jitter"


@dataclass(frozen=True, slots=True)
class MeshRetry:
    """What the caller's sidecar does on one call, read from a VirtualService http route.

    ``attempts`` counts every try, the first included: Istio's ``retries.attempts`` counts only the
    retries, so ``attempts: 2`` is 3 tries here. ``declared`` is False for a VirtualService route
    without ``retries``: Istio then applies its default retry policy (graph.py counts it in the
    caller's mesh namespaces), and ``implicit`` marks that default itself.
    """

    source: str  # 'VirtualService ml/llm http route "primary"', for messages
    attempts: int = 1
    per_try_timeout: float | None = None
    timeout: float | None = None
    declared: bool = True
    implicit: bool = False

    @property
    def retries(self) -> bool:
        return self.attempts > 1

    def worst_case(self) -> float | None:
        """The longest the sidecar spends on one call the application makes."""
        per_try = self.attempts * self.per_try_timeout if self.per_try_timeout is not None else None
        if per_try is not None and self.timeout is not None:
            return min(per_try, self.timeout)
        return per_try if per_try is not None else self.timeout


@dataclass(slots=True)
class MeshRoute:
    """An Istio VirtualService (the retry and timeout of its http routes) or DestinationRule.

    ``hosts`` are as written (short name, name.ns, FQDN, ``*.ns.svc.cluster.local``, an external host);
    short names are resolved against the object's own namespace, as Istio does. ``sidecars`` is False
    when ``gateways`` lists only gateways: then the routes shape ingress traffic, not calls between
    workloads. ``export_to`` is None for visible everywhere.
    """

    kind: str
    namespace: str
    name: str
    hosts: list[str]
    sidecars: bool = True
    export_to: list[str] | None = None
    # VirtualService: the route that tries most (a match guywire cannot see may send every call there)
    retry: MeshRetry | None = None
    outlier_detection: bool = False  # DestinationRule: trafficPolicy.outlierDetection is set
    max_retries: int | None = None  # DestinationRule: connectionPool.http.maxRetries, cluster-wide
    retry_budget: float | None = None  # DestinationRule: connectionPool.http.retryBudget.percent, as a ratio
    source: SourceRef | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.kind, self.name)

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind, self.namespace, self.name)

    def visible_from(self, ns: str) -> bool:
        if self.export_to is None:
            return True
        return any(x == "*" or x == ns or (x == "." and ns == self.namespace) for x in self.export_to)


def _mesh_duration(where: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ParseError(f"{where} is {str(value)[:40]!r}, not a duration such as 2s or 500ms.") from None
    return seconds if seconds > 0 else None  # 0s: Istio reads it as no timeout


def _unbounded(r: MeshRetry) -> float:
    wc = r.worst_case()
    return float("inf") if wc is None else wc


def _retry_count(n: Any, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ParseError(f"{where} is {str(n)[:20]!r}, not a whole number of retries.")
    return min(n, 1000)


def _route_retry(source: str, route: dict, where: str) -> MeshRetry:
    retries = _dict(route.get("retries"))
    n = _retry_count(retries.get("attempts", 0), f"{where}.retries.attempts")
    return MeshRetry(source=source, attempts=n + 1,
                     per_try_timeout=_mesh_duration(f"{where}.retries.perTryTimeout", retries.get("perTryTimeout")),
                     timeout=_mesh_duration(f"{where}.timeout", route.get("timeout")),
                     declared="retries" in route)


def linkerd_retry(annotations: dict[str, str], where: str) -> MeshRetry | None:
    """Linkerd's retries on calls to a Service or HTTPRoute (Linkerd 2.16+): ``retry.linkerd.io/http`` or
    ``/grpc`` turns them on, ``/limit`` is the most retries per request (default 1), ``/timeout`` each try's."""
    if not any(k in annotations for k in (LINKERD_RETRY + "http", LINKERD_RETRY + "grpc")):
        return None
    raw = annotations.get(LINKERD_RETRY + "limit", "1")
    try:
        limit = int(str(raw).strip())
    except ValueError:
        raise ParseError(f"{where}: annotation {LINKERD_RETRY}limit is {str(raw)[:20]!r}, not a whole number "
                         "of retries.") from None
    limit = _retry_count(limit, f"{where}: annotation {LINKERD_RETRY}limit")
    return MeshRetry(source=f"{where} ({LINKERD_RETRY}* annotations)", attempts=limit + 1,
                     per_try_timeout=_mesh_duration(f"{where}: annotation {LINKERD_RETRY}timeout",
                                                    annotations.get(LINKERD_RETRY + "timeout")))


def _budget_ratio(budget: dict, where: str) -> float | None:
    """Istio's ``retryBudget.percent`` (a number, or ``{value: N}``), 0-100, as a ratio."""
    pct = budget.get("percent")
    if isinstance(pct, dict):
        pct = pct.get("value")
    if pct is None:
        return 0.2 if budget else None  # Envoy's default budget_percent: 20%
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise ParseError(f"{where}.retryBudget.percent is {str(pct)[:20]!r}, not a percentage from 0 to 100.")
    return float(pct) / 100


def _mesh_object(obj: dict, kind: str, default_namespace: str) -> tuple[str, str, dict, dict, str]:
    """Name, namespace, metadata, spec and "Kind ns/name" (for messages) of a mesh object; no name is a ParseError."""
    name, ns, meta = object_meta(obj)
    if not name:
        raise ParseError(f"{kind} ?: metadata.name is missing.")
    ns = ns or default_namespace
    return name, ns, meta, _dict(obj.get("spec")), f"{kind} {ns}/{name}"


def parse_service_profile(obj: dict, source: SourceRef | None = None,
                          default_namespace: str = DEFAULT_NAMESPACE) -> MeshRoute:
    """A Linkerd ServiceProfile (named after the Service's FQDN). Routes marked ``isRetryable`` are retried by
    the client proxies under the profile's ``retryBudget`` (``retryRatio``, default 0.2) with no count per
    request: counted as one retry (2 tries) per request, and the budget caps the hop at 1 + ratio."""
    name, ns, _, spec, where = _mesh_object(obj, "ServiceProfile", default_namespace)
    route = MeshRoute(kind="ServiceProfile", namespace=ns, name=name, hosts=[name], source=source)
    if not any(_dict(r).get("isRetryable") is True for r in _list(spec.get("routes"))):
        return route
    budget = _dict(spec.get("retryBudget"))
    ratio = budget.get("retryRatio", LINKERD_RETRY_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
        raise ParseError(f"{where}: spec.retryBudget.retryRatio is {str(ratio)[:20]!r}, not a ratio such as 0.2.")
    route.retry = MeshRetry(source=f"{where} (isRetryable routes)", attempts=2)
    route.retry_budget = float(ratio)
    return route


def parse_http_route(obj: dict, source: SourceRef | None = None,
                     default_namespace: str = DEFAULT_NAMESPACE) -> MeshRoute:
    """A Gateway API HTTPRoute (GEP-1731 ``retry``, ``timeouts``; Linkerd's retry annotations override it).
    Only a route whose ``parentRefs`` name a Service shapes calls between workloads (the mesh, GAMMA); one
    attached to a Gateway shapes ingress traffic and is kept with ``sidecars`` False."""
    name, ns, meta, spec, where = _mesh_object(obj, "HTTPRoute", default_namespace)
    hosts = []
    for ref in _list(spec.get("parentRefs")):
        ref = _dict(ref)
        if ref.get("kind") == "Service" and ref.get("group", "") in ("", "core") and ref.get("name"):
            hosts.append(f"{ref['name']}.{ref.get('namespace') or ns}.svc.cluster.local")
    route = MeshRoute(kind="HTTPRoute", namespace=ns, name=name, hosts=hosts, sidecars=bool(hosts), source=source)
    annotations = _str_dict(meta.get("annotations"))
    linkerd = linkerd_retry(annotations, where)
    if linkerd is not None:
        route.retry = linkerd
        return route
    best: MeshRetry | None = None
    for i, rule in enumerate(_list(spec.get("rules"))):
        rule = _dict(rule)
        at = f"{where}: spec.rules[{i}]"
        retry = _dict(rule.get("retry"))
        timeouts = _dict(rule.get("timeouts"))
        n = _retry_count(retry.get("attempts", 1), f"{at}.retry.attempts") if "retry" in rule else 0
        candidate = MeshRetry(source=f"{where} rule {i + 1}", attempts=n + 1,
                              per_try_timeout=_mesh_duration(f"{at}.timeouts.backendRequest",
                                                             timeouts.get("backendRequest")),
                              timeout=_mesh_duration(f"{at}.timeouts.request", timeouts.get("request")),
                              declared="retry" in rule)
        if best is None or (candidate.attempts, _unbounded(candidate)) > (best.attempts, _unbounded(best)):
            best = candidate
    route.retry = best
    return route


def parse_mesh(obj: dict, source: SourceRef | None = None, default_namespace: str = DEFAULT_NAMESPACE) -> MeshRoute:
    """Read an Istio VirtualService or DestinationRule (networking.istio.io v1, v1beta1, v1alpha3)."""
    kind = str(obj.get("kind"))
    name, ns, _ = object_meta(obj)
    if not name:
        raise ParseError(f"{kind} ?: metadata.name is missing.")
    ns = ns or default_namespace
    spec = _dict(obj.get("spec"))
    where = f"{kind} {ns}/{name}"
    hosts = [str(h) for h in _list(spec.get("hosts"))] if kind == "VirtualService" else (
        [str(spec["host"])] if spec.get("host") else [])
    export_to = [str(x) for x in _list(spec.get("exportTo"))] or None
    route = MeshRoute(kind=kind, namespace=ns, name=name, hosts=hosts, export_to=export_to, source=source)
    if kind == "DestinationRule":
        policy = _dict(spec.get("trafficPolicy"))
        route.outlier_detection = bool(policy.get("outlierDetection"))
        http = _dict(_dict(policy.get("connectionPool")).get("http"))
        mr = http.get("maxRetries")
        route.max_retries = mr if isinstance(mr, int) and not isinstance(mr, bool) else None
        route.retry_budget = _budget_ratio(_dict(http.get("retryBudget")),
                                           f"{where}: spec.trafficPolicy.connectionPool.http")
        return route
    gateways = [str(g) for g in _list(spec.get("gateways"))]
    route.sidecars = not gateways or "mesh" in gateways
    best: MeshRetry | None = None
    for i, r in enumerate(_list(spec.get("http"))):
        r = _dict(r)
        label = f'http route "{r["name"]}"' if r.get("name") else f"http route {i + 1}"
        retry = _route_retry(f"{where} {label}", r, f"{where}: spec.http[{i}]")
        if best is None or (retry.attempts, _unbounded(retry)) > (best.attempts, _unbounded(best)):
            best = retry
    route.retry = best
    return route
