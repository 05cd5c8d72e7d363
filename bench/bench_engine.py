"""Engine benchmark on synthetic clusters: full evaluation, one change, peak RSS.

    python bench/bench_engine.py                      # 1k, 10k and 50k workloads
    python bench/bench_engine.py --sizes 10k --changes 500
    python bench/bench_engine.py --sizes 10k --profile  # cProfile of the slow phases
    python bench/bench_engine.py --sizes 1k,10k --cli   # also `guywire check` vs parsing the YAML
    python bench/bench_engine.py --verify               # incremental results == a full re-evaluation?

Each size runs in its own fresh interpreter (a subprocess) so that peak RSS is
that size's alone. Phases, each timed with perf_counter (views, graph+engine and
evaluate_all: the best of ``--repeat`` runs, the one least disturbed by other processes):

- generate: bench/synth.py builds the cluster as plain dicts (not part of guywire);
- views: guywire.views.inventory.view_of on every object, added to an Inventory;
- graph+engine: Engine(...) construction, which builds the Graph (indexes, edges,
  SCCs, depth, amplification);
- evaluate_all: every policy x every workload x every rule, plus the result;
- one change: a workload's annotations changed (retry policy, a dependency dropped
  or added) and handed to engine.upsert(view); timed is the upsert, which
  re-links the graph and judges again everything the change can affect. Changes are
  drawn over entry workloads (gateways: no callers), leaves (stores: no
  dependencies) and any workload, 1/3 each.

Targets (DESIGN.md "Performance targets"): 10k workloads full evaluation under
1 s; one workload changed under 10 ms; operator memory under 200 MB with 10k
workloads indexed. This prints figures; it does not pass or fail.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

FULL_TARGET_S = 1.0
CHANGE_TARGET_MS = 10.0
MEMORY_TARGET_MB = 200.0


def parse_size(text: str) -> int:
    text = text.strip().lower()
    if text.endswith("k"):
        return int(float(text[:-1]) * 1000)
    return int(text)


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def profile(label: str, fn, top: int = 18) -> None:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    total = sum(v[2] for v in stats.stats.values())  # tottime summed
    print(f"\n--- cProfile: {label} (total {total:.3f} s under the profiler) ---", file=sys.stderr)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"{'tottime':>8} {'share':>6} {'cumtime':>8} {'calls':>9}  function", file=sys.stderr)
    for (file, line, func), (cc, nc, tt, ct, _) in rows:
        where = f"{os.path.relpath(file, os.path.dirname(HERE)) if file.startswith('/') else file}:{line}({func})"
        print(f"{tt:8.3f} {tt / total:6.1%} {ct:8.3f} {nc:9d}  {where}", file=sys.stderr)


def best_of(repeat: int, fn):
    """(last result, best wall time, every wall time) of ``repeat`` calls, each after a garbage collection."""
    times, result = [], None
    for _ in range(max(1, repeat)):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, min(times), times


def run_one(n: int, changes: int, seed: int, do_profile: bool, cli: bool, verify: bool = False,
            repeat: int = 3) -> dict:
    """Everything for one size, in this (fresh) process."""
    base_rss = rss_mb()
    import synth  # noqa: E402 - bench/ is on sys.path
    from guywire.engine.evaluator import Engine
    from guywire.views.inventory import Inventory, view_of
    from guywire.model.policy import baseline_policy

    out: dict = {"n": n, "rss_start_mb": base_rss, "rss_after_import_mb": rss_mb()}
    t = time.perf_counter()
    cluster = synth.generate(n, seed)
    out["generate_s"] = time.perf_counter() - t
    out["workloads"] = len(cluster.workloads)
    out["services"] = len(cluster.services)
    out["namespaces"] = len(cluster.namespaces)

    def build_views() -> Inventory:
        inv = Inventory()
        for obj in cluster.objects():
            view = view_of(obj)
            if view is not None:
                inv.add(view)
        return inv

    # each phase best of ``repeat`` runs: the run least disturbed by other processes
    inv, out["views_s"], out["views_runs"] = best_of(repeat, build_views)
    engine, out["graph_engine_s"], out["graph_engine_runs"] = best_of(repeat, lambda: Engine([baseline_policy()], inv))
    stats = engine.graph.stats()
    out["edges"], out["cycles"], out["max_depth"] = stats["edges"], stats["cycles"], stats["maxDepth"]

    result, out["evaluate_all_s"], out["evaluate_all_runs"] = best_of(repeat, engine.evaluate_all)
    out["findings"] = len(result.findings)
    out["full_s"] = out["graph_engine_s"] + out["evaluate_all_s"]

    if do_profile:
        profile(f"Engine(...) construction with its Graph, {n} workloads",
                lambda: Engine([baseline_policy()], inv))
        profile(f"evaluate_all, {n} workloads", engine.evaluate_all)

    # ----- one change at a time -------------------------------------------------------------
    rng = random.Random(seed + 1)
    objs = {(o["metadata"]["namespace"], o["kind"], o["metadata"]["name"]): o for o in cluster.workloads}
    entries = [k for k in objs if not engine.graph.callers.get(k)]
    leaves = [k for k in objs if not engine.graph.out.get(k)]
    anyone = list(objs)
    picks: list[tuple[str, tuple]] = []
    for i in range(changes):
        cls, pool = (("entry", entries), ("leaf", leaves), ("any", anyone))[i % 3]
        picks.append((cls, pool[rng.randrange(len(pool))] if pool else anyone[rng.randrange(len(anyone))]))
    timings: dict[str, list[float]] = {"entry": [], "leaf": [], "any": []}
    affected: list[int] = []
    view_ms: list[float] = []

    def change_all() -> None:
        for cls, key in picks:
            changed = synth.mutate(objs[key], rng)
            t0 = time.perf_counter()
            view = view_of(changed)
            t1 = time.perf_counter()
            keys = engine.upsert(view)
            t2 = time.perf_counter()
            objs[key] = changed
            view_ms.append((t1 - t0) * 1e3)
            timings[cls].append((t2 - t1) * 1e3)
            affected.append(len(keys))

    gc.collect()
    change_all()
    all_ms = [v for vs in timings.values() for v in vs]
    out["change_ms"] = {"median": statistics.median(all_ms), "p95": pct(all_ms, 95), "max": max(all_ms)}
    out["change_by_class_ms"] = {c: {"median": statistics.median(v), "p95": pct(v, 95), "max": max(v), "n": len(v)}
                                 for c, v in timings.items() if v}
    out["view_ms_median"] = statistics.median(view_ms)
    out["affected"] = {"median": statistics.median(affected), "p95": pct(affected, 95), "max": max(affected)}
    out["changes"] = len(all_ms)
    if verify:
        # the incremental results must equal a full evaluation of the same final objects
        fresh_inv = Inventory()
        for obj in (*cluster.namespaces, *cluster.services, *cluster.monitors, *objs.values()):
            view = view_of(obj)
            if view is not None:
                fresh_inv.add(view)
        fresh = Engine([baseline_policy()], fresh_inv).evaluate_all()

        def ident(f):
            return (f.rule, str(f.workload), f.location, f.message)

        got, want = {ident(f) for f in engine.result().findings}, {ident(f) for f in fresh.findings}
        out["verify"] = {"missing": len(want - got), "extra": len(got - want), "findings": len(want),
                         "examples": [list(x) for x in sorted(want - got)[:3]]
                         + [list(x) for x in sorted(got - want)[:3]]}
    if do_profile:
        picks = picks[: min(len(picks), 60)]
        for vs in timings.values():
            vs.clear()
        profile(f"{len(picks)} single-workload upserts, {n} workloads", change_all)

    out["peak_rss_mb"] = peak_rss_mb()  # includes the generator's dicts
    out["loadavg"] = os.getloadavg()[0]
    if cli:
        out.update(cli_vs_parse(n, seed))
    return out


def run_memory(n: int, seed: int) -> dict:
    """What the engine alone holds: objects streamed one at a time into views, then graph and full evaluation.

    Run in its own fresh process: peak RSS here is the interpreter and guywire's imports plus the
    inventory, graph and results of ``n`` workloads, as an operator holding them would have.
    """
    import synth
    from guywire.engine.evaluator import Engine
    from guywire.views.inventory import Inventory, view_of
    from guywire.model.policy import baseline_policy

    start = rss_mb()
    inv = Inventory()
    for obj in synth.iter_objects(n, seed):
        view = view_of(obj)
        if view is not None:
            inv.add(view)
    gc.collect()
    views = rss_mb()
    engine = Engine([baseline_policy()], inv)
    engine.evaluate_all()
    gc.collect()
    return {"rss_imports_mb": start, "rss_views_mb": views, "rss_engine_mb": rss_mb(),
            "peak_engine_rss_mb": peak_rss_mb(),
            "workloads": len(engine.inventory.workloads)}


def cli_vs_parse(n: int, seed: int) -> dict:
    """Write the cluster as YAML; time parsing it alone vs `guywire check` on it (both fresh processes)."""
    import shutil
    import tempfile

    import synth

    tmp = tempfile.mkdtemp(prefix=f"guywire-bench-{n}-")
    try:
        synth.write_yaml(synth.generate(n, seed), tmp)
        parse = ("import os,sys,yaml\n"
                 "n=0\n"
                 "for root,_,files in os.walk(sys.argv[1]):\n"
                 "  for f in files:\n"
                 "    with open(os.path.join(root,f),'rb') as fh:\n"
                 "      n+=sum(1 for d in yaml.load_all(fh.read().decode(),Loader=yaml.CSafeLoader) if d)\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(os.path.dirname(HERE), ".cache", "pycache")
        best = {}
        for label, cmd in (("parse_yaml_s", [sys.executable, "-c", parse, tmp]),
                           ("guywire_check_s", [sys.executable, "-m", "guywire.cli", "check", tmp,
                                                "--format", "json"])):
            times = []
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # warm-up
            for _ in range(3):
                t = time.perf_counter()
                proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
                times.append(time.perf_counter() - t)
                if proc.returncode not in (0, 1):
                    raise SystemExit(f"{label}: exit {proc.returncode}: {proc.stderr.decode()[-2000:]}")
            best[label] = min(times)
        return best
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(rows: list[dict]) -> None:
    import platform

    print(f"\nguywire engine benchmark - {time.strftime('%Y-%m-%d')} - Python {platform.python_version()} - "
          f"{os.cpu_count()} CPUs - {platform.machine()} ({platform.platform(terse=True)})")
    print("1-minute load average at the end of each size: "
          + ", ".join(f"{r['workloads']}: {r['loadavg']:.2f}" for r in rows)
          + " (other processes on the machine skew wall times)")
    print("one policy (the built-in baseline: every rule on); times in seconds unless marked ms; views, graph+eng "
          "and eval_all\nare the best of --repeat runs (every run is in the --json output)\n")
    head = (f"{'workloads':>9} {'svcs':>6} {'edges':>6} {'views':>7} {'graph+eng':>9} {'eval_all':>8} "
            f"{'full':>7} {'chg med':>8} {'chg p95':>8} {'chg max':>8} {'affected':>9} {'peak RSS':>9} "
            f"{'engine RSS':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        a = r["affected"]
        print(f"{r['workloads']:>9} {r['services']:>6} {r['edges']:>6} {r['views_s']:>7.3f} "
              f"{r['graph_engine_s']:>9.3f} {r['evaluate_all_s']:>8.3f} {r['full_s']:>7.3f} "
              f"{r['change_ms']['median']:>6.2f}ms {r['change_ms']['p95']:>6.2f}ms {r['change_ms']['max']:>6.2f}ms "
              f"{a['median']:>4.0f}/{a['max']:<4.0f} {r['peak_rss_mb']:>7.0f}MB "
              f"{r['memory']['peak_engine_rss_mb']:>8.0f}MB")
    print("\nfull = graph+eng + eval_all (Engine construction builds the graph; views not included);"
          "\nchg = engine.upsert(view) for one changed workload; affected = workloads judged again (median/max);"
          "\npeak RSS: the timing process, generator's dicts included; engine RSS: peak of a separate process that"
          "\nstreams the objects into views, builds the engine and evaluates (imports alone: "
          f"{rows[0]['memory']['rss_imports_mb']:.0f} MB).")
    print("\none change by kind of workload changed (median / p95 / max, ms):")
    for r in rows:
        parts = [f"{c} {v['median']:.2f} / {v['p95']:.2f} / {v['max']:.2f}"
                 for c, v in r["change_by_class_ms"].items()]
        print(f"  {r['workloads']:>6}: " + "; ".join(parts) + f"  (view_of alone: {r['view_ms_median']:.3f} ms)")
    if any("verify" in r for r in rows):
        print("\nincremental results vs a full evaluation of the same final objects (--verify):")
        for r in rows:
            v = r.get("verify")
            if v:
                state = "identical" if not v["missing"] and not v["extra"] else \
                    f"DIFFER: {v['missing']} findings missing, {v['extra']} extra, e.g. {v['examples'][:2]}"
                print(f"  {r['workloads']:>6}: {v['findings']} findings, {state}")
    if any("guywire_check_s" in r for r in rows):
        print("\n`guywire check DIR --format json` vs parsing the same YAML alone (fresh processes, best of 3):")
        for r in rows:
            if "guywire_check_s" in r:
                print(f"  {r['workloads']:>6}: parse {r['parse_yaml_s']:.3f} s, "
                      f"guywire check {r['guywire_check_s']:.3f} s "
                      f"({r['guywire_check_s'] / r['parse_yaml_s']:.2f}x parsing)")
    print("\ntargets (DESIGN.md; stated for 10,000 workloads, shown for every size):")
    for r in rows:
        n = r["workloads"]
        print(f"  {n} workloads, evaluate_all under {FULL_TARGET_S:.0f} s: {r['evaluate_all_s']:.3f} s -> "
              f"{verdict(r['evaluate_all_s'] < FULL_TARGET_S)}")
        print(f"  {n} workloads, graph build + evaluate_all under {FULL_TARGET_S:.0f} s: {r['full_s']:.3f} s -> "
              f"{verdict(r['full_s'] < FULL_TARGET_S)}")
        print(f"  {n} workloads, one change under {CHANGE_TARGET_MS:.0f} ms (p95): "
              f"{r['change_ms']['p95']:.2f} ms -> {verdict(r['change_ms']['p95'] < CHANGE_TARGET_MS)} "
              f"(median {r['change_ms']['median']:.2f} ms, max {r['change_ms']['max']:.2f} ms)")
        mem = r["memory"]["peak_engine_rss_mb"]
        print(f"  {n} workloads, memory under {MEMORY_TARGET_MB:.0f} MB (engine RSS): {mem:.0f} MB -> "
              f"{verdict(mem < MEMORY_TARGET_MB)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1k,10k,50k", help="comma-separated workload counts (default 1k,10k,50k)")
    ap.add_argument("--changes", type=int, default=200, help="single-workload changes to time per size")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3, help="runs of views / graph / evaluate_all; the best is shown")
    ap.add_argument("--profile", action="store_true", help="cProfile graph build, evaluate_all and upserts (stderr)")
    ap.add_argument("--cli", action="store_true", help="also time `guywire check` against parsing the YAML alone")
    ap.add_argument("--verify", action="store_true",
                    help="after the changes, check the incremental results equal a full evaluation of the same objects")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    ap.add_argument("--memory", type=int, help=argparse.SUPPRESS)  # internal: engine memory for one size
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.changes, args.seed, args.profile, args.cli, args.verify,
                                 args.repeat)))
        return
    if args.memory is not None:
        print(json.dumps(run_memory(args.memory, args.seed)))
        return
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",") if s.strip()]:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(size), "--changes", str(args.changes),
               "--seed", str(args.seed), "--repeat", str(args.repeat)] + (["--profile"] if args.profile else []) + (["--cli"] if args.cli else []) \
            + (["--verify"] if args.verify else [])
        print(f"running {size} workloads ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {size} failed (exit {proc.returncode})")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory", str(size), "--seed",
                               str(args.seed)], stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {size}: memory run failed (exit {proc.returncode})")
        row["memory"] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
    report(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
