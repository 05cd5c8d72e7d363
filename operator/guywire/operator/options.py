"""The flags of ``guywire run``, kept apart from kopf so that ``guywire --help`` imports no kopf."""
from __future__ import annotations

import argparse
import os


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", "-n", action="append", metavar="PATTERN", default=[],
                   help="watch namespaces matching this glob (repeatable; '!x' excludes); shards large clusters")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default "
                   "when no --namespace is given)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=8081, help="liveness/readiness /healthz port (0: off)")
    p.add_argument("--audit-interval", default="10m", help="periodic full re-evaluation (default 10m)")
    p.add_argument("--status-interval", default="2s", help="least time between policy status writes")
    p.add_argument("--events-per-second", type=float, default=5.0, help="global rate of Events posted")
    p.add_argument("--own-namespace", default=os.environ.get("POD_NAMESPACE", "guywire"),
                   help="guywire's own namespace, never evaluated (default: $POD_NAMESPACE or guywire)")
    p.add_argument("--standalone", action="store_true", help="no peering: run without a leader election")
    p.add_argument("--peering", default="guywire", help="kopf peering name for HA (default guywire)")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority: the highest live replica works, the others wait (default: derived "
                        "from $POD_NAME, so replicas never tie)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--service-account", default=os.environ.get("SERVICE_ACCOUNT_NAME", "guywire"),
                   help="the operator's own ServiceAccount; its requests are never judged by the webhook")
    p.add_argument("--policy-reports", action=argparse.BooleanOptionalAction, default=True,
                   help="write policy reports per namespace for Policy Reporter (default on; skipped when the CRDs "
                        "are absent)")
    p.add_argument("--reports-api", choices=["auto", "wgpolicyk8s", "openreports"], default="auto",
                   help="which reports to write: openreports.io/v1alpha1 Reports, wgpolicyk8s.io/v1alpha2 "
                        "PolicyReports, or auto (default): openreports when the cluster serves it, else wgpolicyk8s")
    p.add_argument("--insights-interval", default="30s",
                   help="how often blast radius annotations and complexity gauges are recomputed (default 30s)")
    g = p.add_argument_group("GPU nodes")
    g.add_argument("--taint-unhealthy-gpu-nodes", action="store_true",
                   help="add guywire.dev/gpu-unhealthy=true:NoSchedule to GPU nodes whose report is Unhealthy, and "
                        "remove it when they recover (off by default)")
    g.add_argument("--taint-max-fraction", type=float, default=0.5,
                   help="circuit breaker: never taint more than this fraction of GPU nodes (default 0.5)")
    w = p.add_argument_group("admission webhook (served only with --webhook-port)")
    w.add_argument("--webhook-host", default="0.0.0.0", help="address to listen on")
    w.add_argument("--webhook-port", type=int, default=0, help="HTTPS port of the validating webhook")
    w.add_argument("--webhook-cert", help="TLS certificate file (PEM), reloaded when it changes")
    w.add_argument("--webhook-key", help="TLS private key file (PEM), reloaded when it changes")
    w.add_argument("--webhook-insecure", action="store_true", help="serve plain HTTP: local testing only")
