"""kopf handlers: thin translations from watch events to the operator state. No rule logic here.

Every watched kind gets one ``<resource>_event`` handler. It is ``async``: kopf runs sync
handlers in a thread pool, which would let watch events change the engine while the writer
or the webhook (on the event loop) reads it; async handlers run on the loop, one at a time,
and their work is short and synchronous. Objects from kopf's initial listing (event type
None) go to the inventory only, until the listing gate (gate.py) says the whole cluster is
known: the graph is then built once, and kept up to date incrementally. No kopf indexes:
kopf holds every object's first event until its indexes are populated, which cost about
12 KB per object and O(n^2) wake-ups at start-up (gate.py).
"""
from __future__ import annotations

import logging
from typing import Any

import kopf

from ..views.aikinds import AI_KINDS

from .state import OperatorState
from .webhook import WebhookServer

log = logging.getLogger("guywire.operator")

#: (group, version, plural) of every kind the operator watches.
WATCHED = [
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "daemonsets"),
    ("apps", "v1", "replicasets"),
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
    ("", "v1", "pods"),  # bare pods are workloads; GPU pods tell which nodes a workload runs on
    ("", "v1", "services"),
    ("", "v1", "namespaces"),
    ("", "v1", "nodes"),
    ("monitoring.coreos.com", "v1", "servicemonitors"),
    ("monitoring.coreos.com", "v1", "podmonitors"),
    ("guywire.dev", "v1alpha1", "complexitypolicies"),
    ("guywire.dev", "v1alpha1", "clustercomplexitypolicies"),
] + [(k.group, k.version, k.plural) for k in AI_KINDS.values()] + [  # served only where their CRDs exist
    ("networking.istio.io", None, "virtualservices"),  # the preferred version the cluster serves
    ("networking.istio.io", None, "destinationrules"),
    ("gateway.networking.k8s.io", None, "httproutes"),  # GEP-1731 retries and Linkerd's retry annotations
    ("linkerd.io", None, "serviceprofiles"),  # Linkerd's retryable routes and retry budget
]


def _resource(group: str, version: str | None, plural: str) -> dict:
    """kopf's resource selector; without a version kopf takes the version the cluster prefers."""
    spec: dict = {"plural": plural}
    if group:
        spec["group"] = group
    if version:
        spec["version"] = version
    return spec


def _state(memo: Any) -> OperatorState:
    return memo["state"]


def _object_event(plural: str):
    """The event handler of one watched kind: a function per kind, so each tells ``listed`` its own plural (a
    closure over the loop's variable would give every kind the last one's)."""

    async def object_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        state = _state(memo)
        meta = body.get("metadata", {})
        async with state.engine_lock:  # not while the webhook's worker thread reads the engine
            if type == "DELETED":
                state.forget(body.get("kind"), meta.get("namespace"), meta.get("name"))
                return
            try:
                state.observe(dict(body))
            except Exception:  # a bad object must not stop the others
                log.exception("Cannot read %s %s.", body.get("kind"), meta.get("name"))
        if type is None:  # from kopf's listing: the initial one, or again after a broken watch
            state.listed(body.get("kind"), body.get("apiVersion"), plural)

    return object_event


def build_registry() -> kopf.OperatorRegistry:
    """A fresh registry with guywire's handlers, so tests can run several operators in one process."""
    registry = kopf.OperatorRegistry()

    for group, version, plural in WATCHED:
        res = _resource(group, version, plural)
        object_event = _object_event(plural)
        ident = f"{plural}.{group}" if group else plural
        object_event.__name__ = f"{plural}_event"
        kopf.on.event(**res, id=f"{ident}_event", registry=registry)(object_event)

    @kopf.on.startup(registry=registry)
    async def operator_startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # guywire posts its own deduplicated Events
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="guywire.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="guywire.dev",
                                                                                  key="last-handled-configuration")
        settings.watching.chunk_size = 500  # page initial listings: kopf then holds one page, not the whole list
        queueing = getattr(settings, "queueing", None) or settings.batching  # renamed in kopf 1.4x
        queueing.idle_timeout = 1.0  # kopf's worker per object lingers this long after its last event
        settings.watching.server_timeout = memo.get("watch_timeout", 300)
        settings.watching.client_timeout = memo.get("watch_timeout", 300) + 30
        state = _state(memo)
        state.index.watch_namespaces = list(memo.get("namespaces") or []) or None
        if memo.get("clusterwide", True):
            await state.index.count_cluster(WATCHED)  # before kopf lists anything: see gate.py
        state.start()
        if memo.get("webhook") is not None:
            server = WebhookServer(state.admission, memo["webhook"], engine_lock=state.engine_lock,
                                   metrics=memo.get("metrics") or state.metrics)
            await server.start()
            memo["webhook_server"] = server

    @kopf.on.cleanup(registry=registry)
    async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
        if memo.get("webhook_server") is not None:
            await memo["webhook_server"].stop()
        await _state(memo).stop()

    return registry
