"""guywire check vs Checkov on real AI manifests: speed, memory and agreement on the checks both have.

    bash bench/setup_checkov.sh            # once: Checkov in its own venv (.cache/checkov-venv)
    python bench/bench_checkov.py          # corpus: ../shared/corpus next to the repository
    python bench/bench_checkov.py --corpus DIR --runs 3 --json out.json

In one run this times, each in a fresh process and best of ``--runs`` for wall time,
with peak RSS from ``/usr/bin/time -v`` (else getrusage(RUSAGE_CHILDREN) of a wrapper):

- ``guywire check CORPUS --format json``
- ``checkov -d CORPUS --framework kubernetes --check CKV_K8S_8,...,CKV_K8S_43 -o json
  --skip-download`` (without ``--quiet``: with it Checkov's JSON leaves out passed
  checks, and a pass must be told apart from "not evaluated")
- parsing the corpus alone with ``yaml.load_all(..., Loader=CSafeLoader)``, in a fresh
  process and in this one, to show what ``guywire check`` costs beyond reading its YAML.

Then it compares verdicts per (file, kind, namespace/name) x check. Checkov's container
checks give one verdict per resource (FAILED at the first failing container, PASSED when
some container passed and none failed, nothing when every container is UNKNOWN), so the
unit is the resource; the containers involved are named for each disagreement. Mapping:

    CKV_K8S_8  liveness probe          GW-OBS-002
    CKV_K8S_9  readiness probe         GW-OBS-001
    CKV_K8S_10 cpu request             GW-OBS-004 (message lists requests.cpu)
    CKV_K8S_11 cpu limit               none: guywire deliberately does not require CPU limits
    CKV_K8S_12 memory request          GW-OBS-004 (requests.memory)
    CKV_K8S_13 memory limit            GW-OBS-004 (limits.memory)
    CKV_K8S_14 image tag not latest    GW-OBS-007
    CKV_K8S_43 image digest            GW-OBS-007 (guywire accepts a pinned tag)

Every disagreement is classified by looking at the object (kind, namespace, containers,
the graph guywire built); the classes are printed with their counts, and any
disagreement no class explains is listed on its own. This prints figures; it does not
pass or fail.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus")
DEFAULT_CHECKOV = os.path.join(REPO, ".cache", "checkov-venv", "bin", "checkov")
CHECKS = ("CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_14",
          "CKV_K8S_43")
CHECK_NAMES = {
    "CKV_K8S_8": "liveness probe", "CKV_K8S_9": "readiness probe", "CKV_K8S_10": "cpu request",
    "CKV_K8S_11": "cpu limit", "CKV_K8S_12": "memory request", "CKV_K8S_13": "memory limit",
    "CKV_K8S_14": "image tag not latest/blank", "CKV_K8S_43": "image digest",
}
# check -> (guywire rule, the text in GW-OBS-004's message that names the field) or None
GUYWIRE_EQUIVALENT: dict[str, tuple[str, str | None] | None] = {
    "CKV_K8S_8": ("GW-OBS-002", None),
    "CKV_K8S_9": ("GW-OBS-001", None),
    "CKV_K8S_10": ("GW-OBS-004", "requests.cpu"),
    "CKV_K8S_11": None,
    "CKV_K8S_12": ("GW-OBS-004", "requests.memory"),
    "CKV_K8S_13": ("GW-OBS-004", "limits.memory"),
    "CKV_K8S_14": ("GW-OBS-007", None),
    "CKV_K8S_43": ("GW-OBS-007", None),
}
# Checkov's own scope (checkov/kubernetes/checks/resource/base_container_check.py)
SHARED = ("CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_14")  # the checks both tools have, as issue 15 counts them
CHECKOV_KINDS = ("CronJob", "Pod", "PodTemplate", "Deployment", "DeploymentConfig", "DaemonSet", "Job", "ReplicaSet",
                 "ReplicationController", "StatefulSet")
CHECKOV_PROBE_SKIPS = ("Job", "CronJob")  # CKV_K8S_8 / 9 leave these out
CHECKOV_IMAGE_RE = re.compile(r"(?:[^\s\/]+\/)?([^\s:]+):?([^\s]*)")  # checkov.common.models.consts


# ----- running the tools ------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    cmd: list[str]
    walls: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # user + system seconds, the process and its children
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def peak_mb(self) -> float:
        return max(self.rss_kb) / 1024 if self.rss_kb else float("nan")

    @property
    def cpu(self) -> float:
        return min(self.cpus) if self.cpus else float("nan")


RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[2:])\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime}')\n"
    "sys.exit(p.returncode)\n"
)


def tool_env(**extra: str) -> dict:
    """The environment both tools run in: bytecode cached (under .cache/pycache, not in the source tree).

    With PYTHONDONTWRITEBYTECODE set (as on some dev machines and CI), an editable install recompiles
    every module on every start; an installed tool never does. Both tools get the same treatment.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(REPO, ".cache", "pycache")
    env.update(extra)
    return env


