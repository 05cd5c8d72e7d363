"""Deterministic synthetic AI clusters for the benchmarks.

``generate(n, seed)`` returns a :class:`Cluster` of plain dicts, shaped as the
Kubernetes API returns them: Namespaces, Deployments / StatefulSets / Jobs with
pod templates, Services selecting them, a ServiceMonitor per team namespace.
The same ``n`` and ``seed`` always give the same cluster.

Each team namespace holds about 100 workloads in layers, and calls flow down:

    gateways -> orchestrators -> services (LLMs on GPUs, embedders, rerankers,
    retrievers, tools) -> stores (vector DBs, caches, databases, StatefulSets)

plus workers (Deployments without a Service) and batch Jobs (ingest, fine-tune,
eval) that call services and stores. Each caller declares 1 to 6 dependencies in
``guywire.dev/depends-on`` (names written as ``name``, ``name:port``,
``name.ns`` or ``name.ns.svc.cluster.local:port``), a default
``guywire.dev/retry`` and sometimes a per-dependency override. A shared
``platform-data`` namespace holds stores several teams call; a few
``external:`` hosts; one back edge in every fifth team makes a cycle; about one
workload in twenty names a Service in an environment URL it did not declare
(an inferred edge), and a few declare a name that resolves to nothing.
Probes, resources, pinned tags and labels are present on most containers and
missing on a realistic minority, so every observability rule fires somewhere.

Run as a script to write the cluster as multi-document YAML, one file per
namespace: ``python bench/synth.py 1000 /tmp/cluster``.
"""
from __future__ import annotations

import argparse
import os
import random
from dataclasses import dataclass, field
from typing import Iterator

TEAM_SIZE = 100
SHARED_NS = "platform-data"
SHARED_STORES = 24

# (share of a team's workloads, tier) in call order; a tier calls only tiers after it
LAYOUT = (
    ("gateway", 0.04),
    ("orchestrator", 0.14),
    ("service", 0.46),
    ("store", 0.16),
    ("worker", 0.10),
    ("job", 0.10),
)
CALLS = {  # tier -> tiers it may call, with weights
    "gateway": (("orchestrator", 6), ("service", 1)),
    "orchestrator": (("service", 6), ("store", 1), ("shared", 1)),
    "service": (("service-lower", 2), ("store", 3), ("shared", 1)),
    "worker": (("service", 3), ("store", 2), ("shared", 1)),
    "job": (("service", 2), ("store", 2), ("shared", 1)),
}
SERVICE_KINDS = (  # (name prefix, image, port, gpu count or 0)
    ("llm", "vllm/vllm-openai:v0.6.3", 8000, 1),
    ("llm-large", "vllm/vllm-openai:v0.6.3", 8000, 8),
    ("tgi", "ghcr.io/huggingface/text-generation-inference:2.4.0", 8080, 2),
    ("triton", "nvcr.io/nvidia/tritonserver:24.08-py3", 8000, 1),
    ("embedder", "ghcr.io/huggingface/text-embeddings-inference:1.5", 8080, 1),
    ("reranker", "ghcr.io/huggingface/text-embeddings-inference:1.5", 8080, 0),
    ("retriever", "registry.example.com/ml/retriever:1.14.2", 8080, 0),
    ("tools", "registry.example.com/ml/tool-runner:0.9.1", 9000, 0),
    ("guardrails", "registry.example.com/ml/guardrails:2.3.0", 8000, 0),
)
STORE_KINDS = (  # (name prefix, image, port)
    ("qdrant", "qdrant/qdrant:v1.12.1", 6333),
    ("milvus", "milvusdb/milvus:v2.4.13", 19530),
    ("redis", "redis:7.4.1", 6379),
    ("postgres", "postgres:16.4", 5432),
    ("weaviate", "cr.weaviate.io/semitechnologies/weaviate:1.27.0", 8080),
    ("elasticsearch", "docker.elastic.co/elasticsearch/elasticsearch:8.15.3", 9200),
)
EXTERNAL_HOSTS = ("api.openai.com", "api.anthropic.com", "s3.amazonaws.com", "storage.googleapis.com",
                  "huggingface.co")
BACKOFFS = ("exponential", "exponential", "exponential-jitter", "linear", "fixed")
# per-try timeouts (seconds) by tier; callers higher up wait longer, with some inversions
PER_TRY = {"gateway": (30, 60, 10), "orchestrator": (10, 20, 5), "service": (2, 5, 1),
           "worker": (5, 10, 30), "job": (60, 120, 30)}


