"""Scenario 8 in CI: bench/bench_real_cluster.py runs end to end at a size that costs seconds (its own control
plane, the operator, 10 creates without and with guywire's webhook). Its figures are printed, never judged
here (speed is measured in bench/, not asserted by tests); what is checked is that every step happened: the
operator annotated every Deployment, every create was allowed, and the API server called the webhook for each
create with the webhook registered."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster.controlplane import wait_until

ROOT = Path(__file__).resolve().parents[2]
CREATES = 10


def _stat(pid: int | str) -> list[str]:
    """A process's /proc stat fields after its name: state, parent PID, ... ([] once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if fields := _stat(entry.name):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def stop_group(proc: subprocess.Popen) -> None:
    """TERM, then KILL what has not ended in 15 s: the bench's process group, and what it started in sessions of
    its own (the control plane), found before the bench dies and they are handed to init."""
    started = descendants(proc.pid)

    def ended() -> bool:
        return proc.poll() is not None and all(_stat(p)[:1] in ([], ["Z"]) for p in started)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for kill, pid in [(os.killpg, proc.pid), *((os.kill, p) for p in started)]:
            try:
                kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            wait_until(ended, 15, "the benchmark and its processes to end")
            return
        except AssertionError:
            continue


def test_the_real_cluster_benchmark_runs_end_to_end(kube_bin, tools):
    env = {**os.environ, "GUYWIRE_KUBE_BIN": str(kube_bin), "KUBECTL": tools["kubectl"]}
    # In a session of its own, so that a timeout stops its whole group (kubectl ...), not only its Python; what it
    # starts in sessions of their own (control plane, operator) stop_group stops by PID.
    bench = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_real_cluster.py"), "--workloads", "20",
                              "--creates", str(CREATES), "--timeout", "120"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        text, err = bench.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        stop_group(bench)
        text, err = bench.communicate()
        raise AssertionError(f"the benchmark did not end in 300 s:\n{(text + err)[-4000:]}") from None
    assert bench.returncode == 0, (text + err)[-4000:]
    assert re.search(r"20 workloads: every Deployment annotated after [0-9.]+ s; RSS idle \d+ MB", text), text
    assert f"creates without webhook ({CREATES}, one client)" in text, text
    assert text.count(f"answers {{201: {CREATES}}}") == 2, text  # every create allowed, with and without the webhook
    assert re.search(rf"API server's webhook call, mean [0-9.]+ ms over {CREATES} calls", text), text
    assert re.search(rf"guywire server-side, mean [0-9.]+ ms over {CREATES} reviews", text), text