def measure(label: str, cmd: list[str], runs: int, env: dict | None = None) -> Run:
    """Run ``cmd`` once untimed (warm caches, bytecode), then ``runs`` times: wall time by perf_counter
    around the process, peak RSS from /usr/bin/time -v (else getrusage of a wrapper)."""
    run = Run(label, cmd)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    gnu_time = shutil.which("time") if os.path.exists("/usr/bin/time") else None
    gnu_time = "/usr/bin/time" if os.path.exists("/usr/bin/time") else gnu_time
    for _ in range(runs):
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
            if gnu_time:
                full = [gnu_time, "-v", "-o", rss_file.name] + cmd
            else:
                full = [sys.executable, "-c", RUSAGE_WRAPPER, rss_file.name] + cmd
            t = time.perf_counter()
            proc = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            run.walls.append(time.perf_counter() - t)
            text = open(rss_file.name).read()
        if gnu_time:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
            if m:
                run.rss_kb.append(int(m.group(1)))
            cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text)
            if len(cpu) == 2:
                run.cpus.append(float(cpu[0]) + float(cpu[1]))
        elif len(text.split()) == 2:
            run.rss_kb.append(int(text.split()[0]))
            run.cpus.append(float(text.split()[1]))
        run.exit_code, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr
    return run


def loadavg() -> str:
    """The 1-minute load average: other processes on a small machine skew wall times."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def find_checkov(given: str | None) -> str | None:
    for cand in (given, os.environ.get("CHECKOV"), DEFAULT_CHECKOV, shutil.which("checkov")):
        if cand and os.path.exists(cand):
            return cand
    return None


def yaml_files(corpus: str) -> list[str]:
    from guywire.inputs.loader import iter_files

    return list(iter_files(corpus))


PARSE_ONLY = (
    "import sys, yaml\n"
    "n = 0\n"
    "for name in sys.argv[1:]:\n"
    "    with open(name, 'rb') as fh:\n"
    "        n += sum(1 for d in yaml.load_all(fh.read().decode('utf-8-sig'), Loader=yaml.CSafeLoader) if d)\n"
    "print(n)\n"
)


def parse_in_process(files: list[str], runs: int) -> tuple[float, int]:
    import yaml

    best, docs = float("inf"), 0
    for _ in range(runs):
        t = time.perf_counter()
        docs = 0
        for name in files:
            with open(name, "rb") as fh:
                docs += sum(1 for d in yaml.load_all(fh.read().decode("utf-8-sig"), Loader=yaml.CSafeLoader) if d)
        best = min(best, time.perf_counter() - t)
    return best, docs


def guywire_in_process(corpus: str, runs: int, cluster_per: str = "input") -> float:
    """The CLI's work without interpreter start-up and imports: read, build, evaluate, render JSON."""
    from guywire.cli import build_clusters
    from guywire.inputs.clusters import judge
    from guywire.model.baseline import baseline_policy
    from guywire.render.machine import render_json
    from guywire.render.check_result import Report
    from guywire.model.severity import Severity

    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        clusters, policies, diags, files, skipped = build_clusters([corpus], [], None, cluster_per)
        judged = judge(clusters, policies, [baseline_policy()])
        result = judged.evaluate_all()
        render_json(Report(engine=judged.first, result=result, diagnostics=diags, files=files, skipped_kinds=skipped,
                           fail_on=Severity.LOW, judged=judged))
        best = min(best, time.perf_counter() - t)
    return best


# ----- verdicts ---------------------------------------------------------------------------------
Key = tuple[str, str, str, str]  # (real file, kind, namespace, name)
FAIL, PASS = "FAILED", "PASSED"


def checkov_verdicts(stdout: str) -> tuple[dict[tuple[Key, str], str], dict[tuple[Key, str], list[str]], dict]:
    """(resource, check) -> PASSED/FAILED, the failing keys Checkov evaluated, and its summary."""
    data = json.loads(stdout) if stdout.strip() else {}
    reports = data if isinstance(data, list) else [data]
    verdicts: dict[tuple[Key, str], str] = {}
    keys: dict[tuple[Key, str], list[str]] = {}
    summary: dict = {}
    for rep in reports:
        if rep.get("check_type") not in (None, "kubernetes"):
            continue
        summary = rep.get("summary", summary)
        results = rep.get("results", {})
        for bucket, verdict in (("passed_checks", PASS), ("failed_checks", FAIL)):
            for item in results.get(bucket, []) or []:
                kind, ns, name = item["resource"].split(".", 2)
                key = (os.path.realpath(item.get("file_abs_path") or item["file_path"]), kind, ns, name)
                verdicts[(key, item["check_id"])] = verdict
                keys[(key, item["check_id"])] = list((item.get("check_result") or {}).get("evaluated_keys") or [])
    return verdicts, keys, summary