@dataclass
class Cluster:
    """A synthetic cluster as plain dicts."""

    seed: int
    namespaces: list[dict] = field(default_factory=list)
    workloads: list[dict] = field(default_factory=list)
    services: list[dict] = field(default_factory=list)
    monitors: list[dict] = field(default_factory=list)

    def objects(self) -> Iterator[dict]:
        yield from self.namespaces
        yield from self.services
        yield from self.monitors
        yield from self.workloads

    def by_namespace(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for obj in self.objects():
            ns = obj["metadata"].get("namespace") or obj["metadata"]["name"]
            out.setdefault(ns, []).append(obj)
        return out


@dataclass
class _Spec:
    """A workload before it becomes a dict: enough to let callers name it."""

    ns: str
    name: str
    tier: str
    kind: str
    image: str
    port: int | None
    gpus: int = 0
    service: str | None = None  # the Service name callers use, None when none selects it
    deps: list[str] = field(default_factory=list)  # depends-on items as written
    env: list[tuple[str, str]] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)  # retry.<dep> -> value
    dep_keys: set = field(default_factory=set)


def _weighted(rng: random.Random, choices: tuple) -> str:
    total = sum(w for _, w in choices)
    x = rng.uniform(0, total)
    for name, w in choices:
        x -= w
        if x <= 0:
            return name
    return choices[-1][0]


def _fan_out(rng: random.Random) -> int:
    # 1..6, most callers have 2 or 3 dependencies
    return rng.choices((1, 2, 3, 4, 5, 6), weights=(18, 30, 25, 14, 8, 5))[0]


def _ref(callee: _Spec, caller_ns: str, rng: random.Random) -> str:
    """How a caller writes a dependency on ``callee`` in depends-on."""
    target = callee.service or callee.name
    port = callee.port
    if callee.ns == caller_ns:
        return target if rng.random() < 0.7 or port is None else f"{target}:{port}"
    form = rng.random()
    if form < 0.5:
        return f"{target}.{callee.ns}"
    if form < 0.8 or port is None:
        return f"{target}.{callee.ns}.svc.cluster.local"
    return f"{target}.{callee.ns}.svc.cluster.local:{port}"


def _url(callee: _Spec, caller_ns: str) -> str:
    target = callee.service or callee.name
    host = target if callee.ns == caller_ns else f"{target}.{callee.ns}.svc.cluster.local"
    scheme = "grpc" if callee.port in (19530, 6334) else "http"
    return f"{scheme}://{host}:{callee.port}" if callee.port else f"{scheme}://{host}"


def _env_name(callee: _Spec) -> str:
    return (callee.service or callee.name).upper().replace("-", "_") + "_URL"


def _retry(rng: random.Random, tier: str) -> str | None:
    """A default retry annotation; None (no retry declared) for some callers."""
    r = rng.random()
    if r < 0.10:
        return None
    attempts = rng.choices((1, 2, 3, 4, 5), weights=(15, 25, 40, 12, 8))[0]
    lo, hi, odd = PER_TRY.get(tier, (5, 10, 2))
    per_try = odd if rng.random() < 0.08 else rng.choice((lo, hi))
    parts = [f"attempts={attempts}"]
    if rng.random() < 0.92:
        parts.append(f"perTryTimeout={per_try}s")
    if rng.random() < 0.80:
        parts.append(f"timeout={per_try * attempts + rng.choice((1, 2, 5))}s")
    if attempts > 1 and rng.random() < 0.88:
        parts.append(f"backoff={rng.choice(BACKOFFS)}")
    return ", ".join(parts)


