"""The admission webhook under hostile clients, on loopback only, bounded in count and time.

Three phases against one server process (bench_webhook's, a synthetic cluster indexed, pinned to core 0
where taskset exists; the clients then run on the other cores), while a well-formed client sends reviews at
a fixed rate and its latency is recorded:

1. quiet: only the well-formed client;
2. connections: ``--idle`` TLS connections that finish the handshake and send nothing, plus ``--slow``
   clients that send a request's headers one byte per second; the server's RSS is sampled, and each
   hostile connection notes whether the server closed it; afterwards, with every client gone, the RSS
   again (is memory given back?);
3. costly: ``--costly`` clients, in a process of their own, each sending a review of about 2 MB (a
   Deployment with many containers whose env names in-cluster Services), and again ``--costly-pause``
   seconds after each answer (0: at once, a storm).

    python bench/bench_webhook_hostile.py                         # 1k workloads, 2,000 idle, 20 slow, 32 costly
    python bench/bench_webhook_hostile.py --idle 200 --phase 5    # a short run

Prints figures; passes or fails nothing. Nothing is sent anywhere but 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
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

from bench_webhook import make_requests, parse_size, percentile, self_signed  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def costly_review(i: int) -> bytes:
    """About 2.3 MB: 120 containers, each with 60 env values naming in-cluster Services."""
    containers = [{"name": f"c{c}", "image": "registry.example/app:1.0",
                   "env": [{"name": f"URL_{c}_{e}", "value": f"http://svc-{c}-{e}.ml.svc.cluster.local:8080/" + "p" * 200}
                           for e in range(60)]} for c in range(120)]
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": f"costly-{i}", "namespace": "ml", "labels": {"app": "costly"}},
           "spec": {"selector": {"matchLabels": {"app": "costly"}},
                    "template": {"metadata": {"labels": {"app": "costly"}}, "spec": {"containers": containers}}}}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"costly-{i}", "operation": "CREATE", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "namespace": "ml", "name": obj["metadata"]["name"], "object": obj, "oldObject": None, "dryRun": False,
        "userInfo": {"username": "bench"}}}).encode()


async def well_formed(port: int, bodies: list[bytes], rps: float, seconds: float) -> dict:
    import aiohttp

    lat: list[float] = []
    errors: list[str] = []
    url = f"https://127.0.0.1:{port}/validate/workloads"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure(), limit=16)) as session:
        async def one(body: bytes) -> None:
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(f"HTTP {r.status}")
                        return
                lat.append((time.perf_counter() - t) * 1000)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(type(exc).__name__)

        start, tasks = time.perf_counter(), []
        for i in range(int(rps * seconds)):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
    return {"lat": lat, "errors": errors, "sent": int(rps * seconds)}


async def idle_client(port: int, stop: asyncio.Event, closed: list[int], opened: list[int], failed: list[int],
                      gate: asyncio.Semaphore) -> None:
    try:
        async with gate:  # at most so many handshakes at once: the driver is one process too
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=insecure()), 30)
    except Exception:  # noqa: BLE001 - refused, reset or timed out: never held
        failed.append(1)
        return
    opened.append(1)
    eof = asyncio.ensure_future(reader.read(1))
    halt = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({eof, halt}, return_when=asyncio.FIRST_COMPLETED)
        if eof.done() and not eof.exception() and eof.result() == b"":
            closed.append(1)
    finally:
        eof.cancel()
        halt.cancel()
        writer.close()


async def slow_client(port: int, stop: asyncio.Event, closed: list[int]) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=insecure()), 30)
        writer.write(b"POST /validate/workloads HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            writer.write(b"X")
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    closed.append(1)
                    break
            except asyncio.TimeoutError:
                pass
        writer.close()
    except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
        closed.append(1)


async def costly_client(port: int, body: bytes, until: float, lat: list[float], codes: dict, pause: float) -> None:
    import aiohttp

    url = f"https://127.0.0.1:{port}/validate/workloads"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure(), limit=1)) as session:
        while time.perf_counter() < until:
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    codes[r.status] = codes.get(r.status, 0) + 1
            except Exception as exc:  # noqa: BLE001
                codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
            lat.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(pause)


async def sample(pid: int, stop: asyncio.Event, peaks: list[float]) -> None:
    while True:
        peaks.append(rss_mb(pid))
        if stop.is_set():
            return
        await asyncio.sleep(0.25)


def show(name: str, r: dict) -> None:
    lat = r["lat"]
    errs = f"; errors {len(r['errors'])} {sorted(set(r['errors']))}" if r["errors"] else ""
    print(f"  {name:12s} well-formed: {len(lat)}/{r['sent']} answered, p50 {percentile(lat, 50):7.1f} ms, "
          f"p99 {percentile(lat, 99):7.1f} ms, max {max(lat) if lat else float('nan'):7.1f} ms{errs}")


async def run(args, port: int, pid: int, bodies: list[bytes]) -> None:
    print(f"  server RSS at start {rss_mb(pid):.0f} MB")
    await well_formed(port, bodies, 10, 1)  # warm-up
    show("quiet", await well_formed(port, bodies, args.rps, args.phase))

    stop = asyncio.Event()
    closed_idle: list[int] = []
    opened: list[int] = []
    closed_slow: list[int] = []
    peaks: list[float] = []
    failed: list[int] = []
    gate = asyncio.Semaphore(64)
    hostile = [asyncio.ensure_future(idle_client(port, stop, closed_idle, opened, failed, gate))
               for _ in range(args.idle)]
    hostile += [asyncio.ensure_future(slow_client(port, stop, closed_slow)) for _ in range(args.slow)]
    sampler = asyncio.ensure_future(sample(pid, stop, peaks))
    t0 = time.perf_counter()
    while len(opened) + len(failed) < args.idle and time.perf_counter() - t0 < 90:  # the pile-up, bounded
        await asyncio.sleep(0.2)
    piled = time.perf_counter() - t0
    result = await well_formed(port, bodies, args.rps, args.phase)
    held = len(opened) - len(closed_idle)
    stop.set()
    await asyncio.gather(*hostile, sampler)
    show("connections", result)
    print(f"  {'':12s} {args.idle} idle TLS connections tried in {piled:.0f} s: {len(opened)} handshaken, "
          f"{len(failed)} refused or timed out, {held} still held by the server after {args.phase:g} s more; "
          f"{args.slow} slow-header clients: "
          f"{len(closed_slow)} closed by the server; server RSS peak {max(peaks):.0f} MB")
    await asyncio.sleep(3)
    print(f"  {'':12s} server RSS 3 s after every hostile client left: {rss_mb(pid):.0f} MB")

    # The costly clients run in a process of their own, so that the well-formed client's latency is the
    # server's doing, not this driver's event loop encrypting megabytes.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=costly_process, args=(port, args.costly, args.phase + 2, args.costly_pause, out))
    proc.start()
    await asyncio.sleep(2)  # let the costly load build up first
    result = await well_formed(port, bodies, args.rps, args.phase)
    lat, codes, size = await asyncio.to_thread(out.get, True, 120)
    proc.join(30)
    show("costly", result)
    print(f"  {'':12s} {args.costly} clients each sending a {size / 1e6:.1f} MB review, then again "
          f"{args.costly_pause:g} s after its answer: {len(lat)} answered, "
          f"p50 {percentile(lat, 50):.0f} ms, max {max(lat) if lat else float('nan'):.0f} ms, answers {codes}; "
          f"server RSS {rss_mb(pid):.0f} MB")


def costly_process(port: int, clients: int, seconds: float, pause: float, out) -> None:
    async def go() -> None:
        until = time.perf_counter() + seconds
        lat: list[float] = []
        codes: dict = {}
        bodies = [costly_review(i) for i in range(clients)]
        await asyncio.gather(*(costly_client(port, b, until, lat, codes, pause) for b in bodies))
        out.put((lat, codes, len(bodies[0])))
    asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="1k")
    ap.add_argument("--rps", type=float, default=20, help="well-formed reviews per second")
    ap.add_argument("--phase", type=float, default=20, help="seconds per phase")
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--costly", type=int, default=32)
    ap.add_argument("--costly-pause", type=float, default=1.0,
                    help="seconds each costly client waits after an answer (0: a storm of retries)")
    args = ap.parse_args()
    workloads = parse_size(str(args.workloads))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.idle + 512)), hard))
    tmp = tempfile.mkdtemp(prefix="gw-webhook-hostile-")
    cert, key = self_signed(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "bench" / "bench_webhook.py"), "--serve", "--workloads", str(workloads),
           "--port", str(port), "--cert", cert, "--key", key, "--out", os.path.join(tmp, "server.json")]
    pinned = shutil.which("taskset") is not None
    server = subprocess.Popen(["taskset", "-c", "0", *cmd] if pinned else cmd, stdout=subprocess.PIPE, text=True)
    clients = "on any core"
    others = set(os.sched_getaffinity(0)) - {0} if pinned and hasattr(os, "sched_setaffinity") else set()
    if others:  # the clients (this process and the costly one it spawns) never take the server's core
        os.sched_setaffinity(0, others)
        clients = f"on core{'s' if len(others) > 1 else ''} {','.join(map(str, sorted(others)))}"
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the server did not start"
        print(f"guywire webhook under hostile clients: {workloads} workloads indexed, well-formed reviews at "
              f"{args.rps:g}/s, {args.phase:g} s per phase, server {'pinned to core 0' if pinned else 'not pinned'}, clients {clients}, "
              f"load average {os.getloadavg()[0]:.2f}")
        asyncio.run(run(args, port, server.pid, make_requests(workloads, 500, seed=3)))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
