"""guywire's command line: check | graph | simulate | report | rules | crd (and, from the operator and GPU packages, run | node-agent)."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from . import __version__
from .clock import SYSTEM, Clock, parse_time
from .speed.gcpause import paused_gc
from .inputs.loader import Diagnostic, load
from .model.finding import SourceRef
from .model.kinds import NEVER_JUDGED_NAMESPACES
from .model.messages import some_of
from .model.baseline import baseline_policy
from .model.severity import Severity
from .render.formats import FORMATS, MERGE_JSON, Format, add_format_argument

if TYPE_CHECKING:
    from .inputs.clusters import Cluster, Judged
    from .engine.evaluator import Engine
    from .views.inventory import Inventory
    from .model.policy import Policy

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def parse_now(text: str | None, clock: Clock = SYSTEM) -> datetime:
    """The time rules judge against: ``--now`` when given (RFC 3339; naive is UTC), else the clock's."""
    if text is None:
        return clock.now()
    if not text.strip():
        raise ValueError("--now is empty: give an RFC 3339 time such as 2026-11-22T10:00:00Z, or leave the "
                         "option out to judge against the current time.")
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"--now {text!r} is not a time guywire reads: write an RFC 3339 time such as "
                         "2026-11-22T10:00:00Z or 2026-11-22T12:00:00+02:00 (a date alone, 2026-11-22, is "
                         "midnight UTC).") from None


def build(paths: list[str], policy_files: list[str], meanwhile=None, exclude: list[str] | None = None
          ) -> tuple[Inventory, list[Policy], list[Diagnostic], int, Counter]:
    """Read inputs into one inventory (the input as one cluster) and policies. Never raises for bad input."""
    clusters, policies, diags, files, skipped = build_clusters(paths, policy_files, meanwhile, exclude=exclude)
    return clusters[0].inventory, clusters[0].policies + policies, diags, files, skipped


def build_clusters(paths: list[str], policy_files: list[str], meanwhile=None, cluster_per: str = "input",
                   exclude: list[str] | None = None) -> tuple[list[Cluster], list[Policy], list[Diagnostic], int, Counter]:
    """Read inputs into clusters (``--cluster-per``; each with the policies found in its files) and the
    policies of ``policy_files``. Never raises for bad input."""
    with paused_gc():
        return _build(paths, policy_files, meanwhile, cluster_per, exclude or [])


def warm_up(policy_files: list[str], *modules: str):
    """What to import while a second process parses large inputs (``loader.load``'s ``meanwhile``):
    the engine and rules, the renderers named, and pydantic's policy models when there are policies.
    Importing them is about as long as parsing the bundled corpus, so the two overlap."""
    def run() -> None:
        import importlib

        for name in (".inputs.clusters", *modules, *((".model.policy",) if policy_files else ())):
            importlib.import_module(name, __package__)
    return run


NEXT_GRAIN = {"input": "dir", "dir": "file"}