def _container(rng: random.Random, spec: _Spec, name: str) -> dict:
    c: dict = {"name": name, "image": spec.image}
    if rng.random() < 0.05:  # mutable references
        c["image"] = spec.image.rsplit(":", 1)[0] + rng.choice((":latest", ""))
    if spec.port:
        c["ports"] = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
        if rng.random() < 0.45:
            c["ports"].append({"name": "metrics", "containerPort": 9090})
    if spec.tier == "job":
        c["command"] = ["python", "-m", rng.choice(("ingest", "finetune", "evaluate", "reindex"))]
    probe_path = {"httpGet": {"path": "/health", "port": spec.port}} if spec.port else \
        {"exec": {"command": ["/bin/sh", "-c", "test -f /tmp/alive"]}}
    if spec.tier != "job":
        if rng.random() < 0.85:
            c["readinessProbe"] = dict(probe_path, periodSeconds=10)
        if rng.random() < 0.75:
            c["livenessProbe"] = dict(probe_path, periodSeconds=20, failureThreshold=6)
        if spec.gpus and rng.random() < 0.6:
            c["startupProbe"] = dict(probe_path, periodSeconds=10, failureThreshold=60)
    res: dict = {}
    if rng.random() < 0.88:
        cpu = rng.choice(("250m", "500m", "1", "2", "4", "8"))
        mem = rng.choice(("512Mi", "1Gi", "2Gi", "8Gi", "32Gi", "64Gi"))
        res["requests"] = {"cpu": cpu, "memory": mem}
        if rng.random() < 0.85:
            res["limits"] = {"memory": mem}
            if rng.random() < 0.3:
                res["limits"]["cpu"] = cpu
    if spec.gpus:
        res.setdefault("limits", {})["nvidia.com/gpu"] = str(spec.gpus)
        if rng.random() < 0.5:
            res.setdefault("requests", {})["nvidia.com/gpu"] = str(spec.gpus)
    if res:
        c["resources"] = res
    env = [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME",
           "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    env += [{"name": k, "value": v} for k, v in spec.env]
    if spec.gpus:
        env.append({"name": "MODEL_ID", "value": rng.choice(("meta-llama/Llama-3.1-8B-Instruct",
                                                             "mistralai/Mistral-7B-Instruct-v0.3",
                                                             "google/gemma-2-9b-it"))})
    c["env"] = env
    return c


def _workload(rng: random.Random, spec: _Spec, team: str) -> dict:
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/instance": spec.name,
              "app.kubernetes.io/part-of": team, "tier": spec.tier}
    meta_labels = dict(labels)
    if rng.random() < 0.06:  # some workloads carry no recommended labels at all
        meta_labels = {"app": spec.name}
        labels = {"app": spec.name, "app.kubernetes.io/instance": spec.name}
    annotations: dict[str, str] = {}
    if spec.deps:
        annotations["guywire.dev/depends-on"] = ", ".join(spec.deps)
        retry = _retry(rng, spec.tier)
        if retry:
            annotations["guywire.dev/retry"] = retry
        for dep, value in spec.overrides.items():
            annotations[f"guywire.dev/retry.{dep}"] = value
    if rng.random() < 0.02:
        annotations["guywire.dev/exempt"] = "GW-OBS-002"
        annotations["guywire.dev/exempt-reason"] = "vendor image has no health endpoint"
    containers = [_container(rng, spec, spec.name.rsplit("-", 1)[0])]
    init: list[dict] = []
    if spec.gpus and rng.random() < 0.5:
        init.append({"name": "fetch-model", "image": "registry.example.com/ml/model-fetcher:0.4.0",
                     "command": ["fetch", "--to", "/models"],
                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}})
    if spec.tier in ("gateway", "orchestrator") and rng.random() < 0.3:
        containers.append({"name": "otel-collector", "image": "otel/opentelemetry-collector-contrib:0.111.0",
                           "ports": [{"name": "otlp", "containerPort": 4317}],
                           "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                         "limits": {"memory": "256Mi"}},
                           "readinessProbe": {"tcpSocket": {"port": 4317}},
                           "livenessProbe": {"tcpSocket": {"port": 4317}}})
    pod_meta: dict = {"labels": labels}
    if rng.random() < 0.2:
        pod_meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
    pod_spec: dict = {"containers": containers}
    if init:
        pod_spec["initContainers"] = init
    if spec.gpus:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": rng.choice(("NVIDIA-H100-80GB-HBM3",
                                                                          "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"))}
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    template = {"metadata": pod_meta, "spec": pod_spec}
    obj_spec: dict
    if spec.kind == "Job":
        pod_spec["restartPolicy"] = "Never"
        obj_spec = {"backoffLimit": 2, "template": template}
    else:
        obj_spec = {"replicas": rng.choice((1, 2, 3, 3, 5)),
                    "selector": {"matchLabels": {"app.kubernetes.io/instance": spec.name}},
                    "template": template}
        if spec.kind == "StatefulSet":
            obj_spec["serviceName"] = spec.service or spec.name
    meta: dict = {"name": spec.name, "namespace": spec.ns, "labels": meta_labels}
    if annotations:
        meta["annotations"] = annotations
    api = "batch/v1" if spec.kind == "Job" else "apps/v1"
    return {"apiVersion": api, "kind": spec.kind, "metadata": meta, "spec": obj_spec}


def _service(spec: _Spec, team: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": spec.service, "namespace": spec.ns,
                         "labels": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": team}},
            "spec": {"selector": {"app.kubernetes.io/instance": spec.name},
                     "ports": [{"name": "http", "port": spec.port, "targetPort": spec.port}]}}


