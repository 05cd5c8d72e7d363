"""``guywire run``: the operator process — kopf, metrics, health probes, logging."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import zlib
from datetime import datetime, timezone
from typing import Any

import kopf

from ..clock import SYSTEM, Clock, rfc3339
from ..kube.client import ConfigError, KubeClient, load_config, load_reachable_config
from .metrics import OperatorMetrics
from ..model.units import parse_duration
from .handlers import build_registry
from .options import add_run_arguments  # noqa: F401  (re-exported for the CLI)
from .settings import Settings
from .state import OperatorState
from .webhook import WebhookSettings

log = logging.getLogger("guywire.operator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": rfc3339(datetime.fromtimestamp(record.created, timezone.utc)),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in ("k8s_obj", "object"):
            if hasattr(record, key):
                out[key] = str(getattr(record, key))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(fmt: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("kopf").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def settings_from(args: Any) -> Settings:
    users = frozenset({f"system:serviceaccount:{args.own_namespace}:{args.service_account}"})
    return Settings(own_namespace=args.own_namespace, audit_interval=parse_duration(args.audit_interval),
                    status_interval=parse_duration(args.status_interval),
                    events_per_second=args.events_per_second,
                    instance=os.environ.get("POD_NAME") or Settings().instance, own_users=users,
                    taint_unhealthy_gpu_nodes=args.taint_unhealthy_gpu_nodes,
                    taint_max_fraction=args.taint_max_fraction, policy_reports=args.policy_reports,
                    reports_api=getattr(args, "reports_api", "auto"),
                    insights_interval=parse_duration(args.insights_interval))


def peering_priority(args: Any) -> int:
    """kopf pauses every replica that sees a live peer of the same priority, so replicas must differ:
    an explicit --priority, else a number derived from the pod's name (stable across restarts)."""
    if getattr(args, "priority", None) is not None:
        return args.priority
    name = os.environ.get("POD_NAME") or Settings().instance
    return 1 + zlib.crc32(name.encode()) % 1_000_000


def webhook_settings(args: Any) -> WebhookSettings | None:
    if not args.webhook_port:
        return None
    return WebhookSettings(host=args.webhook_host, port=args.webhook_port, cert=args.webhook_cert,
                           key=args.webhook_key, insecure=args.webhook_insecure)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the client configuration guywire loaded (the same for both clients)."""
    token = None
    auth = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    if auth:
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
        token=token,
        username=configuration.username or None,
        password=configuration.password or None,
    )


def make_memo(state: OperatorState, **extra: Any) -> kopf.Memo:
    """kopf's memo: the operator's state and its metrics (the webhook counts into them too), and ``extra``."""
    memo = kopf.Memo()
    memo["state"] = state
    memo["metrics"] = state.metrics
    memo.update(extra)
    return memo


async def operate(args: Any, *, stop_flag: Any = None, ready_flag: Any = None,
                  settings: kopf.OperatorSettings | None = None, clock: Clock = SYSTEM,
                  configuration: Any = None) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives). ``clock`` is the one clock the
    state and the client read; handlers reach it through the memo's state."""
    if configuration is None:
        configuration = load_config(args.kubeconfig, args.context)
    client = KubeClient(configuration, clock=clock)
    metrics = OperatorMetrics()  # this operator's own registry: another one in this process counts apart
    state = OperatorState(client, settings_from(args), clock=clock, metrics=metrics)
    registry = build_registry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=metrics.registry)
    namespaces = [n for n in args.namespace if n]
    clusterwide = args.all_namespaces or not namespaces
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    try:
        await kopf.operator(registry=registry, settings=settings, memo=make_memo(state, webhook=webhook_settings(args),
                                                                             clusterwide=clusterwide,
                                                                             namespaces=[] if clusterwide else namespaces),
                            standalone=args.standalone, priority=None if args.standalone else peering_priority(args),
                            peering_name=None if args.standalone else args.peering, clusterwide=clusterwide,
                            namespaces=[] if clusterwide else namespaces, liveness_endpoint=liveness,
                            stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        client.close()


def cmd_run(args: Any, clock: Clock = SYSTEM) -> int:
    try:  # kopf retries an unreachable server for a minute, logging tracebacks: ask it once first
        configuration = load_reachable_config(args.kubeconfig, args.context)
    except ConfigError as exc:  # one line, before any logging: what is missing or unreachable, what to do
        print(f"guywire: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_format, args.verbose)
    log.info("guywire operator starting (%s).", "all namespaces" if (args.all_namespaces or not args.namespace)
             else ", ".join(args.namespace))
    try:
        asyncio.run(operate(args, clock=clock, configuration=configuration))
    except KeyboardInterrupt:
        pass
    return 0


def run_in_thread(args: Any, clock: Clock = SYSTEM) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Start the operator in a thread with its own loop (tests, embedding); returns (thread, stop, ready)."""
    stop, ready = threading.Event(), threading.Event()

    settings = kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = None  # never SIGKILL the embedding process

    def target() -> None:
        asyncio.run(operate(args, stop_flag=stop, ready_flag=ready, settings=settings, clock=clock))

    thread = threading.Thread(target=target, name="guywire-operator", daemon=True)
    thread.start()
    return thread, stop, ready