def _build(paths: list[str], policy_files: list[str], meanwhile=None, cluster_per: str = "input",
           exclude: list[str] | None = None) -> tuple[list[Cluster], list[Policy], list[Diagnostic], int, Counter]:
    docs, diags, files = load(paths, meanwhile, exclude or [])
    from .inputs.clusters import Cluster, cluster_of
    from .views.inventory import POLICY_KINDS, ParseError, view_of
    from .views.workload import Workload

    clusters: dict[str, Cluster] = {}
    skipped: Counter = Counter()
    for doc in docs:
        obj = doc.obj
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            diags.append(Diagnostic(doc.source, "object has no kind; not a Kubernetes object, skipped.", error=False))
            skipped["(no kind)"] += 1
            continue
        name = cluster_of(doc.source.file, cluster_per)
        cluster = clusters.get(name)
        if cluster is None:
            cluster = clusters[name] = Cluster(name)
        if kind in POLICY_KINDS:
            policy, error = _parse_policy(obj)
            if policy is not None:
                cluster.policies.append(policy)
            else:
                pname = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
                diags.append(Diagnostic(doc.source, f"{kind} {pname or '?'}: {error}"))
            continue
        unrendered = _unrendered(obj)
        if unrendered:
            diags.append(Diagnostic(doc.source, f"{kind} {unrendered!r}: an unrendered template ({{{{ ... }}}}), "
                                    "not judged. Render it first (helm template ... | guywire check -).",
                                    error=False, warning=True))
            skipped[f"{kind} (unrendered template)"] += 1
            continue
        try:
            view = view_of(obj, doc.source)
        except ParseError as exc:
            diags.append(Diagnostic(doc.source, str(exc)))
            continue
        except Exception as exc:  # a reader bug must not lose the other objects
            diags.append(Diagnostic(doc.source, f"{kind}: could not be read ({type(exc).__name__}: {exc})."))
            continue
        if view is None:
            skipped[kind] += 1
            diags.append(Diagnostic(doc.source, f"{kind} {_meta_name(obj)}: a kind guywire does not evaluate; "
                                    "skipped.", error=False, quiet=True))
            continue
        held, earlier = cluster.add(view)
        never = isinstance(view, Workload) and view.namespace in NEVER_JUDGED_NAMESPACES
        if earlier is not None:
            hint = NEXT_GRAIN.get(cluster_per)
            judged = (f"neither is judged ({view.namespace} never is)" if never
                      else "both are judged on their own")
            diags.append(Diagnostic(
                doc.source, f"{kind} {view.namespace}/{view.name} is defined again (first at "
                f"{earlier.source or 'another input'}); this definition is the one in the graph, and {judged}."
                + (f" If they belong to different clusters, give --cluster-per {hint}." if hint else ""),
                error=False, warning=True))
        elif never and held:
            diags.append(Diagnostic(doc.source, f"{kind} {view.namespace}/{view.name}: in {view.namespace}, whose "
                                    "workloads guywire never judges (the cluster's own components); read for the "
                                    "graph only.", error=False, quiet=True))
        if not held:
            skipped[f"{kind} (evaluated through its owner)"] += 1
            diags.append(Diagnostic(doc.source, f"{kind} {view.namespace}/{view.name}: evaluated through the object "
                                    "that owns it; skipped.", error=False, quiet=True))
    policies: list[Policy] = []
    for pf in policy_files:
        pdocs, pdiags, _ = load([pf])
        diags.extend(pdiags)
        found = 0
        for doc in pdocs:
            if doc.obj.get("kind") in POLICY_KINDS:
                found += 1
                policy, error = _parse_policy(doc.obj)
                if policy is not None:
                    policies.append(policy)
                else:
                    diags.append(Diagnostic(doc.source, f"{doc.obj.get('kind')}: {error}"))
        if not found and not pdiags:
            diags.append(Diagnostic(SourceRef(pf), "holds no ComplexityPolicy or ClusterComplexityPolicy."))
    return list(clusters.values()) or [Cluster("")], policies, diags, files, skipped


def _meta_name(obj: dict) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or "?") if isinstance(meta, dict) else "?"