@dataclass
class Obj:
    """One document of the corpus, as both tools see it."""

    key: Key
    raw: dict
    line: int | None
    view: Any = None  # guywire's Workload, or None
    refused: str | None = None  # guywire's diagnostic when it could not read the object
    engine: Any = None  # the guywire engine that judged this definition (its cluster, or a shadow layer)


@dataclass
class Case:
    check: str
    key: Key
    checkov: str | None  # PASSED / FAILED / None (no verdict)
    guywire: str | None  # PASSED / FAILED / None (not judged)
    obj: Obj | None
    checkov_keys: list[str]
    gw_locations: list[str]


def load_corpus(corpus: str, cluster_per: str = "input"):
    """Every object, guywire's engines over them (as `guywire check` builds them) and its findings.

    Every definition is judged by some engine (its cluster's, or the shadow layer that holds an
    earlier definition of an object read twice): each object is matched with the engine whose
    inventory holds that very definition (same file and line)."""
    from guywire.cli import build_clusters
    from guywire.inputs.clusters import judge
    from guywire.views.inventory import view_of
    from guywire.inputs.loader import load
    from guywire.model.baseline import baseline_policy
    from guywire.views.workload import ParseError

    docs, _, _ = load([corpus])
    objs: dict[Key, Obj] = {}
    for doc in docs:
        raw = doc.obj
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        name = meta.get("name")
        kind = raw.get("kind")
        if not isinstance(kind, str) or not name:
            continue
        key = (os.path.realpath(doc.source.file), kind, str(meta.get("namespace") or "default"), str(name))
        o = Obj(key=key, raw=raw, line=doc.source.line)
        try:
            o.view = view_of(raw, doc.source)
        except ParseError as exc:
            o.refused = str(exc)
        objs.setdefault(key, o)
    clusters, policies, diags, files, skipped = build_clusters([corpus], [], None, cluster_per)
    judged = judge(clusters, policies, [baseline_policy()])
    result = judged.evaluate_all()
    by_workload: dict[tuple, list] = defaultdict(list)
    for f in result.findings:
        src = os.path.realpath(f.source.file) if f.source else ""
        by_workload[(src, f.workload.kind, f.workload.namespace, f.workload.name)].append(f)
    # views from the engines' own inventories, so the graph lookups use the same objects
    for engine in judged.engines:
        for key, w in engine.inventory.workloads.items():
            k = (os.path.realpath(w.source.file) if w.source else "", w.kind, w.namespace, w.name)
            o = objs.get(k)
            if o is not None and key in engine.results and o.line == (w.source.line if w.source else None):
                o.view, o.engine = w, engine
    return objs, judged, result, by_workload, diags


def guywire_verdict(check: str, o: Obj, findings: list) -> tuple[str | None, list[str]]:
    eq = GUYWIRE_EQUIVALENT[check]
    w, engine = o.view, o.engine
    if eq is None or w is None or engine is None or o.refused or engine.skipped(w) or not engine.results.get(w.key):
        return None, []
    rule, text = eq
    if rule in ("GW-OBS-001", "GW-OBS-002") and not w.long_running:
        return None, []  # the rule does not apply to batch kinds
    # A placeholder that hides the tag ($IMAGE_URL, app:${TAG}) is GW-OBS-007's Low "render the manifest first": a
    # GW-OBS-007 finding like any other, so a fail verdict (ex_placeholder classifies where Checkov passes it).
    hits = [f for f in findings if f.rule == rule and (text is None or text in f.message)]
    return (FAIL if hits else PASS), [f.location or "(workload)" for f in hits]


