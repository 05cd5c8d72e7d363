"""Admission and the operator through a real kube-apiserver (scenario 8 of issue 14).

The control plane of tests/cluster (etcd + kube-apiserver built by scripts/build-kube.sh; no
controller-manager, so no ReplicaSets or Pods pile up) is filled with a synthetic cluster
(bench/synth.py), then:

1. the operator (`guywire run`, a process on the host) is started: the time until its policy
   status is written and until every Deployment carries its annotations, and its RSS;
2. admission: ``--creates`` Deployments created one after another by one client, as `kubectl apply`
   would, without any webhook and then with guywire's webhook registered (Enforce policy, every
   workload indexed): client-side latency percentiles, the API server's own measure of the webhook
   call (apiserver_admission_webhook_admission_duration_seconds) and guywire's server-side histogram.
   ``--kubectl N`` also times N real `kubectl create` processes per case.

    python bench/bench_real_cluster.py                       # 10k workloads, 1,000 creates per case
    python bench/bench_real_cluster.py --workloads 1k --creates 200

Prints figures; passes or fails nothing.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_operator import rss_mb  # noqa: E402
from tests.cluster.controlplane import ControlPlane, Process, free_port, wait_until  # noqa: E402

PLURALS = {"Namespace": "namespaces", "Service": "services", "Deployment": "deployments",
           "StatefulSet": "statefulsets", "DaemonSet": "daemonsets", "Job": "jobs", "CronJob": "cronjobs"}


class Rest:
    """A keep-alive HTTPS client per thread, authenticated with the admin client certificate."""

    def __init__(self, plane: ControlPlane):
        self.port = plane.port
        self.ctx = ssl.create_default_context(cafile=str(plane.ca.cert_path))
        self.ctx.load_cert_chain(str(plane.pki / "admin.crt"), str(plane.pki / "admin.key"))
        self.local = threading.local()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):  # the server may close an idle keep-alive connection: reconnect once
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                                     timeout=60)
            try:
                conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def create(self, obj: dict) -> int:
        kind, meta = obj["kind"], obj["metadata"]
        group = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
        ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
        return self.request("POST", f"{group}{ns}/{PLURALS[kind]}", obj)[0]


def fill(rest: Rest, n: int) -> tuple[int, float]:
    import synth

    objs = [o for o in synth.iter_objects(n, seed=11) if o["kind"] in PLURALS]
    t0 = time.perf_counter()
    for o in objs:
        if o["kind"] == "Namespace":
            rest.create(o)
    rest_objs = [o for o in objs if o["kind"] != "Namespace"]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(rest.create, rest_objs))
    bad = [c for c in codes if c not in (201, 409)]
    if bad:
        raise SystemExit(f"filling failed: {len(bad)} creates answered {sorted(set(bad))}")
    return len(objs), time.perf_counter() - t0


def annotated(rest: Rest) -> tuple[int, int]:
    done = total = 0
    cont = ""
    while True:
        _, body = rest.request("GET", f"/apis/apps/v1/deployments?limit=2000{cont}")
        page = json.loads(body)
        for d in page["items"]:
            total += 1
            done += bool((d["metadata"].get("annotations") or {}).get("guywire.dev/complexity-score"))
        token = page["metadata"].get("continue")
        if not token:
            return done, total
        cont = f"&continue={token}"


def metric(text: str, name: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith(name) and ln[len(name):len(name) + 1] in (" ", "{"))


def deployment(name: str, ns: str) -> dict:
    labels = {"app": name, "app.kubernetes.io/name": name}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "app", "image": "ghcr.io/example/app:1.4.2",
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": probe, "livenessProbe": probe,
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"memory": "128Mi"}}}]}}}}


def creates(rest: Rest, ns: str, count: int) -> tuple[list[float], dict[int, int]]:
    rest.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    lat, codes = [], {}
    for i in range(count):
        t = time.perf_counter()
        code = rest.create(deployment(f"d-{i:05d}", ns))
        lat.append((time.perf_counter() - t) * 1000)
        codes[code] = codes.get(code, 0) + 1
    return lat, codes


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(lat: list[float]) -> str:
    return (f"p50 {pct(lat, 50):.2f} ms, p95 {pct(lat, 95):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
            f"mean {statistics.mean(lat):.2f} ms")


def kubectl_times(plane: ControlPlane, ns: str, count: int) -> list[float]:
    out = []
    for i in range(count):
        doc = json.dumps(deployment(f"k-{i:04d}", ns))
        t = time.perf_counter()
        plane.kubectl("create", "-f", "-", input=doc)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    from guywire.kube.webhook_config import webhook_configuration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="10k")
    ap.add_argument("--creates", type=int, default=1000)
    ap.add_argument("--kubectl", type=int, default=0, help="also time this many `kubectl create` per case")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    n = int(float(args.workloads[:-1]) * 1000) if args.workloads.lower().endswith("k") else int(args.workloads)
    bin_dir = Path(os.environ.get("GUYWIRE_KUBE_BIN", ROOT / ".cache" / "kube" / "bin"))
    kubectl = os.environ.get("KUBECTL", str(ROOT / ".cache" / "bin" / "kubectl"))
    if not (bin_dir / "kube-apiserver").exists():
        raise SystemExit("no kube-apiserver: run scripts/build-kube.sh first")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gw-real-bench-"))
    plane = ControlPlane(bin_dir, kubectl, work)
    op = None
    try:
        plane.start(controllers=False)
        rest = Rest(plane)
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/clustercomplexitypolicies.guywire.dev",
                      "crd/complexitypolicies.guywire.dev")
        plane.apply({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                     "metadata": {"name": "baseline"}, "spec": {"enforcement": "Audit"}})
        count, secs = fill(rest, n)
        print(f"API server filled with {count} objects ({n} workloads) in {secs:.1f} s "
              f"({count / secs:.0f} creates/s, 8 clients)", flush=True)

        # the operator authenticates as its ServiceAccount (bound to cluster-admin here, the chart's RBAC is
        # tests/cluster's business), so the webhook configuration filters its own writes as in a cluster
        plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "guywire"}},
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "guywire", "namespace": "guywire"}},
                     {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                      "metadata": {"name": "guywire-bench"},
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                      "subjects": [{"kind": "ServiceAccount", "name": "guywire", "namespace": "guywire"}]}])
        kubeconfig = plane.token_kubeconfig("guywire", "guywire", work / "operator.kubeconfig")
        port, metrics_port = free_port(), free_port()
        cert, key = plane.ca.issue("webhook", "guywire-webhook", hosts=("127.0.0.1",))
        argv = [sys.executable, "-m", "guywire.cli", "run", f"--kubeconfig={kubeconfig}", "--standalone",
                f"--metrics-port={metrics_port}", "--health-port=0", "--status-interval=2s", "--no-policy-reports",
                "--webhook-host=127.0.0.1", f"--webhook-port={port}", f"--webhook-cert={cert}", f"--webhook-key={key}"]
        started = time.perf_counter()
        op = Process("guywire", argv, work / "guywire.log")
        status_at = done_at = None
        peak = cur = 0.0
        while time.perf_counter() - started < args.timeout:
            time.sleep(2.0)
            if not op.alive():
                raise SystemExit("the operator exited:\n" + op.tail(40))
            cur, peak = rss_mb(op.pid)
            st = (plane.get("ccxp", "baseline") or {}).get("status") or {}
            if st.get("matched") and status_at is None:
                status_at = time.perf_counter() - started
                print(f"  policy status written after {status_at:.1f} s: matched {st['matched']}; RSS {cur:.0f} MB",
                      flush=True)
            if status_at is not None:
                done, total = annotated(rest)
                if done >= total:
                    done_at = time.perf_counter() - started
                    break
        time.sleep(5.0)
        cur, peak = rss_mb(op.pid)
        print(f"operator through the real API server, {n} workloads: every Deployment annotated after "
              + (f"{done_at:.1f} s" if done_at else "TIMEOUT") + f"; RSS idle {cur:.0f} MB, peak {peak:.0f} MB",
              flush=True)

        # admission: the same creates without and with the webhook
        base, base_codes = creates(rest, "adm-none", args.creates)
        print(f"creates without webhook ({args.creates}, one client): {summary(base)}; answers {base_codes}",
              flush=True)
        kbase = kubectl_times(plane, "adm-none", args.kubectl) if args.kubectl else []

        vwc = webhook_configuration(base_url=f"https://127.0.0.1:{port}", ca_bundle=plane.ca.cert_path.read_bytes())
        plane.apply(vwc)
        plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "adm-hook"}})
        plane.apply({"apiVersion": "guywire.dev/v1alpha1", "kind": "ComplexityPolicy",
                     "metadata": {"name": "enforce", "namespace": "adm-hook"},
                     "spec": {"enforcement": "Enforce"}})
        # the policy is live in the webhook once a violating create is refused
        bad = deployment("probe-bad", "adm-hook")
        bad["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/example/app:latest"
        wait_until(lambda: rest.request("POST", "/apis/apps/v1/namespaces/adm-hook/deployments?dryRun=All",
                                        bad)[0] not in (200, 201), 60, "the Enforce policy to reach the webhook")
        _, api_before = rest.request("GET", "/metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
            gw_before = r.read().decode()
        hook, hook_codes = creates(rest, "adm-hook", args.creates)
        _, api_after = rest.request("GET", "/metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
            gw_after = r.read().decode()
        khook = kubectl_times(plane, "adm-hook", args.kubectl) if args.kubectl else []
        name = "apiserver_admission_webhook_admission_duration_seconds"
        a_sum = metric(api_after.decode(), name + "_sum") - metric(api_before.decode(), name + "_sum")
        a_cnt = metric(api_after.decode(), name + "_count") - metric(api_before.decode(), name + "_count")
        g_sum = (metric(gw_after, "guywire_admission_duration_seconds_sum")
                 - metric(gw_before, "guywire_admission_duration_seconds_sum"))
        g_cnt = (metric(gw_after, "guywire_admission_duration_seconds_count")
                 - metric(gw_before, "guywire_admission_duration_seconds_count"))
        print(f"creates with guywire's webhook (Enforce, {n} workloads indexed): {summary(hook)}; answers {hook_codes}")
        print(f"  added by the webhook: p50 {pct(hook, 50) - pct(base, 50):+.2f} ms, "
              f"p99 {pct(hook, 99) - pct(base, 99):+.2f} ms, mean {statistics.mean(hook) - statistics.mean(base):+.2f} ms")
        if a_cnt:
            print(f"  API server's webhook call, mean {a_sum / a_cnt * 1000:.2f} ms over {a_cnt:.0f} calls "
                  f"({a_sum / a_cnt * 1000 / statistics.mean(hook) * 100:.0f}% of the mean create)")
        if g_cnt:
            print(f"  guywire server-side, mean {g_sum / g_cnt * 1000:.2f} ms over {g_cnt:.0f} reviews")
        if kbase:
            print(f"kubectl create, {args.kubectl} each: without webhook {summary(kbase)}; with {summary(khook)}")
    finally:
        if op is not None:
            op.stop()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