def _unrendered(obj: dict) -> str | None:
    """The name or namespace of an object written as a template (``{{ .Release.Name }}-api``), if it is one."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in ("name", "namespace"):
            value = meta.get(key)
            if isinstance(value, str) and "{{" in value:
                return value
    return None


def _parse_policy(obj: dict) -> tuple[Policy | None, str]:
    # model.policy imports pydantic, most of a short run's start-up: only when there is a policy to read
    from .model.policy import PolicyError, parse_policy

    try:
        return parse_policy(obj), ""
    except PolicyError as exc:
        return None, str(exc)


class NothingJudged(ValueError):
    """Every --policy file was refused: the reasons (``diagnostics``) and what was not done."""

    def __init__(self, diagnostics: list[Diagnostic], message: str):
        super().__init__(message)
        self.diagnostics = diagnostics


def judge_inputs(paths: list[str], policy_files: list[str], now: str | None, clock: Clock = SYSTEM, *,
                 cluster_per: str = "input", keep_exempted: bool = False, meanwhile=None,
                 exclude: list[str] | None = None) -> tuple[Judged, list[Diagnostic], int, Counter]:
    """Read and judge inputs as every command does: each cluster of the input (``--cluster-per``), with the
    shadow layers of definitions read twice, at ``now`` (``--now``) when given, else at the clock's time.
    The rule-fixture tests judge through it too, so a fixture's ``# now:`` means ``--now``."""
    clusters, policies, diags, files, skipped = build_clusters(paths, policy_files, meanwhile, cluster_per, exclude)
    if policy_files and not policies:  # the built-in baseline's findings would pass for the policy's
        raise NothingJudged(diags, f"no --policy file could be used ({len(policy_files)} given, none holds a policy "
                            "guywire accepts; see above); nothing judged. Fix the policy, or leave --policy out to "
                            "judge with the built-in baseline.")
    from .inputs.clusters import judge

    judged = judge(clusters, policies, [baseline_policy()], now=parse_now(now, clock), keep_exempted=keep_exempted)
    return judged, diags, files, skipped


def _engine(args, *warm: str, keep_exempted: bool = False) -> tuple[Judged, list[Diagnostic], int, Counter]:
    return judge_inputs(args.paths, args.policy or [], getattr(args, "now", None), args.clock,
                        cluster_per=getattr(args, "cluster_per", "input"), keep_exempted=keep_exempted,
                        meanwhile=warm_up(args.policy or [], *warm), exclude=getattr(args, "exclude", None))


def cmd_check(args) -> int:
    fmt = FORMATS["check"][args.format]
    judged, diags, files, skipped = _engine(args, ".render.check_result", fmt.module, ".graph.simulate", keep_exempted=True)
    from .render.locations import SourceRoot
    from .render.check_result import Report

    result = judged.evaluate_all()
    fail_on = Severity.parse(args.fail_on)
    comparison = None
    if getattr(args, "baseline", None):
        from dataclasses import replace

        from .engine.insights import new_or_worse
        comparison = new_or_worse(result.findings, load_baseline(args.baseline, args, judged.first))
        result = replace(result, findings=comparison.findings)
    report = Report(engine=judged.first, result=result, diagnostics=[d for d in diags if not d.quiet], files=files,
                    skipped_kinds=skipped, fail_on=fail_on, baseline=comparison,
                    baseline_source=getattr(args, "baseline", None), judged=judged)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    sys.stdout.write(fmt.render(report, colour=colour, locations=SourceRoot(args.source_root, args.chart_dir),
                                clock=args.clock))
    print_diagnostics(diags, args.verbose)
    print_evaluation_errors(result.errors)
    if report.errors or result.errors:  # could not evaluate: not clean, whatever --fail-on says
        return EXIT_ERROR
    if any(f.severity.rank >= fail_on.rank for f in result.findings):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def print_diagnostics(diags: list[Diagnostic], verbose: bool = False) -> None:
    """The input errors and warnings on stderr; with ``verbose``, the quiet ones (skipped documents) too."""
    for d in diags:
        if d.error or d.warning or verbose:
            print(f"guywire: {d.render()}", file=sys.stderr)


def print_evaluation_errors(errors) -> None:
    """Rules that raised, one line each on stderr (the class and message of the exception, no traceback)."""
    for e in errors:
        where = f" ({e.source})" if e.source else ""
        print(f"guywire: error: {e.render()}{where}", file=sys.stderr)


REPORT_KINDS = {("wgpolicyk8s.io", "PolicyReport"): "a PolicyReport", ("wgpolicyk8s.io", "ClusterPolicyReport"):
                "a ClusterPolicyReport", ("openreports.io", "Report"): "an OpenReports Report",
                ("openreports.io", "ClusterReport"): "an OpenReports ClusterReport"}


