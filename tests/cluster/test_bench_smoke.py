"""Scenario 8 in CI: bench/bench_real_cluster.py runs end to end at a size that costs seconds (its own control
plane, the operator, 10 creates without and with guywire's webhook). Its figures are printed, never judged
here (speed is measured in bench/, not asserted by tests); what is checked is that every step happened: the
operator annotated every Deployment, every create was allowed, and the API server called the webhook for each
create with the webhook registered."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CREATES = 10


def test_the_real_cluster_benchmark_runs_end_to_end(kube_bin, tools):
    env = {**os.environ, "GUYWIRE_KUBE_BIN": str(kube_bin), "KUBECTL": tools["kubectl"]}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_real_cluster.py"), "--workloads", "20",
                          "--creates", str(CREATES), "--timeout", "120"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    text = out.stdout
    assert out.returncode == 0, (text + out.stderr)[-4000:]
    assert re.search(r"20 workloads: every Deployment annotated after [0-9.]+ s; RSS idle \d+ MB", text), text
    assert f"creates without webhook ({CREATES}, one client)" in text, text
    assert text.count(f"answers {{201: {CREATES}}}") == 2, text  # every create allowed, with and without the webhook
    assert re.search(rf"API server's webhook call, mean [0-9.]+ ms over {CREATES} calls", text), text
    assert re.search(rf"guywire server-side, mean [0-9.]+ ms over {CREATES} reviews", text), text
