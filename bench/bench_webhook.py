"""Admission webhook under load: 200 requests/s for 60 s over HTTPS on loopback, 10,000 workloads indexed.

The server runs in its own process, pinned to one core when ``taskset`` is there, with an
engine of a synthetic cluster (bench/synth.py) and two policies (Warn on everything,
Enforce on GPU workloads). The driver sends AdmissionReviews open-loop at a fixed rate —
CREATEs of new workloads and UPDATEs that change an existing one's dependencies, so
graph rules are judged on the cluster as it would be after each request — and reports
client-side and server-side latency percentiles, errors, decisions and the server's RSS.

    python bench/bench_webhook.py                     # 10k workloads, 200 rps, 60 s
    python bench/bench_webhook.py --workloads 1k --rps 100 --duration 10

Prints figures; passes or fails nothing. Reference points from the issue: Gatekeeper's CEL
engine p99 0.9 ms compute-only, Kyverno end-to-end p99 182 ms at 50 clients.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

POLICIES = [
    {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "warn-all"},
     "spec": {"enforcement": "Warn"}},
    {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy", "metadata": {"name": "enforce-gpu"},
     "spec": {"enforcement": "Enforce", "match": {"gpuOnly": True}}},
]


def parse_size(text: str) -> int:
    text = text.lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# ----- the server process ----------------------------------------------------------------------------
def serve(args) -> None:
    import synth
    from guywire.engine.admission import Admission
    from guywire.engine.evaluator import Engine
    from guywire.views.inventory import Inventory, view_of
    from guywire.model.policy import parse_policy
    from guywire.operator.webhook import WebhookServer, WebhookSettings

    cluster = synth.generate(args.workloads, seed=7)
    inventory = Inventory()
    for obj in cluster.objects():
        view = view_of(obj)
        if view is not None:
            inventory.add(view)
    engine = Engine([parse_policy(p) for p in POLICIES], inventory)
    engine.evaluate_all()
    import gc
    gc.collect()
    gc.freeze()  # as the operator does once its index is built
    timings: list[float] = []

    async def main() -> None:
        server = WebhookServer(lambda: Admission(engine), WebhookSettings(
            host="127.0.0.1", port=args.port, cert=args.cert, key=args.key))
        inner = server.handle

        async def timed(request):
            started = time.perf_counter()
            try:
                return await inner(request)
            finally:
                timings.append(time.perf_counter() - started)

        server.handle = timed
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop()

    asyncio.run(main())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps({"server_ms": [t * 1000 for t in timings], "rss_mb": rss}))


# ----- the driver ----------------------------------------------------------------------------------
def make_requests(n_workloads: int, count: int, seed: int) -> list[bytes]:
    import synth

    rng = random.Random(seed)
    cluster = synth.generate(n_workloads, seed=7)
    existing = [w for w in cluster.workloads if w["kind"] in ("Deployment", "StatefulSet")]
    out = []
    for i in range(count):
        base = rng.choice(existing)
        if rng.random() < 0.5:
            obj = synth.mutate(base, rng)
            op, old = "UPDATE", base
        else:
            obj = json.loads(json.dumps(base))
            obj["metadata"]["name"] = f"{base['metadata']['name']}-new-{i}"
            op, old = "CREATE", None
        group = "apps"
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": f"bench-{i}", "operation": op, "kind": {"group": group, "version": "v1", "kind": obj["kind"]},
            "namespace": obj["metadata"]["namespace"], "name": obj["metadata"]["name"], "object": obj,
            "oldObject": old, "dryRun": False, "userInfo": {"username": "bench"}}}
        out.append(json.dumps(review).encode())
    return out


async def drive(port: int, bodies: list[bytes], rps: float, duration: float) -> dict:
    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    latencies: list[float] = []
    outcomes = {"allowed": 0, "warned": 0, "denied": 0}
    errors: list[str] = []
    connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
    url = f"https://127.0.0.1:{port}/validate/workloads"
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(body: bytes) -> None:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    answer = await resp.json()
                latencies.append(time.perf_counter() - started)
                if resp.status != 200:
                    errors.append(f"HTTP {resp.status}")
                    return
                r = answer["response"]
                outcomes["denied" if not r["allowed"] else "warned" if r.get("warnings") else "allowed"] += 1
            except Exception as exc:  # counted, never fatal
                errors.append(type(exc).__name__)

        total = int(rps * duration)
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"latencies_ms": [x * 1000 for x in latencies], "outcomes": outcomes, "errors": errors,
            "sent": total, "elapsed": elapsed}


def self_signed(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="10k")
    ap.add_argument("--rps", type=float, default=200)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workloads = parse_size(str(args.workloads))
    if args.serve:
        serve(args)
        return
    tmp = tempfile.mkdtemp(prefix="gw-webhook-bench-")
    cert, key = self_signed(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tmp, "server.json")
    cmd = [sys.executable, __file__, "--serve", "--workloads", str(args.workloads), "--port", str(port),
           "--cert", cert, "--key", key, "--out", out]
    pinned = shutil.which("taskset") is not None
    if pinned:
        cmd = ["taskset", "-c", "0", *cmd]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready", "the server did not start"
    ready_s = time.perf_counter() - t0
    bodies = make_requests(args.workloads, 2000, seed=3)
    result = asyncio.run(drive(port, bodies, args.rps, args.duration))
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    srv = json.loads(Path(out).read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    lat, s_ms = result["latencies_ms"], srv["server_ms"]
    print(f"guywire admission webhook: {args.workloads} workloads indexed, {args.rps:g} req/s for "
          f"{args.duration:g} s over HTTPS on loopback; server {'pinned to one core' if pinned else 'not pinned'}; "
          f"load average {os.getloadavg()[0]:.2f}; server ready in {ready_s:.1f} s")
    print(f"  sent {result['sent']}, answered {len(lat)}, errors {len(result['errors'])}"
          f"{' ' + str(sorted(set(result['errors']))) if result['errors'] else ''}; achieved "
          f"{len(lat) / result['elapsed']:.1f} req/s; decisions {result['outcomes']}")
    print(f"  server-side  p50 {percentile(s_ms, 50):6.2f} ms  p95 {percentile(s_ms, 95):6.2f} ms  "
          f"p99 {percentile(s_ms, 99):6.2f} ms  max {max(s_ms):6.2f} ms")
    print(f"  client-side  p50 {percentile(lat, 50):6.2f} ms  p95 {percentile(lat, 95):6.2f} ms  "
          f"p99 {percentile(lat, 99):6.2f} ms  max {max(lat):6.2f} ms")
    print(f"  server peak RSS {srv['rss_mb']:.0f} MB")
    p99 = percentile(s_ms, 99)
    print(f"  target: p99 under 5 ms server-side, no errors -> {'met' if p99 < 5 and not result['errors'] else 'NOT MET'}")


if __name__ == "__main__":
    main()