def _saved_report(path: str) -> str | None:
    """What kind of saved report ``path`` is when it is one that cannot stand for manifests (a JUnit XML,
    a PolicyReport or an OpenReports Report, as ``guywire check -o junit|policyreport|openreports`` writes),
    else None."""
    import os

    from .inputs.loader import load_file

    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096).lstrip()
    except OSError:
        return None
    if head.startswith("<"):
        return "a JUnit XML report" if "<testsuite" in head else "an XML file"
    for doc in load_file(path)[0]:
        obj = doc.obj if isinstance(doc.obj, dict) else {}
        group = str(obj.get("apiVersion") or "").partition("/")[0]
        if (group, obj.get("kind")) in REPORT_KINDS:
            return REPORT_KINDS[(group, obj.get("kind"))]
    return None


def _old_judged(path: str, args, engine: Engine, option: str, forms: str) -> Judged:
    """The engines for an older state: its own policies if it has some, else the current run's. ValueError,
    naming ``option`` and the ``forms`` it accepts, when ``path`` is a saved report that records no manifests
    (JUnit, PolicyReport, OpenReports), holds no Kubernetes object or cannot be read."""
    from .inputs.clusters import judge

    report = _saved_report(path)
    if report:
        raise ValueError(f"{option} {path} is {report}, not manifests nor a report guywire reads back; "
                         f"give {forms}.")
    clusters, policies, diags, _, skipped = build_clusters([path], args.policy or [], None,
                                                           getattr(args, "cluster_per", "input"),
                                                           getattr(args, "exclude", None))
    errors = [d for d in diags if d.error]
    if errors:
        raise ValueError(f"{option} {path}: {errors[0].render()} Give {forms}.")
    if not (policies or any(c.inventory.workloads or c.inventory.services or c.policies for c in clusters)
            or any(k != "(no kind)" for k in skipped)):
        raise ValueError(f"{option} {path} holds no Kubernetes object; give {forms}.")
    return judge(clusters, policies, engine.policies, now=engine.now)


def _saved_json(path: str, sarif: bool = False) -> dict | None:
    """A saved guywire JSON document (check or report output; with ``sarif``, a SARIF log too), or None
    when ``path`` is no such file."""
    import json
    import os

    if not (path.endswith((".json", ".sarif") if sarif else ".json") and os.path.isfile(path)):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read as JSON ({exc}).") from None
    if isinstance(data, dict) and ("findings" in data or "cluster" in data or (sarif and "runs" in data)):
        return data
    return None  # a JSON manifest


BASELINE_FORMS = ("the manifests of the older state (a file or folder of YAML or JSON) or a saved "
                  "guywire check --format json (or --format sarif) report")
DIFF_FORMS = "the manifests of the older state (a file or folder of YAML or JSON) or a saved guywire report --format json"


def _is_sarif(path: str) -> bool:
    """A SARIF log: by its name, or a JSON file whose top level has ``runs`` and a 2.x ``version``."""
    import json
    import os

    if path.endswith((".sarif", ".sarif.json")):
        return True
    if not (path.endswith(".json") and os.path.isfile(path)):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "runs" in data and str(data.get("version", "")).startswith("2.")


def load_baseline(path: str, args, engine: Engine) -> list:
    """What the baseline found: a saved ``guywire check --format json`` (or ``sarif``) report, or manifests
    judged now. A JSON report saved before findings carried their figures loads, with a note on stderr."""
    import os

    from .engine.insights import REGENERATE, is_sarif, known_from_finding, known_from_json, known_from_sarif

    if _is_sarif(path):
        try:
            data = _saved_json(path, sarif=True)
            why = "" if os.path.isfile(path) else " (no such file)"
        except ValueError as exc:
            data, why = None, f" ({str(exc).removeprefix(f'{path}: ').rstrip('.')})"
        if data is None or not is_sarif(data):
            raise ValueError(f"--baseline {path} is not a SARIF log guywire can read{why}; give {BASELINE_FORMS}.")
    else:
        data = _saved_json(path)
    if data is not None:
        try:
            known = known_from_sarif(data) if is_sarif(data) else known_from_json(data)
        except ValueError as exc:
            raise ValueError(f"--baseline {path} {exc}") from None
        legacy = sum(k.legacy for k in known)
        if legacy:
            print(f"guywire: --baseline {path} was saved by an older guywire: {legacy} of its findings carry no "
                  "observed and limit, so their figures are read from the message text, which a reworded message "
                  f"defeats; {REGENERATE.replace('BASELINE.json', path)}.", file=sys.stderr)
        return known
    old = _old_judged(path, args, engine, "--baseline", BASELINE_FORMS)
    return [known_from_finding(f) for f in old.evaluate_all().findings]