# ----- explaining disagreements -----------------------------------------------------------------
def _pod_spec(raw: dict) -> dict:
    """The pod spec where Checkov looks for it (base_container_check.py's paths per kind)."""
    kind = raw.get("kind")
    try:
        if kind == "Pod":
            pod = raw["spec"]
        elif kind == "CronJob":
            pod = raw["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "PodTemplate":
            pod = raw["template"]["spec"]
        else:
            pod = raw["spec"]["template"]["spec"]
    except (KeyError, TypeError):
        return {}
    return pod if isinstance(pod, dict) else {}


def _containers(raw: dict, init: bool = True) -> list[dict]:
    pod = _pod_spec(raw)
    out = [c for c in (pod.get("containers") or []) if isinstance(c, dict)]
    if init:
        out += [c for c in (pod.get("initContainers") or []) if isinstance(c, dict)]
    return out


def _cname(c: dict) -> str:
    return str(c.get("name") or "?")


def _resources_field(c: dict, section: str, res: str) -> tuple[bool, Any]:
    r = c.get("resources")
    if not isinstance(r, dict) or not isinstance(r.get(section), dict):
        return False, None
    return res in r[section], r[section].get(res)


Explainer = Callable[[Case, Any], "tuple[str, str] | None"]  # -> (class of the disagreement, detail)


def ex_not_read(case: Case, engine):
    o = case.obj
    if o is None:
        return "Checkov reports a resource guywire's loader did not find (a document it could not parse)", ""
    if o.refused:
        return "guywire refused the object as malformed (an input error, exit 2)", o.refused
    if o.view is None and case.guywire is None:
        return "guywire does not read this kind (Checkov does)", ""
    return None


def ex_unjudged(case: Case, engine):
    o = case.obj
    if o is not None and case.guywire is None and o.view is not None and hasattr(o.view, "templates") \
            and o.engine is None:
        return "guywire never judged this definition (a bug: every definition should be judged)", ""
    return None


def ex_skipped_namespace(case: Case, engine):
    w = case.obj.view if case.obj else None
    if w is not None and case.obj.engine is not None and case.obj.engine.skipped(w):
        return f"guywire never evaluates namespace {w.namespace} (DESIGN.md: kube-system is always skipped)", ""
    return None


def ex_exempt(case: Case, engine):
    w = case.obj.view if case.obj else None
    eq = GUYWIRE_EQUIVALENT.get(case.check)
    if w is not None and eq and case.guywire == PASS:
        from guywire.engine.evaluator import exempted

        if exempted(w, eq[0]):
            return f"the workload exempts {eq[0]} with guywire.dev/exempt", w.decl.exempt_reason
    return None


def ex_cpu_limit(case: Case, engine):
    if case.check == "CKV_K8S_11" and case.checkov == FAIL:
        return ("guywire deliberately does not require CPU limits (they throttle latency-sensitive servers; "
                "GW-OBS-004 asks for cpu/memory requests and a memory limit only)", "")
    return None


def ex_digest(case: Case, engine):
    if case.check != "CKV_K8S_43" or case.checkov != FAIL or case.guywire != PASS:
        return None
    from guywire.rules.observability import image_is_mutable

    images = [c.get("image") for c in _containers(case.obj.raw) if isinstance(c.get("image"), str)]
    if images and all(not image_is_mutable(i) for i in images):
        return ("every image has a pinned version tag: guywire accepts that (GW-OBS-007), Checkov requires a digest",
                ", ".join(sorted(set(images))))
    return None


def ex_readiness(case: Case, engine):
    if case.check != "CKV_K8S_9" or case.checkov != FAIL or case.guywire != PASS:
        return None
    w = case.obj.view
    g = case.obj.engine.graph
    from guywire.rules.observability import serving_signal

    serving = bool(g.selected_by.get(w.key) or g.callers.get(w.key)
                   or any(c.ports or serving_signal(c) for c in w.containers if c.main))
    if not serving:
        return ("guywire requires readiness only on workloads that serve traffic: no Service selects it, nothing "
                "calls it, it declares no container port and nothing says it listens (port flags, port env, a "
                "server image or command); Checkov asks it of every container",
                ", ".join(f"{c.name}: {c.image}" for c in w.containers if c.main))
    unprobed = [c for c in _containers(case.obj.raw, init=False) if not c.get("readinessProbe")]
    if unprobed and all(not c.get("ports") for c in unprobed):
        return ("guywire checks readiness only on the containers that declare ports; the containers without a probe "
                "declare none (helpers, sidecars)", ", ".join(_cname(c) for c in unprobed))
    return None


def ex_resources(case: Case, engine):
    field_of = {"CKV_K8S_10": ("requests", "cpu"), "CKV_K8S_12": ("requests", "memory"),
                "CKV_K8S_13": ("limits", "memory")}
    if case.check not in field_of:
        return None
    section, res = field_of[case.check]
    containers = _containers(case.obj.raw)
    if case.checkov == FAIL and case.guywire == PASS:
        falsy = [c for c in containers if _resources_field(c, section, res)[0]
                 and not _resources_field(c, section, res)[1]]
        if falsy:
            return (f"{section}.{res} is present but empty or zero: Checkov reads a falsy value as unset, guywire as "
                    "set", ", ".join(f"{_cname(c)}: {_resources_field(c, section, res)[1]!r}" for c in falsy))
    if case.guywire == FAIL and case.checkov in (PASS, None) and section == "requests":
        # Checkov: resources present but no requests mapping -> UNKNOWN for that container (no verdict)
        unknown = [c for c in containers if isinstance(c.get("resources"), dict)
                   and not isinstance(c["resources"].get("requests"), dict)]
        if unknown:
            names = ", ".join(_cname(c) for c in unknown)
            if all(not c["resources"] for c in unknown):
                return ("resources: {} on a container: Checkov's parser adds line markers to every mapping, so its "
                        "check sees resources without a requests map and answers UNKNOWN (no verdict); guywire "
                        "reports the requests missing", names)
            limited = all(_resources_field(c, "limits", res)[0] for c in unknown)
            if limited:
                return ("a container sets limits but no resources.requests: Checkov answers UNKNOWN for it (no "
                        "verdict), guywire reports the request missing although Kubernetes defaults a missing "
                        "request to the limit (a guywire false positive)", names)
            return ("a container sets resources without resources.requests (and no limit for this resource either): "
                    "Checkov answers UNKNOWN for it (no verdict), guywire reports the request missing", names)
    return None


def ex_image_tag(case: Case, engine):
    if case.check != "CKV_K8S_14":
        return None
    containers = _containers(case.obj.raw)
    if case.checkov == FAIL and case.guywire == PASS:
        missing = [c for c in containers if not c.get("image")]
        if missing:
            return ("a container has no image: Checkov fails that, guywire judges only images that are set (the API "
                    "server refuses a container without one)", ", ".join(_cname(c) for c in missing))
    if case.guywire == FAIL and case.checkov in (PASS, None):
        odd = [c for c in containers if not isinstance(c.get("image"), str) or not c["image"].strip()
               or not CHECKOV_IMAGE_RE.findall(c["image"])]
        if odd:
            return ("Checkov answers UNKNOWN for an image that is not a plain reference, guywire reads it as "
                    "untagged", ", ".join(repr(c.get("image")) for c in odd))
    return None


def _images(case: Case, which) -> str:
    """The images of the object's containers for which ``which(image)`` holds, joined; "" when none does."""
    return ", ".join(sorted({c["image"] for c in _containers(case.obj.raw) if isinstance(c.get("image"), str)
                             and which(c["image"])}))


def _own_question_verdict(case: Case) -> str | None:
    """guywire's verdict on ``case`` asked as Checkov asks it: for CKV_K8S_14, fail only for an image whose
    tag is ``latest`` or absent (a placeholder's "render first" stays a fail, as GW-OBS-007 reports it)."""
    from guywire.rules.observability import mutable_because, reference_is_placeholder

    if case.check != "CKV_K8S_14" or case.guywire != FAIL:
        return case.guywire
    images = [c["image"] for c in _containers(case.obj.raw) if isinstance(c.get("image"), str)]
    narrow = any(reference_is_placeholder(i) or mutable_because(i) in ("", "latest") for i in images)
    return FAIL if narrow else PASS


def ex_floating_tag(case: Case, engine):
    from guywire.rules.observability import mutable_because

    if case.check in ("CKV_K8S_14", "CKV_K8S_43") and case.guywire == FAIL and case.checkov == PASS:
        found = _images(case, mutable_because)
        if found:
            return ("a floating tag other than latest (nightly, main, latest-gpu...): guywire's floatingTags flag "
                    "it, Checkov's CKV_K8S_14 flags only :latest and no tag", found)
    return None


def ex_placeholder(case: Case, engine):
    from guywire.rules.observability import reference_is_placeholder

    if case.check in ("CKV_K8S_14", "CKV_K8S_43") and case.guywire == FAIL and case.checkov == PASS:
        found = _images(case, reference_is_placeholder)
        if found:
            return ("a template placeholder hides the tag: guywire reports 'render the manifest first' (GW-OBS-007, "
                    "Low); Checkov reads the placeholder text as a tag", found)
    return None


def ex_probe_kinds(case: Case, engine):
    if case.check in ("CKV_K8S_8", "CKV_K8S_9") and case.checkov is None and case.guywire == FAIL:
        if case.key[1] in CHECKOV_PROBE_SKIPS:
            return f"Checkov does not evaluate {case.key[1]} for probes", ""
    return None


def ex_checkov_kind(case: Case, engine):
    if case.checkov is None and case.guywire == FAIL and case.key[1] not in CHECKOV_KINDS:
        return ("Checkov does not read this kind (a custom resource); guywire reads its pod templates",
                "; ".join(case.gw_locations))
    return None


EXPLAINERS: list[Explainer] = [ex_not_read, ex_unjudged, ex_skipped_namespace, ex_exempt, ex_cpu_limit, ex_digest,
                               ex_readiness, ex_resources, ex_image_tag, ex_floating_tag, ex_placeholder, ex_probe_kinds, ex_checkov_kind]


def explain(case: Case, engine) -> "tuple[str, str] | None":
    for fn in EXPLAINERS:
        found = fn(case, engine)
        if found:
            return found
    return None


def container_of(keys: list[str], raw: dict | None) -> str:
    """The container a Checkov evaluated key points at, e.g. spec/template/spec/containers/[1]/image."""
    for k in keys:
        m = re.search(r"(containers|initContainers)/\[(\d+)\]", k)
        if m:
            group, idx = m.group(1), int(m.group(2))
            lst = (_pod_spec(raw).get(group) or []) if raw else []
            label = "init container" if group == "initContainers" else "container"
            name = _cname(lst[idx]) if idx < len(lst) and isinstance(lst[idx], dict) else f"[{idx}]"
            return f"{label} {name}"
    return "-"


# ----- report -----------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"manifests directory (default {DEFAULT_CORPUS})")
    ap.add_argument("--checkov", help=f"checkov executable (default $CHECKOV, {DEFAULT_CHECKOV}, or PATH)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the best wall time is reported")
    ap.add_argument("--examples", type=int, default=2, help="examples printed per class of disagreement")
    ap.add_argument("--json", metavar="FILE", help="also write figures and cases as JSON")
    ap.add_argument("--cluster-per", choices=["input", "dir", "file"], default="input",
                    help="guywire check --cluster-per (default input, guywire's default)")
    args = ap.parse_args()

    corpus = os.path.abspath(args.corpus)
    checkov = find_checkov(args.checkov)
    if not checkov:
        print("checkov not found: run `bash bench/setup_checkov.sh` (installs it into .cache/checkov-venv), "
              "or pass --checkov PATH.", file=sys.stderr)
        return 2
    guywire = os.path.join(os.path.dirname(sys.executable), "guywire")
    gw_cmd = ([guywire] if os.path.exists(guywire) else [sys.executable, "-m", "guywire.cli"]) + \
        ["check", corpus, "--format", "json", "--cluster-per", args.cluster_per]
    ck_cmd = [checkov, "-d", corpus, "--framework", "kubernetes", "--check", ",".join(CHECKS), "-o", "json",
              "--skip-download"]
    ck_env = tool_env(SKIP_PACKAGE_UPDATE_CHECK="true", LOG_LEVEL="ERROR")
    gw_env = tool_env()
    files = yaml_files(corpus)

    print(f"guywire vs Checkov - {time.strftime('%Y-%m-%d')} - Python {platform.python_version()} - "
          f"{os.cpu_count()} CPUs - {platform.machine()} - load average {loadavg()}", flush=True)
    print(f"corpus: {corpus} ({len(files)} files, {sum(os.path.getsize(f) for f in files) / 1024:.0f} KiB)\n",
          flush=True)

    gw = measure("guywire check", gw_cmd, args.runs, env=gw_env)
    gw1 = measure("guywire check, one process", gw_cmd, args.runs, env={**gw_env, "GUYWIRE_PARALLEL": "0"})
    ck = measure("checkov", ck_cmd, args.runs, env=ck_env)
    parse = measure("parse YAML only", [sys.executable, "-c", PARSE_ONLY] + files, args.runs, env=gw_env)
    parse_ip, n_docs = parse_in_process(files, args.runs)
    gw_ip = guywire_in_process(corpus, args.runs, args.cluster_per)
    load_after = loadavg()
    ck_version = subprocess.run([checkov, "--version"], stdout=subprocess.PIPE, text=True, env=ck_env).stdout.strip()

    # ----- timing table
    width = max(len(", ".join(f"{w:.2f}" for w in r.walls)) for r in (gw, gw1, ck, parse))
    print(f"{'':34} {'best wall':>10} {'runs (s)':>{width}} {'CPU':>7} {'peak RSS':>9} {'exit':>5}")
    for r in (gw, gw1, ck, parse):
        runs = ", ".join(f"{w:.2f}" for w in r.walls)
        print(f"{r.label:34} {r.best:>9.3f}s {runs:>{width}} {r.cpu:>6.2f}s {r.peak_mb:>7.0f}MB {r.exit_code:>5}")
    print("  CPU: user + system seconds of the process and its children (best run). guywire parses large inputs "
          "in two processes\n  (a forked child; GUYWIRE_PARALLEL=0 keeps one); peak RSS is the largest single "
          "process, the child's pages being\n  mostly shared with the parent's.")
    ratio = ck.best / gw.best
    print(f"(load average after the timed runs: {load_after})")
    print(f"\ncommands:\n  {' '.join(gw_cmd)}\n  {' '.join(ck_cmd)}   (checkov {ck_version})")
    print(f"\nspeed: Checkov / guywire wall time = {ratio:.1f}x (target at least 20x: "
          f"{'met' if ratio >= 20 else 'NOT MET'}); memory: Checkov {ck.peak_mb:.0f} MB, guywire {gw.peak_mb:.0f} MB "
          f"({ck.peak_mb / gw.peak_mb:.1f}x)")
    print(f"       in one process: {ck.best / gw1.best:.1f}x; CPU time: Checkov / guywire = {ck.cpu / gw.cpu:.1f}x")
    print(f"little more than parsing: fresh processes, guywire check {gw.best:.3f} s vs parsing alone "
          f"{parse.best:.3f} s ({gw.best / parse.best:.2f}x; the difference, {gw.best - parse.best:.3f} s, is mostly "
          f"importing guywire);")
    print(f"  in one process, without start-up: read + build + evaluate + render {gw_ip:.3f} s vs yaml.load_all "
          f"{parse_ip:.3f} s ({gw_ip / parse_ip:.2f}x) over {n_docs} documents")

    # ----- exit-2 check
    gw_out = json.loads(gw.stdout)
    errors = gw_out.get("errors", [])
    hard = [e for e in errors if e.get("level") == "error"]
    print(f"\nguywire check exit code {gw.exit_code} (0 clean, 1 findings, 2 input or evaluation errors); "
          f"{len(hard)} input or evaluation errors, "
          f"{sum(1 for e in errors if e.get('level') == 'warning')} objects defined twice (warned), "
          f"{sum(1 for e in errors if e.get('level') == 'skipped')} skipped documents; "
          f"{gw_out['summary']['files']} files, {gw_out['summary']['workloads']} workloads evaluated")
    for e in hard:
        print(f"  ERROR {e['file']}:{e.get('line')}: {e['message']}")

    # ----- verdicts
    ck_verdicts, ck_keys, ck_summary = checkov_verdicts(ck.stdout)
    objs, judged, result, by_workload, _ = load_corpus(corpus, args.cluster_per)
    engine = judged.first
    cli_findings = Counter(f["rule"] for f in gw_out["findings"])
    ip_findings = Counter(f.rule for f in result.findings)
    if cli_findings != ip_findings:
        print(f"\nWARNING: the CLI's findings differ from the in-process engine's: {cli_findings - ip_findings} / "
              f"{ip_findings - cli_findings}")
    print(f"\nCheckov: {ck_summary.get('resource_count', '?')} resources, {ck_summary.get('passed', '?')} passed, "
          f"{ck_summary.get('failed', '?')} failed, {ck_summary.get('parsing_errors', '?')} parsing errors; "
          f"guywire: {sum(1 for o in objs.values() if o.engine is not None)} workload definitions judged, {len(result.findings)} findings")

    ck_resources = {k for (k, _) in ck_verdicts}
    gw_resources = {o.key for o in objs.values() if o.view is not None and hasattr(o.view, "templates")}
    cases: list[Case] = []
    for check in CHECKS:
        for key in sorted(ck_resources | gw_resources):
            o = objs.get(key)
            gv, locs = guywire_verdict(check, o, by_workload.get(key, [])) if o else (None, [])
            cases.append(Case(check, key, ck_verdicts.get((key, check)), gv, o, ck_keys.get((key, check), []), locs))

    print("\nagreement per check, one verdict per resource (file, kind, namespace/name):")
    head = (f"{'check':11} {'what':27} {'guywire':11} {'both':>5} {'agree':>6} {'disagree':>8} {'agree%':>7} "
            f"{'ck fail/gw -':>12} {'gw fail/ck -':>12} {'one side pass':>13}")
    print(head)
    print("-" * len(head))
    classes: dict[str, Counter] = defaultdict(Counter)
    details: dict[tuple[str, str], list[str]] = defaultdict(list)
    kinds: dict[tuple[str, str], Counter] = defaultdict(Counter)
    unexplained: list[Case] = []
    table = []
    for check in CHECKS:
        cs = [c for c in cases if c.check == check]
        both = [c for c in cs if c.checkov and c.guywire]
        agree = [c for c in both if c.checkov == c.guywire]
        disagree = [c for c in both if c.checkov != c.guywire]
        ck_only_fail = [c for c in cs if c.checkov == FAIL and not c.guywire]
        gw_only_fail = [c for c in cs if c.guywire == FAIL and not c.checkov]
        one_pass = [c for c in cs if (c.checkov == PASS and not c.guywire) or (c.guywire == PASS and not c.checkov)]
        eq = GUYWIRE_EQUIVALENT[check]
        pct = f"{100 * len(agree) / len(both):.1f}" if both else "-"
        print(f"{check:11} {CHECK_NAMES[check]:27} {(eq[0] if eq else '(none)'):11} {len(both):>5} {len(agree):>6} "
              f"{len(disagree):>8} {pct:>7} {len(ck_only_fail):>12} {len(gw_only_fail):>12} {len(one_pass):>13}")
        table.append({"check": check, "guywire": eq[0] if eq else None, "both": len(both), "agree": len(agree),
                      "disagree": len(disagree), "checkov_only_fail": len(ck_only_fail),
                      "guywire_only_fail": len(gw_only_fail), "one_side_pass": len(one_pass)})
        ck_only_pass = [c for c in cs if check in SHARED and c.checkov == PASS and not c.guywire]
        for c in disagree + ck_only_fail + gw_only_fail + ck_only_pass:
            found = explain(c, engine)
            if found:
                reason, detail = found
                classes[check][reason] += 1
                where = f"{c.key[1]} {c.key[2]}/{c.key[3]} ({os.path.basename(c.key[0])})"
                details[(check, reason)].append(f"{where}: {detail}" if detail else where)
                kinds[(check, reason)][c.key[1]] += 1
            else:
                unexplained.append(c)
    print("  both: resources both tools judged; ck fail/gw -: Checkov fails it, guywire has no verdict (kind not "
          "read, rule not applicable);\n  gw fail/ck -: the reverse; one side pass: one tool passes it, the other "
          "has no verdict (not a disagreement).")

    shared = [c for c in cases if c.check in SHARED and c.checkov]
    agreed = [c for c in shared if c.guywire == c.checkov]
    print(f"\nthe three checks both tools have ({', '.join(SHARED)}), per (file, object) Checkov judged: guywire "
          f"agrees on {len(agreed)} of {len(shared)} verdicts ({100 * len(agreed) / max(1, len(shared)):.1f}%); "
          f"{sum(1 for c in shared if c.guywire is None)} of the {len(shared) - len(agreed)} others have no guywire "
          "verdict")
    table.append({"check": "+".join(SHARED), "checkov_verdicts": len(shared), "agree": len(agreed)})
    # CKV_K8S_14 asks a narrower question than GW-OBS-007 ("latest or no tag" vs "a floating tag", issue 15 part 2):
    # asked that question, guywire's verdict is its own verdict, except that a fail whose only mutable images match
    # a floating pattern other than latest (nightly, main, latest-gpu...) answers "no".
    own = [c for c in shared if _own_question_verdict(c) == c.checkov]
    print(f"  asked CKV_K8S_14's own question (`latest` or no tag; guywire also flags other floating tags, issue 15 "
          f"part 2): guywire agrees on {len(own)} of {len(shared)} verdicts ({100 * len(own) / max(1, len(shared)):.1f}%)")
    table.append({"check": "+".join(SHARED) + " (CKV_K8S_14's own question)", "checkov_verdicts": len(shared),
                  "agree": len(own)})

    total = sum(sum(c.values()) for c in classes.values()) + len(unexplained)
    print(f"\ndisagreements explained ({total - len(unexplained)} of {total}), by check and class:")
    for check in CHECKS:
        for reason, n in classes[check].most_common():
            print(f"  {check:11} {n:>4} x {reason}")
            if len(kinds[(check, reason)]) > 1:
                print(f"  {'':11}        kinds: "
                      + ", ".join(f"{k} {m}" for k, m in kinds[(check, reason)].most_common()))
            shown = details[(check, reason)]
            for d in shown[: args.examples]:
                print(f"  {'':11}        e.g. {d}")
            if len(shown) > args.examples:
                print(f"  {'':11}        ... and {len(shown) - args.examples} more")
    print(f"\nunexplained disagreements: {len(unexplained)}")
    for c in unexplained:
        file = os.path.relpath(c.key[0], corpus)
        print(f"  {c.check} {c.key[1]} {c.key[2]}/{c.key[3]} ({file}): Checkov {c.checkov or 'no verdict'} "
              f"[{container_of(c.checkov_keys, c.obj.raw if c.obj else None)}], guywire {c.guywire or 'no verdict'} "
              f"[{'; '.join(c.gw_locations) or '-'}]")

    # ----- what neither tool judges
    neither = Counter(o.raw.get("kind") for o in objs.values() if o.view is None and o.raw.get("kind") not in
                      CHECKOV_KINDS and _has_pod_spec(o.raw))
    if neither:
        print("\nobjects with pod templates that neither tool judges (custom resources; not counted above): "
              + ", ".join(f"{k} {n}" for k, n in neither.most_common()))

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"guywire": {"best_s": gw.best, "walls": gw.walls, "peak_rss_mb": gw.peak_mb,
                                   "exit": gw.exit_code, "in_process_s": gw_ip},
                       "checkov": {"best_s": ck.best, "walls": ck.walls, "peak_rss_mb": ck.peak_mb,
                                   "exit": ck.exit_code, "version": ck_version},
                       "parse": {"best_s": parse.best, "peak_rss_mb": parse.peak_mb, "in_process_s": parse_ip},
                       "ratio": ratio, "agreement": table,
                       "classes": {k: dict(v) for k, v in classes.items()},
                       "unexplained": [{"check": c.check, "key": list(c.key), "checkov": c.checkov,
                                        "guywire": c.guywire} for c in unexplained]}, fh, indent=2)
    return 0


def _has_pod_spec(obj: Any, depth: int = 0) -> bool:
    """Whether a custom resource embeds a pod spec somewhere (a containers list of objects with an image)."""
    if depth > 12:
        return False
    if isinstance(obj, dict):
        cs = obj.get("containers")
        if isinstance(cs, list) and any(isinstance(c, dict) and "image" in c for c in cs):
            return True
        return any(_has_pod_spec(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_pod_spec(v, depth + 1) for v in obj)
    return False


if __name__ == "__main__":
    sys.exit(main())