def _monitor(ns: str, team: str) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": f"{team}-services", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": team, "monitoring": "enabled"}},
                     "endpoints": [{"port": "http", "path": "/metrics"}]}}


def _make_specs(rng: random.Random, ns: str, count: int) -> dict[str, list[_Spec]]:
    tiers: dict[str, list[_Spec]] = {t: [] for t, _ in LAYOUT}
    sizes = [max(1, round(count * share)) for _, share in LAYOUT]
    sizes[2] += count - sum(sizes)  # services absorb the rounding
    for (tier, _), size in zip(LAYOUT, sizes):
        for i in range(size):
            if tier == "service":
                prefix, image, port, gpus = SERVICE_KINDS[rng.randrange(len(SERVICE_KINDS))]
                kind = "Deployment"
            elif tier == "store":
                prefix, image, port = STORE_KINDS[rng.randrange(len(STORE_KINDS))]
                gpus, kind = 0, "StatefulSet"
            elif tier == "gateway":
                prefix, image, port, gpus, kind = "gateway", "envoyproxy/envoy:v1.31.2", 8080, 0, "Deployment"
            elif tier == "orchestrator":
                prefix = rng.choice(("rag-orchestrator", "agent", "chat-api", "router"))
                image, port, gpus, kind = "registry.example.com/ml/orchestrator:3.2.0", 8000, 0, "Deployment"
            elif tier == "worker":
                prefix = rng.choice(("indexer", "queue-consumer", "feedback-worker"))
                image, port, gpus, kind = "registry.example.com/ml/worker:1.8.4", None, 0, "Deployment"
            else:
                prefix = rng.choice(("ingest", "finetune", "eval", "reindex"))
                image, port, kind = "registry.example.com/ml/batch:2.0.1", None, "Job"
                gpus = 1 if prefix == "finetune" else 0
            name = f"{prefix}-{i}"
            spec = _Spec(ns=ns, name=name, tier=tier, kind=kind, image=image, port=port, gpus=gpus)
            if port is not None:
                spec.service = name if rng.random() < 0.8 else f"{name}-svc"
            tiers[tier].append(spec)
    return tiers


def _wire(rng: random.Random, tiers: dict[str, list[_Spec]], shared: list[_Spec], cycle: bool) -> None:
    services = tiers["service"]
    # the first half of the services (front: LLM routers, RAG steps) may call the second half (back:
    # embedders, rerankers, tools); the back half calls only stores, so the layer stays acyclic
    half = len(services) // 2
    for caller_tier, spec_list in tiers.items():
        if caller_tier not in CALLS:
            continue
        for idx, caller in enumerate(spec_list):
            for _ in range(_fan_out(rng)):
                where = _weighted(rng, CALLS[caller_tier])
                if where == "service-lower":
                    pool = services[half:] if idx < half else []
                elif where == "shared":
                    pool = shared
                else:
                    pool = tiers[where]
                if not pool:
                    pool = tiers["store"] or shared
                callee = pool[rng.randrange(len(pool))]
                key = (callee.ns, callee.name)
                if key in caller.dep_keys or callee is caller:
                    continue
                caller.dep_keys.add(key)
                caller.deps.append(_ref(callee, caller.ns, rng))
                if rng.random() < 0.5:  # configured by env as well: an inferred edge that was declared
                    caller.env.append((_env_name(callee), _url(callee, caller.ns)))
                if callee.tier == "store" and rng.random() < 0.3:
                    caller.overrides[callee.service or callee.name] = "attempts=1, timeout=500ms"
            if caller_tier in ("orchestrator", "service") and rng.random() < 0.06:
                caller.deps.append(f"external:{rng.choice(EXTERNAL_HOSTS)}")
            if rng.random() < 0.05:  # an env URL naming a Service the workload did not declare
                pool = [s for s in tiers["store"] + services if (s.ns, s.name) not in caller.dep_keys
                        and s is not caller and s.port]
                if pool:
                    callee = pool[rng.randrange(len(pool))]
                    caller.env.append((_env_name(callee), _url(callee, caller.ns)))
            if rng.random() < 0.01:  # a typo: resolves to nothing
                caller.deps.append(f"{caller.name}-typo-dependency")
    if cycle and tiers["orchestrator"] and services:
        # a service calls back into an orchestrator that (transitively) calls it
        orch = tiers["orchestrator"][0]
        called = [s for s in services if (s.ns, s.name) in orch.dep_keys]
        if called:
            back = called[0]
            back.deps.append(_ref(orch, back.ns, rng))
            back.dep_keys.add((orch.ns, orch.name))


