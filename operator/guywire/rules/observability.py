"""Observability rules: a workload others depend on can be probed, scraped, scheduled and traced to an image."""
from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Iterable, Iterator

from ..model.baseline import FLOATING_TAGS

from ..model.severity import Severity
from ..model.selectors import labels_match, selector_matches
from ..views.workload import Container, PodTemplate, Workload
from .base import Context, Issue, rule

if TYPE_CHECKING:
    from ..model.policy import ObservabilityRules

SCRAPE_ANNOTATION = "prometheus.io/scrape"
KSERVE_SCRAPE_ANNOTATION = "serving.kserve.io/enable-prometheus-scraping"


# What says a container listens, besides a declared port. Inference servers often declare none and listen where
# their flags, environment or image say.
PORT_FLAGS = re.compile(r"(?:^|\s)(--(?:port|http[-_]port|grpc[-_]port|rest[-_]port|rest[-_]api[-_]port|server[-_]port|"
                        r"listen[-_]port|api[-_]port))(?:=|\s+)(\d+|\$\(?\{?\w+\}?\)?)(?=\s|$)")
PORT_ENV = frozenset({"PORT", "HTTP_PORT", "GRPC_PORT", "SERVER_PORT", "LISTEN_PORT", "API_PORT", "OLLAMA_HOST"})
# image repository (its last one or two path segments) -> the server it runs
SERVER_IMAGES = {
    "vllm/vllm-openai": "vLLM", "vllm-openai": "vLLM", "vllm/vllm-tpu": "vLLM",
    "huggingface/text-generation-inference": "TGI", "text-generation-inference": "TGI",
    "huggingface/text-embeddings-inference": "TEI", "text-embeddings-inference": "TEI",
    "nvidia/tritonserver": "Triton", "tritonserver": "Triton",
    "lmsysorg/sglang": "SGLang", "ollama/ollama": "Ollama",
    "kserve/sklearnserver": "KServe runtime", "kserve/xgbserver": "KServe runtime",
    "kserve/lgbserver": "KServe runtime", "kserve/pmmlserver": "KServe runtime",
    "kserve/paddleserver": "KServe runtime", "kserve/huggingfaceserver": "KServe runtime",
    "kserve/torchserve-kfs": "KServe runtime", "pytorch/torchserve": "TorchServe",
    "tensorflow/serving": "TensorFlow Serving", "seldonio/mlserver": "MLServer",
}
# commands that start a server whatever the image (a generic CUDA or Python image)
SERVER_COMMANDS = re.compile(r"(?:^|[\s/])(vllm\s+serve|vllm\.entrypoints\.openai\.api_server|text-generation-launcher|"
                             r"tritonserver|sglang\.launch_server|ollama\s+serve)(?=\s|$)")


def _repository(image: str) -> str:
    """The image's repository path without registry host, tag or digest (nvcr.io/nvidia/tritonserver:24.08 ->
    nvidia/tritonserver)."""
    ref = image.split("@", 1)[0]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    parts[-1] = parts[-1].split(":", 1)[0]
    return "/".join(parts).lower()


def serving_signal(c: Container) -> str | None:
    """Why a container without a declared port listens all the same, or None: a port flag in its command or
    args, a port variable in its env (named, its value never shown), an inference server's image, or a
    command that starts one."""
    line = " ".join(c.args)
    m = PORT_FLAGS.search(line)
    if m:
        return f"{m.group(1)}={m.group(2)} in its args"
    for name, _ in c.env:
        if name in PORT_ENV:
            return f"env {name}"
    if c.image:
        repo = _repository(c.image)
        parts = repo.split("/")
        server = SERVER_IMAGES.get("/".join(parts[-2:])) or SERVER_IMAGES.get(parts[-1])
        if server:
            return f"{server} image {repo}"
    m = SERVER_COMMANDS.search(line)
    if m:
        return f"its command runs {m.group(1)}"
    return None


def _served_templates(w: Workload, ctx: Context) -> Iterator[PodTemplate]:
    """Templates whose pods take traffic: a container declares a port or listens all the same
    (:func:`serving_signal`), a Service selects the pods, or (for a one-template workload) another workload
    calls it by name."""
    if not w.long_running:
        return
    selectors = [svc.selector for skey in ctx.graph.selected_by.get(w.key, ())
                 if (svc := ctx.inventory.services.get(skey)) is not None and svc.backend is None]
    called = bool(ctx.graph.callers.get(w.key)) and len(w.templates) == 1
    for t in w.templates:
        if called or any(c.ports for c in t.main_containers) or any(
                labels_match(sel, t.labels) for sel in selectors) or any(
                serving_signal(c) for c in t.main_containers):
            yield t


