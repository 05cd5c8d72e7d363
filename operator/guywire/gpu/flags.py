"""The ``guywire node-agent`` flags. Cheap to import: the CLI builds its parser from them on every run."""
from __future__ import annotations

import argparse
import os

from ..model.gpu_health import MAX_NODE_GPUS
from ..model.units import parse_duration


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero.")
    return seconds


def _gpu_count(text: str) -> int:
    """``--expected-gpus``: the same bound as a scenario's expectedGpus."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= MAX_NODE_GPUS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU count from 0 to {MAX_NODE_GPUS}; give the GPUs "
                                         "this node should have, or leave it out to read them from the Node.")
    return count


def add_node_agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), metavar="NAME",
                   help="the Node to write on (default: $NODE_NAME); the agent only ever writes its own Node")
    p.add_argument("--interval", type=_duration, default=30.0, metavar="DURATION",
                   help="time between reads, e.g. 30s or 1m (default 30s); XID events trigger a read at once")
    p.add_argument("--once", action="store_true", help="read, classify and write once, then exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the annotation JSON on stdout and write nothing (no API server needed)")
    p.add_argument("--fake-nvml", metavar="FILE", help="read GPUs from a YAML scenario instead of NVML")
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig to use (default: in-cluster config, else ~/.kube/config)")
    p.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                   help="serve Prometheus metrics on this port (default 0: off)")
    p.add_argument("--report-max-age", type=_duration, default=300.0, metavar="DURATION",
                   help="the policies' gpu.reportMaxAge; the agent rewrites an unchanged report every half of it "
                        "(default 5m)")
    p.add_argument("--health-config", metavar="FILE", help="YAML that changes the XID table and thresholds "
                                                            "(see docs/gpu-health.md)")
    p.add_argument("--expected-gpus", type=_gpu_count, metavar="N",
                   help="GPUs this node should have (default: from the Node's nvidia.com/gpu.count label, else "
                        "its nvidia.com/gpu capacity)")
    p.add_argument("--boot-id-file", default="/proc/sys/kernel/random/boot_id", metavar="FILE",
                   help="where the node's boot ID is read (a reboot clears latched XIDs)")