def iter_objects(n: int, seed: int = 42) -> Iterator[dict]:
    """The objects of ``generate(n, seed)`` one at a time (Namespaces and monitors first), without holding them all.

    For measuring what the engine alone keeps in memory: a consumer that turns each object into a view
    never has the whole cluster as dicts at once.
    """
    rng = random.Random(seed)
    shared: list[_Spec] = []
    n_shared = min(SHARED_STORES, max(2, n // 400))
    for i in range(n_shared):
        prefix, image, port = STORE_KINDS[i % len(STORE_KINDS)]
        shared.append(_Spec(ns=SHARED_NS, name=f"shared-{prefix}-{i}", tier="store", kind="StatefulSet",
                            image=image, port=port, service=f"shared-{prefix}-{i}"))
    remaining = max(0, n - n_shared)
    teams = max(1, round(remaining / TEAM_SIZE))
    all_specs: list[tuple[str, _Spec]] = [("platform", s) for s in shared]
    yield {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": SHARED_NS, "labels": {"team": "platform", "tier": "data"}}}
    for t in range(teams):
        team = f"team-{t:03d}"
        ns = f"ml-{team}"
        count = remaining // teams + (1 if t < remaining % teams else 0)
        tiers = _make_specs(rng, ns, count)
        _wire(rng, tiers, shared, cycle=(t % 5 == 0))
        yield {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": {"team": team, "gpu": "true"}}}
        yield _monitor(ns, team)
        all_specs += [(team, s) for specs in tiers.values() for s in specs]
    for team, spec in all_specs:
        yield _workload(rng, spec, team)
        if spec.service:
            svc = _service(spec, team)
            if rng.random() < 0.3:
                svc["metadata"]["labels"]["monitoring"] = "enabled"
            yield svc


def generate(n: int, seed: int = 42) -> Cluster:
    """A cluster of exactly ``n`` workloads (``teams`` of about 100 plus the shared stores)."""
    cluster = Cluster(seed=seed)
    for obj in iter_objects(n, seed):
        kind = obj["kind"]
        if kind == "Namespace":
            cluster.namespaces.append(obj)
        elif kind == "Service":
            cluster.services.append(obj)
        elif kind == "ServiceMonitor":
            cluster.monitors.append(obj)
        else:
            cluster.workloads.append(obj)
    return cluster


def mutate(obj: dict, rng: random.Random) -> dict:
    """A copy of workload ``obj`` with one annotation change: its retry policy, or one dependency dropped or added."""
    meta = dict(obj["metadata"])
    ann = dict(meta.get("annotations") or {})
    meta["annotations"] = ann
    deps = [d.strip() for d in ann.get("guywire.dev/depends-on", "").split(",") if d.strip()]
    choice = rng.random()
    if deps and choice < 0.4:
        ann["guywire.dev/retry"] = (f"attempts={rng.randint(1, 5)}, perTryTimeout={rng.choice((1, 2, 5))}s, "
                                    f"timeout={rng.choice((10, 20, 30))}s, backoff=exponential")
    elif deps and choice < 0.7:
        deps.pop(rng.randrange(len(deps)))
        if deps:
            ann["guywire.dev/depends-on"] = ", ".join(deps)
        else:
            ann.pop("guywire.dev/depends-on")
    else:
        extra = rng.choice((f"external:{rng.choice(EXTERNAL_HOSTS)}", f"shared-redis-{2}.{SHARED_NS}",
                            f"shared-qdrant-{0}.{SHARED_NS}"))
        ann["guywire.dev/depends-on"] = ", ".join(deps + [extra])
        ann.setdefault("guywire.dev/retry", "attempts=2, perTryTimeout=2s, timeout=5s, backoff=exponential")
    out = dict(obj)
    out["metadata"] = meta
    return out


def write_yaml(cluster: Cluster, directory: str) -> list[str]:
    """Write one multi-document YAML file per namespace; return the paths."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for ns, objs in sorted(cluster.by_namespace().items()):
        path = os.path.join(directory, f"{ns}.yaml")
        with open(path, "w") as fh:
            yaml.dump_all(objs, fh, Dumper=dumper, sort_keys=False, default_flow_style=False)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, help="number of workloads")
    ap.add_argument("directory", help="where to write <namespace>.yaml files")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    cluster = generate(args.n, args.seed)
    paths = write_yaml(cluster, args.directory)
    print(f"{len(cluster.workloads)} workloads, {len(cluster.services)} Services, "
          f"{len(cluster.namespaces)} namespaces, {len(cluster.monitors)} monitors -> {len(paths)} files in "
          f"{args.directory}")


if __name__ == "__main__":
    main()
