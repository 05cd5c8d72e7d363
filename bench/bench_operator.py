"""The operator's memory and start-up with N workloads indexed: `guywire run` as its own process
against the test API server (tests/kubeapi.py) filled with a synthetic cluster (bench/synth.py).

It reports how long the operator took from start to having annotated every violating workload
(the initial listing of every kind, the graph, a full evaluation and the writes), its peak RSS
(VmHWM) and the RSS once it is idle. The API server runs in this process, so its memory is not
counted. The test server is an emulator (every write goes through kmock's histories), so wall times
are an upper bound; the memory figure is the operator's own.

    python bench/bench_operator.py                   # 10k workloads (about 70 s)
    python bench/bench_operator.py --workloads 2k
    python bench/bench_operator.py --pods 1          # and a running pod per Deployment, as in a cluster

Prints figures; passes or fails nothing. Target (DESIGN.md): under 200 MB with 10,000 workloads.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def pods_of(deployment: dict, count: int) -> list[dict]:
    """``count`` running pods of a Deployment, as its ReplicaSet makes them (the ReplicaSet itself is left
    out: the operator only follows the owner reference)."""
    meta, template = deployment["metadata"], deployment["spec"]["template"]
    rs = f"{meta['name']}-5d8f9c7b6"
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{rs}-{i:05d}", "namespace": meta["namespace"],
                          "labels": dict(template.get("metadata", {}).get("labels") or {}),
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                               "uid": f"uid-{rs}", "controller": True}]},
             "spec": {**template["spec"], "nodeName": f"node-{i % 50:02d}"},
             "status": {"phase": "Running"}} for i in range(count)]


def main() -> None:
    import synth
    from tests.kubeapi import KubeApiServer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="10k")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--pods", type=int, default=0,
                    help="running pods per Deployment (owned by a ReplicaSet, as in a cluster); default none")
    args = ap.parse_args()
    n = int(float(args.workloads[:-1]) * 1000) if args.workloads.lower().endswith("k") else int(args.workloads)

    cluster = synth.generate(n, seed=11)
    api = KubeApiServer(bookmark_interval=5.0, history_size=1000)
    api.start()
    tmp = tempfile.mkdtemp(prefix="gw-operator-bench-")
    kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
    api.create({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                "metadata": {"name": "baseline"}, "spec": {"enforcement": "Audit"}})
    t0 = time.perf_counter()
    pods = 0
    for obj in cluster.objects():
        if obj["kind"] == "Namespace" and api.get("namespaces", obj["metadata"]["name"]):
            continue
        api.create(obj)
        if obj["kind"] == "Deployment":
            for pod in pods_of(obj, args.pods):
                api.create(pod)
                pods += 1
    fill_s = time.perf_counter() - t0
    print(f"API server filled with {n} workloads, {len(cluster.services)} Services, {pods} pods in {fill_s:.1f} s",
          flush=True)

    cmd = [sys.executable, "-m", "guywire.cli", "run", "--kubeconfig", str(kubeconfig), "--standalone",
           "--metrics-port", "0", "--health-port", "0", "--status-interval", "2s", "--no-policy-reports"]
    started = time.perf_counter()
    log_path = Path(tmp) / "operator.log"
    log_file = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    warm_at = done_at = None
    peak = 0.0
    deadline = started + args.timeout
    status_seen = False
    try:
        while time.perf_counter() < deadline:
            time.sleep(1.0)
            if proc.poll() is not None:
                print("the operator exited:", log_path.read_text()[-2000:])
                return
            cur, peak = rss_mb(proc.pid)
            status = (api.get("clustercomplexitypolicies.guywire.dev", "baseline") or {}).get("status") or {}
            if status.get("matched") and not status_seen:
                status_seen = True
                warm_at = time.perf_counter() - started
                print(f"  policy status written after {warm_at:.1f} s: matched {status['matched']}, "
                      f"violating {status['violating']}; RSS {cur:.0f} MB", flush=True)
            if status_seen:
                annotated = sum(1 for w in api.objects("deployments.apps")
                                if (w["metadata"].get("annotations") or {}).get("guywire.dev/complexity-score"))
                total = len(api.objects("deployments.apps"))
                if annotated >= total:
                    done_at = time.perf_counter() - started
                    break
        time.sleep(5.0)  # idle a little: what it holds once the writes are done
        cur, peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        api.stop()
    print(f"guywire operator, {n} workloads indexed (plus their Services, Namespaces, ServiceMonitors"
          f"{f', {pods} pods' if pods else ''}):")
    if not done_at:
        print("  operator log tail:\n" + log_path.read_text()[-3000:])
    print(f"  every Deployment annotated after {done_at:.1f} s" if done_at else "  did not finish annotating in time")
    print(f"  RSS idle {cur:.0f} MB, peak {peak:.0f} MB; target under 200 MB -> "
          f"{'met' if peak < 200 else 'NOT MET'}")


if __name__ == "__main__":
    main()