def _print_errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    errors = [d for d in diags if d.error]
    for d in errors:
        print(f"guywire: {d.render()}", file=sys.stderr)
    return errors


def _one_cluster(judged: Judged, what: str) -> Engine:
    """The engine of the only cluster; a clear error when ``--cluster-per`` made several."""
    clusters = judged.clusters()
    if len(clusters) > 1:
        raise ValueError(f"{what} takes one cluster; --cluster-per made {len(clusters)} "
                         f"({some_of([n for n, _ in clusters])}). "
                         "Give the files of one of them.")
    return judged.first


def cmd_simulate(args) -> int:
    from .model.units import parse_duration
    from .graph.simulate import Failure, find_workload, simulate

    judged, diags, _, _ = _engine(args)
    errors = _print_errors(diags)
    if args.down:
        failure = Failure("down")
    elif args.latency is not None:
        failure = Failure("latency", latency=parse_duration(args.latency))
    else:
        text = args.error_rate.strip()
        try:
            rate = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"--error-rate {text!r} is not a fraction such as 0.3 or 30%.") from None
        failure = Failure("error-rate", error_rate=rate)
    if args.rps is not None and args.rps <= 0:
        raise ValueError(f"--rps {args.rps:g} must be above zero.")
    clusters = judged.clusters()
    engine = clusters[0][1]
    if len(clusters) > 1:  # the cluster that holds the target
        holding = []
        for name, e in clusters:
            try:
                find_workload(e.graph, args.target)
            except ValueError:
                continue
            holding.append((name, e))
        if len(holding) > 1:
                raise ValueError(f"{args.target} is in {len(holding)} clusters ({some_of([n for n, _ in holding])}); "
                             "give the files of one of them.")
        engine = holding[0][1] if holding else engine
    g = engine.graph
    target = find_workload(g, args.target)
    entries = [find_workload(g, e) for e in args.entry or ()]
    sim = simulate(g, target, failure, entries or None)
    sys.stdout.write(FORMATS["simulate"][args.format].render(sim, g, rps=args.rps))
    return EXIT_ERROR if errors else EXIT_CLEAN


def _per_cluster(judged: Judged, fmt: Format, render) -> str:
    """One cluster: what ``render(engine)`` writes. Several, as the format's ``sections`` says: one JSON
    document {"clusters": [{"cluster": name, ...}]}, or one section per cluster headed by a comment line."""
    import json

    clusters = judged.clusters()
    if len(clusters) == 1:
        return render(clusters[0][1])
    if fmt.sections == MERGE_JSON:
        docs = [{"cluster": name, **json.loads(render(e))} for name, e in clusters]
        return json.dumps({"clusters": docs}, indent=2) + "\n"
    if fmt.sections is None:
        _one_cluster(judged, f"--format {fmt.name}")
    return "\n".join(f"{fmt.sections} cluster {name}\n{render(e)}" for name, e in clusters)