def _probe_targets(w: Workload, ctx: Context) -> Iterator[tuple[PodTemplate, Container, str | None]]:
    """The containers to probe, with the signal that says a portless one serves (None: a port, or no container
    says it serves and the template does)."""
    for t in _served_templates(w, ctx):
        mains = [c for c in t.main_containers]
        listening = [(c, None if c.ports else serving_signal(c)) for c in mains]
        listening = [(c, why) for c, why in listening if c.ports or why]
        for c, why in listening or [(c, None) for c in mains]:
            yield t, c, why


@rule(id="GW-OBS-001", name="missing-readiness-probe", severity=Severity.MEDIUM, section="observability",
      switch="readiness_probe",
      summary="A container that serves traffic has no readiness probe.",
      remediation="Add a readinessProbe (an HTTP GET on the health endpoint, or a TCP check on the serving port) "
                  "so the Service only routes to pods that can answer.")
def missing_readiness_probe(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """Without a readiness probe a pod receives traffic the moment its process starts: an inference
    server still loading a model answers with errors that every caller then retries. Checked on the
    pod templates of long-running workloads that serve: a Service selects the pods, (one-template
    workloads) another workload calls it by name, or a main container listens. A container listens
    when it declares a containerPort, or, without one, when

    - its command or args carry a port flag: `--port`, `--http-port`, `--grpc-port`, `--rest-port`,
      `--rest-api-port`, `--server-port`, `--listen-port`, `--api-port` (or with `_`), as
      `--port=8000` or `--port 8000`, a number or `$(VAR)` (`--master_port` and `--metrics-port`
      are not serving ports);
    - its env sets `PORT`, `HTTP_PORT`, `GRPC_PORT`, `SERVER_PORT`, `LISTEN_PORT`, `API_PORT` or
      `OLLAMA_HOST` (the message names the variable, never its value);
    - its image is an inference server's: vLLM (`vllm/vllm-openai`), TGI and TEI
      (`huggingface/text-generation-inference`, `text-embeddings-inference`), Triton
      (`nvidia/tritonserver`), SGLang (`lmsysorg/sglang`), Ollama (`ollama/ollama`), the KServe
      runtimes (`kserve/sklearnserver`, `huggingfaceserver`, `xgbserver`, ...), TorchServe,
      TensorFlow Serving, MLServer, whatever the registry;
    - its command starts one: `vllm serve`, `vllm.entrypoints.openai.api_server`,
      `text-generation-launcher`, `tritonserver`, `sglang.launch_server`, `ollama serve`.

    The probe is asked of the containers that listen (all main containers when none does), and the
    message names the signal when no port was declared. Not checked where the platform probes the
    pods: KServe model servers, KubeRay (which injects probes) and Knative."""
    if w.platform_probes:
        return
    for t, c, why in _probe_targets(w, ctx):
        if not c.readiness_probe:
            serves = f" and listens ({why})" if why else ""
            yield Issue(f"has no readinessProbe{serves}, so traffic reaches it before it can answer. "
                        "Add a readinessProbe on its serving port or health endpoint.",
                        location=w.container_location(t, c))


@rule(id="GW-OBS-002", name="missing-liveness-probe", severity=Severity.LOW, section="observability",
      switch="liveness_probe",
      summary="A long-running container has no liveness probe.",
      remediation="Add a livenessProbe that fails only when the process is stuck (a cheap /health endpoint), "
                  "with a startupProbe for slow model loads.")
def missing_liveness_probe(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """A process that deadlocks (a wedged CUDA context, an exhausted thread pool) keeps its pod
    Running forever unless something restarts it. Jobs, CronJobs and training jobs are not checked:
    they end. Nor are KServe model servers and Knative Services, whose platform probes the pods."""
    if not w.long_running or w.platform_probes:
        return
    for t in w.templates:
        for c in t.main_containers:
            if not c.liveness_probe:
                yield Issue("has no livenessProbe, so a hung process is never restarted. Add a livenessProbe "
                            "(and a startupProbe if it loads a model).", location=w.container_location(t, c))


def _metrics_port(c: Container) -> bool:
    return any(p.name == "metrics" or p.name.endswith("-metrics") or p.name.startswith("metrics-") for p in c.ports)


@rule(id="GW-OBS-003", name="metrics-not-exposed", severity=Severity.MEDIUM, section="observability",
      switch="metrics",
      summary="A long-running workload exposes no metrics: no prometheus.io/scrape, no metrics port, no monitor.",
      remediation='Name the metrics port "metrics" (or "<x>-metrics"), add the prometheus.io/scrape annotation, or '
                  "select the workload with a ServiceMonitor or PodMonitor.")
def metrics_not_exposed(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """Latency, error and saturation figures are how anyone finds out that a dependency is the slow
    one. Accepted: the prometheus.io/scrape annotation on the pod template or workload (or KServe's
    serving.kserve.io/enable-prometheus-scraping), a container
    port named metrics / *-metrics / metrics-*, a ServiceMonitor selecting a Service that selects
    the pods, or a PodMonitor / PodMonitoring selecting the pods. Knative Services are exported by
    their queue-proxy and not checked."""
    if not w.long_running or w.platform_metrics:
        return
    for t in w.templates:
        if t.annotations.get(SCRAPE_ANNOTATION, "").lower() == "true":
            return
    if any(w.annotations.get(a, "").lower() == "true" for a in (SCRAPE_ANNOTATION, KSERVE_SCRAPE_ANNOTATION)):
        return
    if any(_metrics_port(c) for c in w.containers):
        return
    services = ctx.graph.selected_by.get(w.key, set())
    for m in ctx.monitors_in(w.namespace):
        if m.kind == "ServiceMonitor":
            for skey in services:
                svc = ctx.inventory.services.get(skey)
                if svc and selector_matches(m.selector, svc.labels):
                    return
        elif any(selector_matches(m.selector, t.labels) for t in w.templates):
            return
    yield Issue('exposes no metrics: no port named "metrics", no prometheus.io/scrape annotation and no '
                'ServiceMonitor or PodMonitor selecting it. Name the metrics port "metrics" or add the annotation.')


@rule(id="GW-OBS-004", name="missing-resources", severity=Severity.MEDIUM, section="observability",
      switch="resources",
      summary="A container has no cpu or memory request, or no memory limit.",
      remediation="Set resources.requests.cpu, resources.requests.memory and resources.limits.memory on every "
                  "container.")
def missing_resources(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """Requests let the scheduler place pods where they fit; a memory limit keeps one leaking pod from
    evicting its neighbours. A CPU limit is not required: it throttles latency-sensitive servers.
    A limit without a request counts as the request, as Kubernetes defaults the one to the other."""
    for t in w.templates:
        for c in t.containers:
            missing = [name for name, ok in (("requests.cpu", "cpu" in c.requests or "cpu" in c.limits),
                                             ("requests.memory", "memory" in c.requests or "memory" in c.limits),
                                             ("limits.memory", "memory" in c.limits)) if not ok]
            if missing:
                yield Issue(f"sets no {', '.join(missing)}. Set cpu and memory requests and a memory limit.",
                            location=w.container_location(t, c))


@rule(id="GW-OBS-005", name="incomplete-gpu-resources", severity=Severity.HIGH, section="observability",
      switch="gpu_resources",
      summary="A GPU container requests GPUs without a limit, or without a memory limit.",
      remediation="Put the GPU count in resources.limits (requests must equal limits for GPUs) and set "
                  "resources.limits.memory.")
def incomplete_gpu_resources(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """GPUs are extended resources: Kubernetes schedules them from limits, and a request without a
    matching limit is refused or silently ignored depending on the version. A GPU pod without a
    memory limit can take a whole node's host memory while it loads weights."""
    for t in w.templates:
        for c in t.containers:
            gpus = c.gpu_resources
            if not gpus:
                continue
            for res in gpus:
                if res not in c.limits:
                    yield Issue(f"requests {res}={c.requests.get(res)} without a limit. Put {res} in "
                                "resources.limits (equal to the request).", location=w.container_location(t, c))
                elif res in c.requests and str(c.requests[res]) != str(c.limits[res]):
                    yield Issue(f"requests {res}={c.requests[res]} but limits it to {c.limits[res]}; GPU requests "
                                "must equal limits. Make them equal.", location=w.container_location(t, c))
            if "memory" not in c.limits:
                yield Issue(f"uses {', '.join(f'{k}={v}' for k, v in gpus.items())} without a memory limit. "
                            "Set resources.limits.memory.", location=w.container_location(t, c))


@rule(id="GW-OBS-006", name="missing-labels", severity=Severity.LOW, section="observability",
      summary="Labels the policy requires are missing.",
      remediation="Add the labels to metadata.labels (or the pod template's labels), e.g. "
                  "app.kubernetes.io/name.")
def missing_labels(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """Dashboards, cost reports and on-call routing join on labels; a workload without them is
    invisible to all three. A label counts when it is on the workload or on its pod template."""
    present = set(w.labels) | set(w.pod_labels)
    missing = [lbl for lbl in params.required_labels if lbl not in present]
    if missing:
        yield Issue(f"has no label {', '.join(missing)}. Add {'it' if len(missing) == 1 else 'them'} to "
                    "metadata.labels.")


# $IMAGE, ${REGISTRY}/app, $(IMAGE), <image>, {{ .Values.image }}, __IMAGE__, %IMAGE%: text a pipeline
# substitutes before applying, not a reference a node can pull
_PLACEHOLDER = re.compile(r"\$[{(]?[A-Za-z_]|<[^<>]*>|\{\{|__[A-Za-z0-9_]+__|%[A-Za-z_][A-Za-z0-9_]*%")
# REPLACE_ME, IMAGE_PLACEHOLDER, YOUR_IMAGE:1.0: a whole reference, no registry or path, in capitals, which an
# image name never is (repository names are lower case)
_CAPITALS = re.compile(r"[A-Z][A-Z0-9_]*(?::[A-Za-z0-9_.-]+)?")


def image_is_placeholder(image: str) -> bool:
    """Whether ``image`` still holds a placeholder anywhere (``$IMAGE_URL``, ``<image>``, ``${...}``,
    ``$(IMAGE)``, ``<REPO>/app:1.0``) or is one in capitals (``REPLACE_ME``)."""
    return bool(_PLACEHOLDER.search(image) or _CAPITALS.fullmatch(image))


def reference_is_placeholder(image: str) -> bool:
    """Whether a placeholder hides what decides mutability: the image's last path component, its name and tag
    or digest (``$IMAGE_URL``, ``app:${TAG}``, ``<image>``). ``<REPO>/app:1.0`` and ``gcr.io/<PROJECT>/app:latest``
    keep a literal tag, which is judged like any other whatever registry the pipeline puts in front of it."""
    return bool(_PLACEHOLDER.search(image.rsplit("/", 1)[-1]) or _CAPITALS.fullmatch(image))


def mutable_because(image: str, floating: Iterable[str] = FLOATING_TAGS) -> str | None:
    """Why ``image`` can change under the same name: "" when it has no tag, else the floating-tag pattern its
    tag matches; None when it is pinned (a digest always pins)."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return ""
    tag = last.rsplit(":", 1)[1]
    return next((p for p in floating if fnmatch.fnmatchcase(tag, p)), None)


def image_is_mutable(image: str, floating: Iterable[str] = FLOATING_TAGS) -> bool:
    return mutable_because(image, floating) is not None


@rule(id="GW-OBS-007", name="mutable-image", severity=Severity.MEDIUM, section="observability",
      switch=None,
      summary="An image is referenced by a floating tag (:latest, :nightly, :main...) or without a tag, and without "
              "a digest.",
      remediation="Pin the image to a version tag (vllm/vllm-openai:v0.6.3) or a digest (@sha256:...).")
def mutable_image(w: Workload, params: ObservabilityRules, ctx: Context) -> Iterator[Issue]:
    """A floating tag means every node may run a different build, a rollback redeploys the broken one,
    and nobody can tell which version served a bad answer. Floating: no tag at all, or a tag matching
    one of the policy's floatingTags globs (default latest, latest-*, *-latest, nightly, nightly-*,
    main, master, edge, dev, stable: rayproject/ray:latest-gpu and vllm/vllm-openai:nightly move as
    :latest does). The message names the pattern that matched. A digest (@sha256:...) always pins.
    A placeholder image (``$IMAGE_URL``, ``${...}``, ``$(IMAGE)``, ``<image>``, ``{{ ... }}``, or a bare name in
    capitals such as ``REPLACE_ME``, which no repository name is) means the manifest was
    checked before it was rendered: it is reported once per workload, Low, saying to render first, never
    as a mutable tag. Where the placeholder is only in the registry or repository path and the tag is
    literal (``<REPO>/app:1.0``, ``gcr.io/<PROJECT>/app:latest``), the tag is judged as usual. Skipped when mutableImageTags is true."""
    if params.mutable_image_tags:
        return
    floating = params.floating_tags
    placeholders: dict[str, list[str]] = {}
    for t in w.templates:
        for c in t.containers:
            if not c.image:
                continue
            if reference_is_placeholder(c.image):
                placeholders.setdefault(c.image, []).append(c.name)
                continue
            why = mutable_because(c.image, floating)
            if why is None:
                continue
            note = (" (its repository is still a placeholder: render the manifest before applying it)"
                    if image_is_placeholder(c.image) else "")
            if why == "":
                yield Issue(f'uses image "{c.image}" with no tag, which means :latest and can change under the same '
                            f"name{note}. Pin a version tag or a digest.", location=w.container_location(t, c))
            else:
                tag = c.image.rsplit(":", 1)[1]
                yield Issue(f'uses image "{c.image}", whose tag "{tag}" matches the floating tag pattern "{why}" and '
                            f"can change under the same name{note}. Pin a version tag or a digest.",
                            location=w.container_location(t, c))
    if placeholders:  # once per workload, Low: the manifest is a template, its images are not known yet
        shown = "; ".join(f'"{image}" (container{"s" if len(names) > 1 else ""} {", ".join(names)})'
                          for image, names in placeholders.items())
        yield Issue(f"uses a placeholder image, {shown}, not an image a node can pull. Render the manifest first "
                    "(envsubst, kustomize, helm template) and check what is applied.", severity=Severity.LOW)
