"""Kubernetes API I/O for the operator: merge patches, status writes and Events, with retries.

Built on the official client (sync) run in worker threads, so it serves kopf's asyncio
loop without blocking it. Every call retries conflicts, throttling, 5xx and timeouts
with exponential backoff; what still fails is reported to the caller, who keeps the
write pending for the next pass.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from ..views.aikinds import AI_KINDS
from ..clock import SYSTEM, Clock, rfc3339
from ..model.messages import clip

EVENT_MESSAGE_MAX = 1024  # the Events API's limit (in bytes: the ellipsis is ASCII)
log = logging.getLogger("guywire.kube")


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


WORKLOAD_KINDS = {
    "Deployment": Kind("Deployment", "apps", "v1", "deployments"),
    "StatefulSet": Kind("StatefulSet", "apps", "v1", "statefulsets"),
    "DaemonSet": Kind("DaemonSet", "apps", "v1", "daemonsets"),
    "ReplicaSet": Kind("ReplicaSet", "apps", "v1", "replicasets"),
    "Job": Kind("Job", "batch", "v1", "jobs"),
    "CronJob": Kind("CronJob", "batch", "v1", "cronjobs"),
    "Pod": Kind("Pod", "", "v1", "pods"),
}
for _ai in AI_KINDS.values():
    WORKLOAD_KINDS[_ai.kind] = Kind(_ai.kind, _ai.group, _ai.version, _ai.plural, namespaced=_ai.namespaced)

POLICY_KINDS = {
    "ComplexityPolicy": Kind("ComplexityPolicy", "guywire.dev", "v1alpha1", "complexitypolicies"),
    "ClusterComplexityPolicy": Kind("ClusterComplexityPolicy", "guywire.dev", "v1alpha1",
                                    "clustercomplexitypolicies", namespaced=False),
}
NODE = Kind("Node", "", "v1", "nodes", namespaced=False)
REPORT_KINDS = {
    "PolicyReport": Kind("PolicyReport", "wgpolicyk8s.io", "v1alpha2", "policyreports"),
    "ClusterPolicyReport": Kind("ClusterPolicyReport", "wgpolicyk8s.io", "v1alpha2", "clusterpolicyreports",
                                namespaced=False),
    "Report": Kind("Report", "openreports.io", "v1alpha1", "reports"),
    "ClusterReport": Kind("ClusterReport", "openreports.io", "v1alpha1", "clusterreports", namespaced=False),
}
EVENT = Kind("Event", "", "v1", "events")

RETRYABLE = {409, 429, 500, 502, 503, 504}


class ConfigError(ValueError):
    """No usable cluster configuration: one line that names the file and what to do."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")