def cmd_report(args) -> int:
    from .engine.insights import ComplexityReport, complexity_report, diff_reports

    judged, diags, _, _ = _engine(args)
    errors = _print_errors(diags)
    fmt = FORMATS["report"][args.format]
    if not args.diff:
        reports = []

        def one(e):
            rep = complexity_report(e, suggestions=True)
            reports.append(rep)
            return fmt.render(rep, changes=None)
        sys.stdout.write(_per_cluster(judged, fmt, one))
        raised = [x for rep in reports for x in rep.errors]
        print_evaluation_errors(raised)
        return EXIT_ERROR if errors or raised else EXIT_CLEAN
    engine = _one_cluster(judged, "--diff")
    rep = complexity_report(engine, suggestions=True)
    data = _saved_json(args.diff)
    if data is not None and "cluster" in data:
        old = ComplexityReport.from_dict(data)
    elif data is not None:
        raise ValueError(f"--diff {args.diff} is a guywire check report; give manifests or the output of "
                         "guywire report --format json.")
    else:
        old = complexity_report(_one_cluster(_old_judged(args.diff, args, engine, "--diff", DIFF_FORMS), "--diff"))
    sys.stdout.write(fmt.render(rep, changes=diff_reports(old, rep)))
    print_evaluation_errors(rep.errors)
    return EXIT_ERROR if errors or rep.errors else EXIT_CLEAN


def cmd_graph(args) -> int:
    judged, diags, _, _ = _engine(args)
    fmt = FORMATS["graph"][args.format]
    sys.stdout.write(_per_cluster(judged, fmt, fmt.render))
    errors = _print_errors(diags)
    return EXIT_ERROR if errors else EXIT_CLEAN


def cmd_rules(args) -> int:
    sys.stdout.write(FORMATS["rules"][args.format].render())
    return EXIT_CLEAN


def cmd_crd(args) -> int:
    from .kube.crd import crds_yaml, write_crds

    if args.output_dir:
        for path in write_crds(args.output_dir):
            print(f"guywire: wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(crds_yaml())
    return EXIT_CLEAN


def cmd_webhook_config(args) -> int:
    from .kube.webhook_config import ca_bundle_problem, webhook_configuration_yaml

    ns, _, name = args.service.partition("/")
    if not name:
        raise ValueError(f"--service {args.service!r} is not NAMESPACE/NAME.")
    ca = None
    if args.ca_file:
        try:
            with open(args.ca_file, "rb") as fh:
                ca = fh.read()
        except OSError as exc:
            raise ValueError(f"--ca-file {args.ca_file}: cannot be read ({exc.strerror or exc}).") from None
        problem = ca_bundle_problem(ca)
        if problem and problem[0] == "error":
            raise ValueError(f"--ca-file {args.ca_file} {problem[1]}.")
        if problem:
            ca = None
    if ca is None:
        missing = f"--ca-file {args.ca_file} {problem[1]}" if args.ca_file and problem else "no --ca-file"
        print(f"guywire: warning: {missing}, so the configuration has no caBundle: unless the webhook's "
              "certificate is signed by a CA the API server already trusts, every call fails TLS and, with "
              "failurePolicy Ignore, every request goes unjudged. Pass --ca-file CA.crt, or let cert-manager's "
              "cainjector fill it in (annotation cert-manager.io/inject-ca-from).", file=sys.stderr)
    sys.stdout.write(webhook_configuration_yaml(namespace=ns, service=name, base_url=args.base_url, ca_bundle=ca,
                                                service_account=args.service_account))
    return EXIT_CLEAN


def cmd_run(args) -> int:
    from .operator.main import cmd_run as run

    return run(args, clock=args.clock)


def cmd_node_agent(args) -> int:
    from .gpu.agent import run_node_agent

    return run_node_agent(args, clock=args.clock)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory (recursive *.yaml, *.yml, *.json) or -")
    p.add_argument("--policy", action="append", metavar="FILE",
                   help="policy file (repeatable); policies found among PATHs are used too; "
                        "without any, the built-in baseline applies")
    p.add_argument("--now", metavar="RFC3339", help="the time rules judge against (default: now)")
    p.add_argument("--cluster-per", choices=["input", "dir", "file"], default="input",
                   help="what is one cluster (one graph, its Services and policies): the whole input (default), "
                        "each directory's files, or each file")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files and folders whose path or name matches GLOB (repeatable), e.g. "
                        "'*-values.yaml' or 'deploy/old'")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="guywire", description="Keeps AI infrastructure on Kubernetes understandable.")
    ap.add_argument("--version", action="version", version=f"guywire {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="evaluate manifests offline against policies")
    _add_inputs(p)
    add_format_argument(p, "check")
    p.add_argument("--fail-on", choices=["low", "medium", "high", "critical"], default="low",
                   help="exit 1 when a finding at or above this severity exists (default: low)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also list on stderr every skipped document, dot-folder and excluded path")
    p.add_argument("--source-root", metavar="DIR",
                   help="SARIF paths are relative to this folder, the repository's root (default: the current "
                        "directory)")
    p.add_argument("--chart-dir", metavar="DIR",
                   help="the chart folder behind helm template output on stdin: its '# Source: CHART/...' "
                        "comments are placed there (default: the folder under --source-root whose Chart.yaml "
                        "has that name)")
    p.add_argument("--baseline", metavar="OLD_PATH|OLD.json|OLD.sarif",
                   help="report only findings that are new or worse than in OLD_PATH (manifests) or in a saved "
                        "guywire check --format json or sarif report; matched by rule, object and location, "
                        "worse when the severity rose or the observed figure moved further past its limit")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("simulate", help="what if one workload fails: the cascade through retries and timeouts")
    _add_inputs(p)
    p.add_argument("--target", required=True, metavar="NAME[.NS]", help="the workload (or Service) that fails")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--down", action="store_true", help="it never answers")
    mode.add_argument("--latency", metavar="DURATION", help="it answers this late, e.g. 5s")
    mode.add_argument("--error-rate", metavar="P", help="this fraction of calls to it fail at once, e.g. 0.3 or 30%%")
    p.add_argument("--entry", action="append", metavar="NAME[.NS]",
                   help="entry point to follow (repeatable; default: every workload nobody calls)")
    p.add_argument("--rps", type=float, metavar="N", help="requests per second at each entry point, for absolute load")
    add_format_argument(p, "simulate")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("report", help="cluster complexity figures, what changed, and what can be removed")
    _add_inputs(p)
    p.add_argument("--diff", metavar="OLD_PATH", help="compare with an older state: manifests, or the output of "
                                                      "guywire report --format json")
    add_format_argument(p, "report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("graph", help="draw the dependency graph")
    _add_inputs(p)
    add_format_argument(p, "graph")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("rules", help="list the rule catalogue")
    add_format_argument(p, "rules")
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("run", help="run the operator against a cluster")
    from .operator.options import add_run_arguments
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("webhook-config", help="print the ValidatingWebhookConfiguration")
    p.add_argument("--service", default="guywire/guywire", metavar="NS/NAME",
                   help="the webhook's Service (default guywire/guywire)")
    p.add_argument("--base-url", metavar="URL", help="call an operator outside the cluster at this URL instead")
    p.add_argument("--ca-file", metavar="FILE", help="PEM CA certificate to put in caBundle (a private key is refused)")
    p.add_argument("--service-account", default="guywire", help="the operator's ServiceAccount (never judged)")
    p.set_defaults(func=cmd_webhook_config)

    p = sub.add_parser("node-agent", help="watch this node's GPUs through NVML and report their health on the Node")
    from .gpu.flags import add_node_agent_arguments
    add_node_agent_arguments(p)
    p.set_defaults(func=cmd_node_agent)

    p = sub.add_parser("crd", help="print the CustomResourceDefinitions")
    p.add_argument("--output-dir", metavar="DIR", help="write one file per CRD into DIR instead of printing them")
    p.set_defaults(func=cmd_crd)
    return ap


def main(argv: list[str] | None = None, clock: Clock = SYSTEM) -> int:
    """Run one command. ``clock`` is the only clock any command reads (tests hand in a ManualClock)."""
    args = parser().parse_args(argv)
    args.clock = clock
    try:
        return args.func(args)
    except BrokenPipeError:
        return EXIT_CLEAN
    except NothingJudged as exc:
        print_diagnostics(exc.diagnostics)
        print(f"guywire: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:  # bad flag values such as --now
        print(f"guywire: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("guywire: out of memory reading the inputs; check fewer or smaller files.", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