def load_config(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.Configuration:
    """The given kubeconfig file; else KUBECONFIG (or ~/.kube/config) when it exists; else the in-cluster
    service account. Raises ConfigError, one line naming the file and what to do, when none works."""
    return _load(kubeconfig, context)[0]


def load_reachable_config(kubeconfig: str | None = None, context: str | None = None, *,
                          timeout: float = 5.0) -> kubernetes.client.Configuration:
    """``load_config``, then one ``GET /version`` within ``timeout`` seconds: a server that does not answer
    is a ConfigError naming its URL, the kubeconfig (or the in-cluster account) and what to check."""
    configuration, source = _load(kubeconfig, context)
    probe(configuration, source, timeout=timeout)
    return configuration


def probe(configuration: kubernetes.client.Configuration, source: str, *, timeout: float = 5.0) -> None:
    """One ``GET /version``, no retry; raises ConfigError when the API server does not answer it (any HTTP
    answer, even 401 or 404, says it is there)."""
    configuration = copy.copy(configuration)
    configuration.retries = False  # one try: a refused port must not be asked again and again
    api = kubernetes.client.ApiClient(configuration)
    try:
        with warnings.catch_warnings():  # an insecure kubeconfig's warning is kopf's to give, once
            warnings.simplefilter("ignore")
            kubernetes.client.VersionApi(api).get_code(_request_timeout=timeout)
    except ApiException:
        pass  # it answered: reachable; what it refuses, the operator's own requests will say
    except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS, timeout, 401: none lets the operator start
        raise ConfigError(f"cannot reach the API server {configuration.host} ({source}): {_reason(exc)}; check "
                          "that the cluster is running and that the server, context and credentials there "
                          "point at it.") from None
    finally:
        api.close()


def _reason(exc: BaseException) -> str:
    """Why a request failed, in a few words: the socket's own error (``Connection refused``) when urllib3
    wrapped one, else the first line of the error itself."""
    seen, inner = set(), exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        reason = getattr(inner, "reason", None)
        inner = reason if isinstance(reason, BaseException) else (inner.__cause__ or inner.__context__)
    return _first_line(exc)


def _not_regular(shown: str, fix: str) -> ConfigError:
    return ConfigError(f"kubeconfig {shown}: not a regular file (a device, FIFO or folder is never read); {fix}.")


def _load(kubeconfig: str | None, context: str | None) -> tuple[kubernetes.client.Configuration, str]:
    """(configuration, where it came from: ``kubeconfig FILE`` or ``in-cluster service account``)."""
    if kubeconfig:
        path = os.path.expanduser(kubeconfig)
        if os.path.exists(path) and not os.path.isfile(path):
            raise _not_regular(kubeconfig, "pass --kubeconfig a kubeconfig file")
        if not os.path.isfile(path):
            raise ConfigError(f"kubeconfig {kubeconfig}: no such file; pass --kubeconfig an existing file, or leave "
                              "it out to use KUBECONFIG or the pod's service account.")
        return _from_file(path, context, "pass --kubeconfig another file"), f"kubeconfig {kubeconfig}"
    default = os.path.expanduser(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config")
    if os.path.exists(default) and not os.path.isfile(default):
        raise _not_regular(default, "fix KUBECONFIG or pass --kubeconfig FILE")
    if os.path.isfile(default):
        return _from_file(None, context, "fix KUBECONFIG or pass --kubeconfig FILE"), f"kubeconfig {default}"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException as exc:
            raise ConfigError(f"in-cluster configuration: {_first_line(exc)}; run guywire with a service account "
                              "token mounted, or pass --kubeconfig FILE.") from None
        return kubernetes.client.Configuration.get_default_copy(), "in-cluster service account"
    raise ConfigError(f"no cluster to talk to: kubeconfig {default} does not exist and this is not a pod "
                      "(KUBERNETES_SERVICE_HOST is unset); set KUBECONFIG or pass --kubeconfig FILE.")


def _from_file(path: str | None, context: str | None, fix: str) -> kubernetes.client.Configuration:
    shown = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        kubernetes.config.load_kube_config(config_file=path, context=context)
    except Exception as exc:  # noqa: BLE001 - YAML, missing context, unreadable: all the file's fault
        raise ConfigError(f"kubeconfig {shown}: cannot be used ({_first_line(exc)}); {fix}.") from None
    return kubernetes.client.Configuration.get_default_copy()


class ApiFailure(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class KubeClient:
    def __init__(self, configuration: kubernetes.client.Configuration | None = None, *, attempts: int = 5,
                 base_delay: float = 0.2, timeout: float = 10.0, clock: Clock = SYSTEM):
        self.api = kubernetes.client.ApiClient(configuration)
        self.clock = clock  # Event timestamps
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout

    def close(self) -> None:
        self.api.close()

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              parse: bool = True) -> Any:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            if hasattr(self.api, "param_serialize"):  # kubernetes >= 33 (openapi-generator 7)
                m, url, hdrs, data, post = self.api.param_serialize(
                    method=method, resource_path=path, header_params=headers, body=body,
                    auth_settings=["BearerToken"])
                resp = self.api.call_api(m, url, header_params=hdrs, body=data, post_params=post,
                                         _request_timeout=self.timeout)
                resp.read()
                if not 200 <= resp.status <= 299:
                    raise ApiException(http_resp=resp)
            else:
                result = self.api.call_api(path, method, header_params=headers, body=body,
                                           auth_settings=["BearerToken"], _preload_content=False,
                                           _request_timeout=self.timeout)
                resp = result[0] if isinstance(result, tuple) else result
        except ApiException as exc:
            raise ApiFailure(exc.status or 0, api_message(exc)) from None
        except Exception as exc:  # connection refused, timeouts, TLS
            raise ApiFailure(0, f"{type(exc).__name__}: {exc}") from None
        raw = resp.data
        return json.loads(raw) if raw and parse else None

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      *, retry_conflicts: bool = True, parse: bool = True) -> Any:
        delay = self.base_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return await asyncio.to_thread(self._call, method, path, body, content_type, parse)
            except ApiFailure as exc:
                retryable = exc.status in RETRYABLE or exc.status == 0
                if exc.status == 409 and not retry_conflicts:
                    raise
                if not retryable or attempt == self.attempts:
                    raise
                log.info("API %s %s answered %s; retrying in %.1fs.", method, path, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def merge_patch(self, path: str, body: dict) -> None:
        """A JSON merge patch. The answer (the whole object) is not parsed: no caller reads it, and
        parsing 10,000 of them after the first evaluation was a large share of the operator's peak."""
        await self.request("PATCH", path, body, "application/merge-patch+json", parse=False)

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post_event(self, *, involved: dict, reason: str, message: str, type_: str, key: str,
                         instance: str = "guywire") -> str:
        """Create an Event with a name derived from ``key``, so the same episode is never posted twice.

        Returns "created", or "exists" when an Event of that name is already stored (posted
        before a restart): its lastTimestamp is then refreshed instead.
        """
        ns = involved.get("namespace") or "default"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = f"{involved['name'][:200]}.gw{digest}"
        now = rfc3339(self.clock.now())
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "guywire"}},
            "involvedObject": involved, "reason": reason, "type": type_,
            "message": clip(message, EVENT_MESSAGE_MAX, "..."),
            "source": {"component": "guywire"}, "reportingComponent": "guywire.dev/operator",
            "reportingInstance": instance[:128], "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "action": "Evaluate",
        }
        try:
            await self.request("POST", EVENT.path(ns), body, retry_conflicts=False)
            return "created"
        except ApiFailure as exc:
            if exc.status != 409:
                raise
        await self.merge_patch(EVENT.path(ns, name), {"lastTimestamp": now})
        return "exists"


def api_message(exc: Exception) -> str:
    """What the API server said about a refused request: its Status ``message`` (an admission policy's or
    webhook's denial, RBAC's refusal), else the HTTP reason."""
    reason = getattr(exc, "reason", None) or ""
    try:
        return json.loads(getattr(exc, "body", None) or "").get("message") or reason
    except Exception:  # noqa: BLE001 - no body, not JSON, not an object
        return reason
