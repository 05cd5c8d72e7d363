"""
A Kubernetes API server for integration tests, built on kmock.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves discovery,
lists, watches and merge-patches, but it departs from a real API server in
ways that hide real bugs: no resourceVersion/uid/generation, no optimistic
concurrency, no status subresource, no selectors, no JSON-patch, no PUT,
no 410 Gone. :class:`KubeApiEmulator` closes these gaps on top of kmock's
storage (``kmock.objects`` with histories), discovery (``kmock.resources``),
request log and reaction DSL. :class:`KubeApiServer` runs it on loopback in
a background thread with its own event loop, so synchronous tests, async
tests and a kopf operator in another thread can all talk to it.

Usage::

    with KubeApiServer() as api:
        api.create({'apiVersion': 'v1', 'kind': 'ConfigMap',
                    'metadata': {'name': 'cm', 'namespace': 'default'}})
        api.inject('PATCH', r'/configmaps/cm$', 409, times=1)
        ...  # point a client to api.url, or to api.write_kubeconfig(path)
        assert api.objects('configmaps', 'default')[0]['metadata']['name'] == 'cm'

What is still not emulated is listed in :data:`NOT_EMULATED`; keep that list
honest when adding behaviours.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import copy
import dataclasses
import datetime
import json
import random
import re
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import aiohttp.web_runner
import aiohttp.web_server
import attrs
import kmock
from kmock._internal import rendering  # StreamingError: kmock 0.8 has no public name for it.

T = TypeVar('T')

MERGE_PATCH = 'application/merge-patch+json'
JSON_PATCH = 'application/json-patch+json'
STRATEGIC_MERGE_PATCH = 'application/strategic-merge-patch+json'
APPLY_PATCH = 'application/apply-patch+yaml'

NOT_EMULATED = (
    "server-side apply (answers 415)",
    "strategic merge patch beyond merging lists of dicts by their 'name' key",
    "schema validation, defaulting and pruning of unknown fields",
    "admission webhooks, RBAC and authentication (every request is allowed)",
    "namespace existence checks and namespace deletion cascades",
    "owner-reference garbage collection and graceful pod deletion",
    "managedFields, shardSelector and the resourceVersionMatch variants",
    "continue tokens expiring with compaction",
)

# The same alphabet as Kubernetes' rand.String(), which names generateName objects.
_NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'

# Server-managed metadata that clients cannot change by writing the object.
_SERVER_METADATA = ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                    'generation', 'resourceVersion', 'name', 'namespace')

_REASONS = {
    400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound',
    405: 'MethodNotAllowed', 409: 'Conflict', 410: 'Expired', 415: 'UnsupportedMediaType',
    422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable',
    504: 'Timeout',
}

# Field selectors a real API server accepts, besides metadata.name and metadata.namespace.
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ('', 'events'): frozenset({
        'involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name',
        'involvedObject.uid', 'involvedObject.apiVersion', 'involvedObject.resourceVersion',
        'involvedObject.fieldPath', 'reason', 'reportingComponent', 'source', 'type'}),
    ('events.k8s.io', 'events'): frozenset({
        'regarding.kind', 'regarding.namespace', 'regarding.name', 'regarding.uid',
        'regarding.apiVersion', 'regarding.resourceVersion', 'regarding.fieldPath',
        'reason', 'reportingController', 'type'}),
    ('', 'pods'): frozenset({
        'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName',
        'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'}),
    ('', 'nodes'): frozenset({'spec.unschedulable'}),
    ('', 'namespaces'): frozenset({'status.phase'}),
    ('', 'secrets'): frozenset({'type'}),
}
_FIELD_ALIASES = {'source': 'source.component'}

GUYWIRE_RESOURCES: dict[str, kmock.ResourceInfo] = {
    'guywire.dev/v1alpha1/complexitypolicies': kmock.ResourceInfo(
        kind='ComplexityPolicy', singular='complexitypolicy', namespaced=True,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'},
        subresources={'status'}),
    'guywire.dev/v1alpha1/clustercomplexitypolicies': kmock.ResourceInfo(
        kind='ClusterComplexityPolicy', singular='clustercomplexitypolicy', namespaced=False,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'},
        subresources={'status'}),
    'monitoring.coreos.com/v1/servicemonitors': kmock.ResourceInfo(
        kind='ServiceMonitor', singular='servicemonitor', namespaced=True,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'}),
    'monitoring.coreos.com/v1/podmonitors': kmock.ResourceInfo(
        kind='PodMonitor', singular='podmonitor', namespaced=True,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'}),
    'kopf.dev/v1/clusterkopfpeerings': kmock.ResourceInfo(
        kind='ClusterKopfPeering', singular='clusterkopfpeering', namespaced=False,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'}),
    'kopf.dev/v1/kopfpeerings': kmock.ResourceInfo(
        kind='KopfPeering', singular='kopfpeering', namespaced=True,
        verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'}),
}


class ApiError(Exception):
    """A failure answered as a Kubernetes ``Status`` object; raised by the helpers too."""

    def __init__(self, status: int, message: str, *, reason: str | None = None,
                 details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {reason or _REASONS.get(status, 'Failure')}: {message}")
        self.status = status
        self.reason = reason or _REASONS.get(status, 'Failure')
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Failure',
            'message': self.message, 'reason': self.reason, 'code': self.status,
        }
        if self.details:
            body['details'] = self.details
        return body


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, for assertions in tests."""
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    content_type: str | None
    headers: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.query.get('watch') in ('true', '1')

    def __str__(self) -> str:
        query = '&'.join(f'{k}={v}' for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''}"


@dataclasses.dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    reason: str | None
    message: str | None
    retry_after: int | None
    watch: bool | None

    def matches(self, method: str, path: str, watch: bool) -> bool:
        return (self.method in ('*', method)
                and self.path.search(path) is not None
                and (self.watch is None or self.watch == watch))

    def error(self, method: str, path: str) -> ApiError:
        headers: dict[str, str] = {}
        details: dict[str, Any] = {}
        retry_after = self.retry_after if self.retry_after is not None else (
            1 if self.status == 429 else None)
        if retry_after is not None:
            headers['Retry-After'] = str(retry_after)
            details['retryAfterSeconds'] = retry_after
        message = self.message or f"Injected failure for {method} {path}."
        return ApiError(self.status, message, reason=self.reason, details=details, headers=headers)


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    resource: kmock.resource
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclasses.dataclass(eq=False)
class _Watcher:
    resource: kmock.resource
    queue: asyncio.Queue[_Event | None]


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What a list/watch/deletecollection request selects."""
    resource: kmock.resource
    info: kmock.ResourceInfo
    namespace: str | None
    name: str | None
    labels: tuple[Callable[[Mapping[str, str]], bool], ...]
    fields: tuple[Callable[[Mapping[str, Any]], bool], ...]

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get('metadata', {})
        if self.namespace is not None and meta.get('namespace') != self.namespace:
            return False
        if self.name is not None and meta.get('name') != self.name:
            return False
        labels = meta.get('labels') or {}
        return all(req(labels) for req in self.labels) and all(req(obj) for req in self.fields)


# --------------------------------------------------------------------------------------------------
# Pure helpers: patches, selectors, paths.
# --------------------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, ``None`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """
    An approximation of the strategic merge patch of built-in kinds.

    Lists of dicts that all carry a ``name`` (containers, env, volumes, ports
    with names) merge item by item on that key; other lists are replaced.
    Directives (``$patch``, ``$retainKeys``, ...) are not supported.
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        old = result.get(key)
        if value is None:
            result.pop(key, None)
        elif _named_list(value) and _named_list(old):
            merged = [copy.deepcopy(item) for item in old]
            positions = {item['name']: idx for idx, item in enumerate(merged)}
            for item in value:
                if item['name'] in positions:
                    merged[positions[item['name']]] = strategic_merge_patch(
                        merged[positions[item['name']]], item)
                else:
                    merged.append(copy.deepcopy(item))
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(old, value)
    return result


def _named_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(item, Mapping) and 'name' in item for item in value))


class JsonPatchError(Exception):
    """A JSON-patch that is well-formed but cannot be applied (answered 422)."""


def json_patch(target: Any, ops: Any) -> Any:
    """
    Apply an RFC 6902 JSON patch. Malformed patches raise ``ValueError``,
    inapplicable ones (a failed ``test``, a missing path) ``JsonPatchError``.
    """
    if not isinstance(ops, list):
        raise ValueError("A JSON patch must be a list of operations.")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, Mapping) or not isinstance(op.get('op'), str) or 'path' not in op:
            raise ValueError(f"A JSON patch operation needs 'op' and 'path': {op!r}.")
        kind, path = op['op'], _pointer(op['path'])
        if kind in ('add', 'replace', 'test') and 'value' not in op:
            raise ValueError(f"The JSON patch operation {kind!r} needs a 'value': {op!r}.")
        if kind == 'test':
            if _resolve(doc, path, op['path']) != op['value']:
                raise JsonPatchError(
                    f"testing value {op['path']} failed: expected {op['value']!r}.")
        elif kind == 'add':
            doc = _add(doc, path, copy.deepcopy(op['value']), op['path'])
        elif kind == 'remove':
            doc = _remove(doc, path, op['path'])[0]
        elif kind == 'replace':
            doc = _remove(doc, path, op['path'])[0]
            doc = _add(doc, path, copy.deepcopy(op['value']), op['path'])
        elif kind in ('move', 'copy'):
            if 'from' not in op:
                raise ValueError(f"The JSON patch operation {kind!r} needs a 'from': {op!r}.")
            source = _pointer(op['from'])
            if kind == 'move':
                doc, value = _remove(doc, source, op['from'])
            else:
                value = copy.deepcopy(_resolve(doc, source, op['from']))
            doc = _add(doc, path, value, op['path'])
        else:
            raise ValueError(f"Unknown JSON patch operation {kind!r}.")
    return doc


def _pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith('/')):
        raise ValueError(f"Invalid JSON pointer: {pointer!r}.")
    return [part.replace('~1', '/').replace('~0', '~') for part in pointer.split('/')[1:]]


def _resolve(doc: Any, path: list[str], raw: str) -> Any:
    for part in path:
        if isinstance(doc, Mapping) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise JsonPatchError(f"the path {raw!r} does not exist.")
    return doc


def _add(doc: Any, path: list[str], value: Any, raw: str) -> Any:
    if not path:
        return value
    parent = _resolve(doc, path[:-1], raw)
    key = path[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list) and key == '-':
        parent.append(value)
    elif isinstance(parent, list) and key.isdigit() and int(key) <= len(parent):
        parent.insert(int(key), value)
    else:
        raise JsonPatchError(f"the path {raw!r} cannot be added to.")
    return doc


def _remove(doc: Any, path: list[str], raw: str) -> tuple[Any, Any]:
    if not path:
        return None, doc
    parent = _resolve(doc, path[:-1], raw)
    key = path[-1]
    if isinstance(parent, dict) and key in parent:
        return doc, parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return doc, parent.pop(int(key))
    raise JsonPatchError(f"the path {raw!r} does not exist.")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth, start = 0, 0
    for idx, char in enumerate(text):
        if char == '(':
            depth += 1
        elif char == ')':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(text[start:idx])
            start = idx + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


_SET_REQUIREMENT = re.compile(r'^(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$')
_EQ_REQUIREMENT = re.compile(r'^(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s!=<>(),]*)$')
_KEY = re.compile(r'^[^\s!=<>(),]+$')


def parse_label_selector(selector: str) -> tuple[Callable[[Mapping[str, str]], bool], ...]:
    """Parse a label selector (=, ==, !=, in, notin, exists, !key, <, >) into predicates."""
    predicates: list[Callable[[Mapping[str, str]], bool]] = []
    for requirement in _split_top_level(selector):
        if requirement.startswith('!') and _KEY.match(requirement[1:].strip()):
            key = requirement[1:].strip()
            predicates.append(lambda labels, k=key: k not in labels)
        elif _KEY.match(requirement):
            predicates.append(lambda labels, k=requirement: k in labels)
        elif match := _SET_REQUIREMENT.match(requirement):
            key, values = match['key'], {v.strip() for v in match['values'].split(',') if v.strip()}
            if match['op'] == 'in':
                predicates.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                predicates.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQ_REQUIREMENT.match(requirement):
            key, op, value = match['key'], match['op'], match['value']
            if op in ('=', '=='):
                predicates.append(lambda labels, k=key, v=value: labels.get(k) == v)
            elif op == '!=':
                predicates.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                if not value.lstrip('-').isdigit():
                    raise ApiError(400, f"unable to parse requirement: {requirement!r}: "
                                        f"for '<' and '>' the value must be an integer.")
                predicates.append(_numeric_label(key, op, int(value)))
        else:
            raise ApiError(400, f"unable to parse requirement: {requirement!r}.")
    return tuple(predicates)


def _numeric_label(key: str, op: str, limit: int) -> Callable[[Mapping[str, str]], bool]:
    def check(labels: Mapping[str, str]) -> bool:
        value = labels.get(key, '')
        if not value.lstrip('-').isdigit():
            return False
        return int(value) < limit if op == '<' else int(value) > limit
    return check


def parse_field_selector(selector: str, resource: kmock.resource
                         ) -> tuple[Callable[[Mapping[str, Any]], bool], ...]:
    """Parse a field selector, refusing fields the real API would refuse for the resource."""
    allowed = {'metadata.name', 'metadata.namespace'} | _FIELD_LABELS.get(
        (resource.group or '', resource.plural or ''), frozenset())
    predicates: list[Callable[[Mapping[str, Any]], bool]] = []
    for requirement in _split_top_level(selector):
        match = re.match(r'^(?P<key>[^!=]+?)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$', requirement)
        if match is None:
            raise ApiError(400, f"invalid field selector: {requirement!r}.")
        key, op, value = match['key'], match['op'], match['value'].strip()
        if key not in allowed:
            raise ApiError(400, f'field label not supported: {key}')
        path = _FIELD_ALIASES.get(key, key).split('.')
        if op == '!=':
            predicates.append(lambda obj, p=path, v=value: _field_value(obj, p) != v)
        else:
            predicates.append(lambda obj, p=path, v=value: _field_value(obj, p) == v)
    return tuple(predicates)


def _field_value(obj: Any, path: list[str]) -> str:
    for part in path:
        obj = obj.get(part) if isinstance(obj, Mapping) else None
    if obj is None:
        return ''
    if isinstance(obj, bool):
        return 'true' if obj else 'false'
    return str(obj)


@dataclasses.dataclass(frozen=True)
class _ParsedPath:
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> _ParsedPath:
    """Split an API path; unlike kmock 0.8, /api/v1/namespaces[/name[/status]] parse too."""
    parts = [part for part in path.strip('/').split('/') if part]
    if len(parts) >= 2 and parts[0] == 'apis':
        group, rest = parts[1], parts[2:]
        version = rest.pop(0) if rest else None
    elif len(parts) >= 2 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    else:
        return _ParsedPath()
    namespace = None
    if len(rest) >= 3 and rest[0] == 'namespaces' and rest[2] not in ('status', 'finalize'):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    subresource = '/'.join(rest[2:]) or None
    return _ParsedPath(group, version, plural, namespace, name, subresource)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _api_version(resource: kmock.resource) -> str:
    return resource.version if not resource.group else f'{resource.group}/{resource.version}'


def _media_type(headers: Mapping[str, str]) -> str:
    value = next((v for k, v in headers.items() if k.lower() == 'content-type'), '')
    return value.split(';')[0].strip().lower()


# --------------------------------------------------------------------------------------------------
# The emulator: a kmock handler with real-API semantics.
# --------------------------------------------------------------------------------------------------

KMOCK_REQUESTS_KEPT = 100


@attrs.define(kw_only=True)
class KubeApiEmulator(kmock.KubernetesEmulator):
    """
    kmock's Kubernetes emulator with the behaviours a real API server has.

    Objects live in ``self.objects`` (kmock's array, with histories) and
    resources in ``self.resources``; kmock's DSL (``emulator['get /x'] << 500``)
    still takes precedence over the emulation. All state changes run on the
    server's event loop; the thread-safe entry points are :meth:`inject`,
    :attr:`requests`, :meth:`clear_requests` and :meth:`expire_watches`.
    """

    bookmark_interval: float = 1.0
    history_size: int = 10_000
    custom_resources: set[kmock.resource] = attrs.field(factory=set)
    initial_namespaces: tuple[str, ...] = ('default', 'kube-system', 'kube-public', 'kube-node-lease')

    _rv: int = attrs.field(default=100, init=False)
    _history: collections.deque[_Event] = attrs.field(factory=collections.deque, init=False)
    _history_floor: int = attrs.field(default=100, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _log: list[RequestRecord] = attrs.field(factory=list, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _expirations: int = attrs.field(default=0, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _served: int = attrs.field(default=0, init=False)
    _resource_reaction: Any = attrs.field(default=None, init=False)
    _own_payloads: int = attrs.field(default=0, init=False)
    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        # Discovery and the 404 fallback from kmock; resource requests are ours (not kmock's
        # action-based fallbacks, which mutate before any check and ignore PUT).
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated call
            warnings.simplefilter('ignore', DeprecationWarning)
            self.resources.load_bundled()
        for key, info in GUYWIRE_RESOURCES.items():
            self.add_resource(key, copy.deepcopy(info), custom=True)
        self._resource_reaction = self.fallback[self._is_resource_request] << self._serve_resource
        for probe in ('/healthz', '/readyz', '/livez'):
            self.fallback[f'get {probe}'] << b'ok'
        for namespace in self.initial_namespaces:
            self.create_object(kmock.resource('', 'v1', 'namespaces'), None,
                               {'metadata': {'name': namespace}})
        self._own_payloads = len(self._payloads)

    # ---- configuration & test controls -------------------------------------------------------

    def add_resource(self, key: str, info: kmock.ResourceInfo, *, custom: bool = True) -> None:
        """Declare a resource: ``add_resource('example.com/v1/widgets', ResourceInfo(kind='Widget'))``."""
        resource = kmock.resource(key)
        self.resources[resource] = info
        if custom:
            self.custom_resources.add(resource)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the start or the last :meth:`clear_requests`."""
        with self._guard:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._guard:
            self._log.clear()

    def inject(self, method: str, path_regex: str, status: int, times: int = 1, *,
               reason: str | None = None, message: str | None = None,
               retry_after: int | None = None, watch: bool | None = None) -> None:
        """
        Make the next ``times`` requests matching ``method`` (or ``'*'``) and a path
        that ``re.search``-es ``path_regex`` fail with ``status`` and a Status body.
        The request is not applied. 429 carries ``Retry-After`` (default 1 second).
        ``watch=True/False`` narrows it to watch or non-watch requests.
        """
        fault = _Fault(method=method.upper(), path=re.compile(path_regex), status=status,
                       times=times, reason=reason, message=message, retry_after=retry_after,
                       watch=watch)
        with self._guard:
            self._faults.append(fault)

    def pending_faults(self) -> int:
        with self._guard:
            return sum(fault.times for fault in self._faults)

    def clear_faults(self) -> None:
        """Forget the injected faults and the pending watch expirations."""
        with self._guard:
            self._faults.clear()
            self._expirations = 0

    def expire_watches(self, times: int = 1) -> None:
        """Make the next ``times`` watch requests answer an ERROR event with a 410 Status."""
        with self._guard:
            self._expirations += times

    def end_watches(self) -> int:
        """End every open watch stream normally (as a server-side timeout does)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        return len(self._watchers)

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older versions get 410 Gone."""
        self._rv += 1
        self._history.clear()
        self._history_floor = self._rv

    def close(self) -> None:
        """Refuse new watches and end the open ones, so that the HTTP server stops at once."""
        self._closing = True
        self.end_watches()

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    @property
    def internal_errors(self) -> list[Exception]:
        """Unexpected exceptions while serving (bugs of the emulator or of kmock reactions)."""
        return list(self._errors[-1]) if self._errors else []

    # ---- HTTP entry points -------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Replaces kmock's RawHandler.__call__ only to parse paths correctly and to answer
        # ApiError as a Kubernetes Status without counting it among the internal errors.
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse_request(raw_request)
            self._requests.append(request)
            self._served += 1
            if len(self._requests) > 2 * KMOCK_REQUESTS_KEPT:
                # kmock finds the reaction for a request by scanning every request it has kept
                # (`request in filter`), which made each request O(all requests so far): 1,000
                # workloads took 95 s to converge. Only the newest ones can still be matched.
                del self._requests[:-KMOCK_REQUESTS_KEPT]
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                assert e.__cause__ is not None
                raise e.__cause__
        except (ApiError, kmock.KubernetesError) as e:
            if isinstance(e, kmock.KubernetesError):  # kmock's discovery: answer it the same way
                e = ApiError(e.status, e.message or repr(e))
            if raw_response is None or not raw_response.prepared:
                return aiohttp.web.json_response(e.body, status=e.status, headers=e.headers)
            await raw_response.write(json.dumps({'type': 'ERROR', 'object': e.body}).encode() + b'\n')
            await raw_response.write_eof()
            return raw_response
        except Exception as e:
            if self._errors:
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse_request(self, raw: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw.read()
        text = body.decode('utf-8', errors='replace')
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        parsed = parse_path(raw.path)
        query = dict(raw.query)
        method = raw.method.upper()
        resource = None if parsed.group is None else kmock.resource(
            group=parsed.group, version=parsed.version, plural=parsed.plural)
        action: kmock.action | None = None
        if resource is not None and parsed.plural is not None:
            if method == 'GET' and query.get('watch') in ('true', '1'):
                action = kmock.action.WATCH
            elif method == 'GET':
                action = kmock.action.FETCH if parsed.name else kmock.action.LIST
            elif method == 'POST' and not parsed.name:
                action = kmock.action.CREATE
            elif method in ('PATCH', 'PUT') and parsed.name:
                action = kmock.action.UPDATE
            elif method == 'DELETE' and parsed.name:
                action = kmock.action.DELETE
        return kmock.Request(
            id=self._served, raw_request=raw, url=raw.url, method=method,
            params=query, headers=dict(raw.headers), cookies=dict(raw.cookies),
            body=body, text=text, data=data, action=action, resource=resource,
            namespace=parsed.namespace, name=parsed.name, subresource=parsed.subresource)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        record = RequestRecord(
            method=request.method.value, path=request.url.path, query=dict(request.params),
            body=request.data, content_type=_media_type(request.headers) or None,
            headers=dict(request.headers))
        with self._guard:
            self._log.append(record)
            fault = next((f for f in self._faults
                          if f.matches(record.method, record.path, record.watch)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
        if fault is not None:
            raise fault.error(record.method, record.path)
        if len(self._payloads) == self._own_payloads and self._is_resource_request(request):
            # No DSL reaction added by a test: go straight to the emulation. kmock's matching applies
            # every reaction's filters to every kept request to find where this one goes.
            return await self._resource_reaction(request)
        # Skip KubernetesEmulator._handle: it mutates objects before any check is made.
        return await kmock.KubernetesScaffold._handle(self, request)

    @staticmethod
    def _is_resource_request(request: kmock.Request) -> bool:
        return request.resource is not None and request.resource.plural is not None

    async def _serve_resource(self, request: kmock.Request) -> kmock.Response:
        # Always a fresh Response with an explicit status: kmock copies the status of a returned
        # Response onto the reaction, so a bare dict would inherit the previous request's status.
        result = self._dispatch(request)
        return result if isinstance(result, kmock.Response) else kmock.Response(status=200, payload=result)

    def _dispatch(self, request: kmock.Request) -> Any:
        resource, info = self._lookup(request.resource)
        namespace = request.namespace
        query = request.params
        dry_run = query.get('dryRun') == 'All'
        method = request.method.value
        if namespace is not None and not info.namespaced:
            raise ApiError(404, "the server could not find the requested resource")

        if request.subresource is not None:
            if request.subresource != 'status' or 'status' not in info.subresources:
                raise ApiError(404, f"the subresource {request.subresource!r} of "
                                    f"{resource.plural} is not emulated by tests.kubeapi")
            if request.name is None or method not in ('GET', 'PATCH', 'PUT'):
                raise ApiError(405, "the server does not allow this method on the requested resource")

        if request.name is None:
            if method == 'GET' and query.get('watch') in ('true', '1'):
                self._check_verb(info, 'watch')
                return self._serve_watch(self._scope(request, resource, info), query)
            if method == 'GET':
                self._check_verb(info, 'list')
                return self.list_objects(self._scope(request, resource, info), query)
            if method == 'POST':
                self._check_verb(info, 'create')
                if info.namespaced and namespace is None:
                    raise ApiError(405, "the server does not allow this method on the requested resource")
                if not isinstance(request.data, dict):
                    raise ApiError(400, "the body of the request must be a JSON object")
                created = self.create_object(resource, namespace, request.data, dry_run=dry_run)
                return kmock.Response(status=201, payload=created)
            if method == 'DELETE':
                self._check_verb(info, 'deletecollection')
                return self._delete_collection(self._scope(request, resource, info), dry_run)
            raise ApiError(405, "the server does not allow this method on the requested resource")

        if info.namespaced and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        if method == 'GET' and query.get('watch') in ('true', '1'):
            self._check_verb(info, 'watch')
            return self._serve_watch(self._scope(request, resource, info), query)
        if method == 'GET':
            self._check_verb(info, 'get')
            return self.get_object(resource, namespace, request.name)
        if method == 'PATCH':
            self._check_verb(info, 'patch')
            return self.patch_object(resource, namespace, request.name, request.data,
                                     content_type=_media_type(request.headers),
                                     subresource=request.subresource, dry_run=dry_run,
                                     raw_body=request.body)
        if method == 'PUT':
            self._check_verb(info, 'update')
            if not isinstance(request.data, dict):
                raise ApiError(400, "the body of the request must be a JSON object")
            return self.replace_object(resource, namespace, request.name, request.data,
                                       subresource=request.subresource, dry_run=dry_run)
        if method == 'DELETE':
            self._check_verb(info, 'delete')
            return self.delete_object(resource, namespace, request.name,
                                      options=request.data if isinstance(request.data, dict) else None,
                                      dry_run=dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    # ---- lookups -------------------------------------------------------------------------------

    def _lookup(self, resource: kmock.resource | None) -> tuple[kmock.resource, kmock.ResourceInfo]:
        if resource is None or resource not in self.resources:
            raise ApiError(404, "the server could not find the requested resource")
        return resource, self.resources[resource]

    @staticmethod
    def _check_verb(info: kmock.ResourceInfo, verb: str) -> None:
        if info.verbs and verb not in info.verbs:
            raise ApiError(405, "the server does not allow this method on the requested resource")

    def _scope(self, request: kmock.Request, resource: kmock.resource,
               info: kmock.ResourceInfo) -> _Scope:
        query = request.params
        return _Scope(
            resource=resource, info=info, namespace=request.namespace, name=request.name,
            labels=parse_label_selector(query.get('labelSelector', '')),
            fields=parse_field_selector(query.get('fieldSelector', ''), resource))

    def resolve(self, spec: str) -> kmock.resource:
        """
        Find a declared resource by ``'configmaps'``, ``'deployments.apps'``,
        ``'apps/v1/deployments'`` or ``'v1/configmaps'``; the core group wins ties.
        """
        group: str | None = None
        version: str | None = None
        if '/' in spec:
            parsed = kmock.resource(spec)
            group, version, plural = parsed.group, parsed.version, parsed.plural
        elif '.' in spec:
            plural, group = spec.split('.', 1)
        else:
            plural = spec
        candidates = [res for res in self.resources if res.plural == plural
                      and (group is None or res.group == group)
                      and (version is None or res.version == version)]
        if len(candidates) > 1:
            candidates = [res for res in candidates if res.group == ''] or candidates
        if len(candidates) != 1:
            found = ', '.join(sorted(str(_api_version(c)) + '/' + str(c.plural) for c in candidates))
            raise ValueError(f"Resource {spec!r} matches {len(candidates)} declared resources"
                             f"{': ' + found if found else ''}. Name the group too.")
        return candidates[0]

    def resolve_kind(self, api_version: str, kind: str) -> kmock.resource:
        group, _, version = api_version.rpartition('/')
        for res in self.resources:
            if res.group == group and res.version == version and self.resources[res].kind == kind:
                return res
        raise ValueError(f"No resource is declared for {api_version} {kind}.")

    def _not_found(self, resource: kmock.resource, name: str) -> ApiError:
        return ApiError(404, f'{resource.plural}{"." + resource.group if resource.group else ""} '
                             f'"{name}" not found',
                        details={'name': name, 'group': resource.group, 'kind': resource.plural})

    def _conflict(self, resource: kmock.resource, name: str, why: str) -> ApiError:
        return ApiError(409, f'Operation cannot be fulfilled on {resource.plural}'
                             f'{"." + resource.group if resource.group else ""} "{name}": {why}',
                        reason='Conflict',
                        details={'name': name, 'group': resource.group, 'kind': resource.plural})

    def _current(self, resource: kmock.resource, namespace: str | None,
                 name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    # ---- reads (run on the server loop) --------------------------------------------------------

    def get_object(self, resource: kmock.resource, namespace: str | None, name: str) -> dict[str, Any]:
        current = self._current(resource, namespace, name)
        if current is None:
            raise self._not_found(resource, name)
        return current

    def select(self, scope: _Scope) -> list[dict[str, Any]]:
        items = [copy.deepcopy(obj.raw) for (res, _, _), obj in self.objects.items()
                 if res == scope.resource and not obj.deleted]
        items = [item for item in items if scope.matches(item)]
        return sorted(items, key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))

    def list_objects(self, scope: _Scope, query: Mapping[str, str]) -> dict[str, Any]:
        items = self.select(scope)
        metadata: dict[str, Any] = {'resourceVersion': str(self._rv)}
        offset = 0
        if query.get('continue'):
            try:
                offset = int(json.loads(base64.b64decode(query['continue']))['offset'])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "the provided continue parameter is not valid")
        limit = int(query['limit']) if query.get('limit', '').isdigit() else 0
        if limit:
            rest = items[offset + limit:]
            items = items[offset:offset + limit]
            if rest:
                token = json.dumps({'offset': offset + limit}).encode()
                metadata['continue'] = base64.b64encode(token).decode()
                metadata['remainingItemCount'] = len(rest)
        else:
            items = items[offset:]
        info = self.resources[scope.resource]
        return {'apiVersion': _api_version(scope.resource), 'kind': f'{info.kind}List',
                'metadata': metadata, 'items': items}

    # ---- writes (run on the server loop) -------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, resource: kmock.resource, type_: str, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        event = _Event(rv=int(obj['metadata']['resourceVersion']), resource=resource,
                       type=type_, obj=copy.deepcopy(obj), old=copy.deepcopy(old))
        self._history.append(event)
        while len(self._history) > self.history_size:
            self._history_floor = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.resource == resource:
                watcher.queue.put_nowait(event)

    def _store(self, resource: kmock.resource, namespace: str | None, name: str,
               obj: dict[str, Any] | None) -> None:
        key = (resource, namespace, name)
        if obj is None:
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(copy.deepcopy(obj))
        else:
            self.objects[key] = copy.deepcopy(obj)

    def create_object(self, resource: kmock.resource, namespace: str | None,
                      body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        _, info = self._lookup(resource)
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault('metadata', {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if meta.get('resourceVersion'):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        if info.namespaced:
            if meta.get('namespace') and namespace and meta['namespace'] != namespace:
                raise ApiError(400, "the namespace of the provided object does not match "
                                    "the namespace sent on the request")
            namespace = namespace or meta.get('namespace')
            if not namespace:
                raise ApiError(422, "metadata.namespace: Required value")
            meta['namespace'] = namespace
        else:
            namespace = None
            meta.pop('namespace', None)
        name = meta.get('name')
        if not name and meta.get('generateName'):
            while True:
                name = meta['generateName'] + ''.join(random.choices(_NAME_ALPHABET, k=5))
                if self._current(resource, namespace, name) is None:
                    break
        if not name:
            raise ApiError(422, f"{info.kind} is invalid: metadata.name: Required value: "
                                f"name or generateName is required",
                           details={'group': resource.group, 'kind': info.kind})
        if self._current(resource, namespace, name) is not None:
            raise ApiError(409, f'{resource.plural}{"." + resource.group if resource.group else ""} '
                                f'"{name}" already exists', reason='AlreadyExists',
                           details={'name': name, 'group': resource.group, 'kind': resource.plural})
        obj['apiVersion'] = _api_version(resource)
        obj['kind'] = info.kind
        meta['name'] = name
        for field in ('deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = _now()
        meta['generation'] = 1
        if 'status' in info.subresources:
            obj.pop('status', None)  # the status stanza is written through /status only
            if resource == kmock.resource('', 'v1', 'namespaces'):
                obj['status'] = {'phase': 'Active'}
        if dry_run:
            meta['resourceVersion'] = str(self._rv)
            return obj
        meta['resourceVersion'] = str(self._next_rv())
        self._store(resource, namespace, name, obj)
        self._emit(resource, 'ADDED', obj, None)
        return copy.deepcopy(obj)

    def patch_object(self, resource: kmock.resource, namespace: str | None, name: str, patch: Any,
                     *, content_type: str = MERGE_PATCH, subresource: str | None = None,
                     dry_run: bool = False, raw_body: bytes | None = None) -> dict[str, Any]:
        if content_type == APPLY_PATCH:
            raise ApiError(415, "server-side apply (application/apply-patch+yaml) is not emulated "
                                "by tests.kubeapi; send a merge or JSON patch instead")
        if content_type not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH):
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media "
                                f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, "
                                f"{STRATEGIC_MERGE_PATCH}")
        if content_type == STRATEGIC_MERGE_PATCH and resource in self.custom_resources:
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media "
                                f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}")
        if patch is None and raw_body:
            raise ApiError(400, "the body of the request is not valid JSON")
        current = self._current(resource, namespace, name)
        if current is None:
            raise self._not_found(resource, name)
        if content_type == JSON_PATCH:
            try:
                candidate = json_patch(current, patch)
            except ValueError as e:
                raise ApiError(400, str(e))
            except JsonPatchError as e:
                raise ApiError(422, f"the server rejected our request due to an error in our "
                                    f"request: {e}", reason='Invalid')
        elif not isinstance(patch, Mapping):
            raise ApiError(400, "a merge patch must be a JSON object")
        elif content_type == STRATEGIC_MERGE_PATCH:
            candidate = strategic_merge_patch(current, patch)
        else:
            candidate = merge_patch(current, patch)
        if not isinstance(candidate, dict):
            raise ApiError(422, "the patched object is not a JSON object")
        return self._update(resource, namespace, name, current, candidate,
                            subresource=subresource, dry_run=dry_run)

    def replace_object(self, resource: kmock.resource, namespace: str | None, name: str,
                       body: Mapping[str, Any], *, subresource: str | None = None,
                       dry_run: bool = False) -> dict[str, Any]:
        current = self._current(resource, namespace, name)
        if current is None:
            raise self._not_found(resource, name)
        candidate = copy.deepcopy(dict(body))
        meta = candidate.get('metadata') or {}
        if meta.get('name') not in (None, name):
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match "
                                f"the name on the URL ({name})")
        return self._update(resource, namespace, name, current, candidate,
                            subresource=subresource, dry_run=dry_run)

    def _update(self, resource: kmock.resource, namespace: str | None, name: str,
                current: dict[str, Any], candidate: dict[str, Any], *,
                subresource: str | None, dry_run: bool) -> dict[str, Any]:
        _, info = self._lookup(resource)
        has_status = 'status' in info.subresources
        meta = candidate.get('metadata')
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        meta = meta or {}

        # Optimistic concurrency: a resourceVersion in the written object must be the current one.
        wanted_rv = meta.get('resourceVersion')
        if wanted_rv not in (None, '') and str(wanted_rv) != current['metadata']['resourceVersion']:
            raise self._conflict(resource, name, "the object has been modified; please apply "
                                                 "your changes to the latest version and try again")
        if meta.get('namespace') not in (None, namespace) and info.namespaced:
            raise ApiError(400, "the namespace of the provided object does not match the "
                                "namespace sent on the request")

        if subresource == 'status':
            new = copy.deepcopy(current)
            if 'status' in candidate:
                new['status'] = candidate['status']
            else:
                new.pop('status', None)
        else:
            new = candidate
            new['apiVersion'], new['kind'] = current['apiVersion'], current['kind']
            new_meta = new.setdefault('metadata', {})
            for field in _SERVER_METADATA:
                if field in current['metadata']:
                    new_meta[field] = current['metadata'][field]
                else:
                    new_meta.pop(field, None)
            if has_status:
                if 'status' in current:
                    new['status'] = current['status']
                else:
                    new.pop('status', None)
            if current['metadata'].get('deletionTimestamp'):
                added = set(new_meta.get('finalizers') or []) - set(current['metadata'].get('finalizers') or [])
                if added:
                    raise ApiError(422, f"{info.kind} \"{name}\" is invalid: metadata.finalizers: "
                                        f"Forbidden: no new finalizers can be added if the object "
                                        f"is being deleted, found new finalizers {sorted(added)!r}")

        if new == current:
            return current  # a no-op write changes nothing, not even the resourceVersion

        ignored = {'metadata', 'status'} if has_status else {'metadata'}
        before = {k: v for k, v in current.items() if k not in ignored}
        after = {k: v for k, v in new.items() if k not in ignored}
        if before != after:
            new['metadata']['generation'] = current['metadata'].get('generation', 0) + 1
        if dry_run:
            return new

        new['metadata']['resourceVersion'] = str(self._next_rv())
        self._store(resource, namespace, name, new)
        self._emit(resource, 'MODIFIED', new, current)
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            self._erase(resource, namespace, name, new)
        return copy.deepcopy(new)

    def _erase(self, resource: kmock.resource, namespace: str | None, name: str,
               current: dict[str, Any]) -> None:
        final = copy.deepcopy(current)
        final['metadata']['resourceVersion'] = str(self._next_rv())
        self._store(resource, namespace, name, None)
        self._emit(resource, 'DELETED', final, current)

    def delete_object(self, resource: kmock.resource, namespace: str | None, name: str, *,
                      options: Mapping[str, Any] | None = None,
                      dry_run: bool = False) -> dict[str, Any]:
        current = self._current(resource, namespace, name)
        if current is None:
            raise self._not_found(resource, name)
        preconditions = (options or {}).get('preconditions') or {}
        for field in ('resourceVersion', 'uid'):
            expected = preconditions.get(field)
            if expected is not None and current['metadata'].get(field) != expected:
                raise self._conflict(resource, name, f"Precondition failed: {field} in precondition: "
                                                     f"{expected}, {field} in object meta: "
                                                     f"{current['metadata'].get(field)}")
        if current['metadata'].get('deletionTimestamp'):
            return current
        if current['metadata'].get('finalizers'):
            new = copy.deepcopy(current)
            new['metadata']['deletionTimestamp'] = _now()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            new['metadata']['generation'] = current['metadata'].get('generation', 0) + 1
            if dry_run:
                return new
            new['metadata']['resourceVersion'] = str(self._next_rv())
            self._store(resource, namespace, name, new)
            self._emit(resource, 'MODIFIED', new, current)
            return copy.deepcopy(new)
        if not dry_run:
            self._erase(resource, namespace, name, current)
        return {'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Success',
                'details': {'name': name, 'group': resource.group, 'kind': resource.plural,
                            'uid': current['metadata']['uid']}}

    def _delete_collection(self, scope: _Scope, dry_run: bool) -> dict[str, Any]:
        deleted = []
        for obj in self.select(scope):
            meta = obj['metadata']
            result = self.delete_object(scope.resource, meta.get('namespace'), meta['name'],
                                        dry_run=dry_run)
            deleted.append(obj if result.get('kind') == 'Status' else result)
        info = self.resources[scope.resource]
        return {'apiVersion': _api_version(scope.resource), 'kind': f'{info.kind}List',
                'metadata': {'resourceVersion': str(self._rv)}, 'items': deleted}

    # ---- watches -------------------------------------------------------------------------------

    def _serve_watch(self, scope: _Scope, query: Mapping[str, str]) -> kmock.Response:
        since = query.get('resourceVersion', '')
        if since not in ('', '0') and not since.isdigit():
            raise ApiError(400, f"invalid resource version: {since!r}")
        timeout = query.get('timeoutSeconds', '')
        timeout_s = float(timeout) if timeout.isdigit() else None
        bookmarks = query.get('allowWatchBookmarks') in ('true', '1')
        initial_end = query.get('sendInitialEvents') in ('true', '1')
        with self._guard:
            expired = self._expirations > 0
            self._expirations -= 1 if expired else 0
        stream = self._watch_stream(scope, since=since, expired=expired, timeout_s=timeout_s,
                                    bookmarks=bookmarks, initial_end=initial_end)
        return kmock.Response(status=200, headers={'Content-Type': 'application/json'},
                              payload=stream)

    def _gone(self, since: str) -> dict[str, Any]:
        return {'type': 'ERROR', 'object': ApiError(
            410, f"too old resource version: {since} ({self._history_floor})",
            reason='Expired').body}

    def _bookmark(self, scope: _Scope, *, initial_end: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {'resourceVersion': str(self._rv)}
        if initial_end:
            metadata['annotations'] = {'k8s.io/initial-events-end': 'true'}
        return {'type': 'BOOKMARK', 'object': {
            'apiVersion': _api_version(scope.resource), 'kind': scope.info.kind,
            'metadata': metadata}}

    @staticmethod
    def _translate(event: _Event, scope: _Scope) -> dict[str, Any] | None:
        """What a watcher with this scope sees: objects entering/leaving the selection."""
        now, before = scope.matches(event.obj), scope.matches(event.old)
        if event.type == 'DELETED':
            type_ = 'DELETED' if now or before else None
        elif now and before:
            type_ = 'MODIFIED'
        elif now:
            type_ = 'ADDED'
        elif before:
            type_ = 'DELETED'
        else:
            type_ = None
        return None if type_ is None else {'type': type_, 'object': copy.deepcopy(event.obj)}

    async def _watch_stream(self, scope: _Scope, *, since: str, expired: bool,
                            timeout_s: float | None, bookmarks: bool,
                            initial_end: bool) -> AsyncIterator[Any]:
        # Every path yields first: a generator that ends without yielding makes kmock
        # treat the reaction as depleted and disable it for good.
        if self._closing:
            yield b''
            return
        if expired or (since not in ('', '0') and int(since) < self._history_floor):
            yield self._gone(since)
            return

        # Registering and taking the initial state happen without a yield in between,
        # so no event can fall between the two.
        watcher = _Watcher(resource=scope.resource, queue=asyncio.Queue())
        self._watchers.add(watcher)
        try:
            if since in ('', '0'):
                initial = [{'type': 'ADDED', 'object': obj} for obj in self.select(scope)]
                if initial_end and bookmarks:
                    initial.append(self._bookmark(scope, initial_end=True))
            else:
                backlog = [e for e in self._history if e.resource == scope.resource and e.rv > int(since)]
                initial = [out for e in backlog if (out := self._translate(e, scope)) is not None]
            seen_rv = self._rv

            yield b''  # send the headers now, even if there is nothing to stream yet
            for item in initial:
                yield item

            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s if timeout_s is not None else None
            next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
            while True:
                wakeups = [t for t in (deadline, next_bookmark) if t is not None]
                delay = max(0.0, min(wakeups) - loop.time()) if wakeups else None
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), delay)
                except asyncio.TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        return
                    yield self._bookmark(scope)
                    next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if event is None:
                    return
                if event.rv <= seen_rv:
                    continue  # already in the initial state or the backlog
                if (out := self._translate(event, scope)) is not None:
                    yield out
        finally:
            self._watchers.discard(watcher)


# --------------------------------------------------------------------------------------------------
# The threaded server and the helpers for test code.
# --------------------------------------------------------------------------------------------------

class _QuickRawServer(aiohttp.test_utils.RawTestServer):
    """aiohttp's raw test server without debug mode and with a short shutdown grace period."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web_runner.ServerRunner:
        server = aiohttp.web_server.Server(self._handler, loop=self._loop, debug=False, **kwargs)
        return aiohttp.web_runner.ServerRunner(server, debug=False, shutdown_timeout=2.0, **kwargs)


@attrs.mutable
class LoopbackServer(kmock.Server):
    """kmock.Server without its DNS interceptor, which patches aiohttp globally."""

    async def __aenter__(self) -> LoopbackServer:
        if self._managed_server is not None:
            raise RuntimeError("The server can be started only once.")
        self._managed_server = self._server_cls(self.handler, host=self._host, port=self._port)
        await self._managed_server.__aenter__()
        self._managed_client = self._client_fct(self._managed_server.make_url('/'))
        await self._managed_client.__aenter__()
        self.handler.servers.append(self)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.handler.servers.remove(self)
        assert self._managed_client is not None and self._managed_server is not None
        await self._managed_client.__aexit__(*exc_info)
        await self._managed_server.__aexit__(*exc_info)
        self._managed_client = None
        self._managed_server = None


# Registries that already carry the login handler, mapped to the server they log in to now.
_LOGIN_TARGETS: weakref.WeakKeyDictionary[Any, KubeApiServer] = weakref.WeakKeyDictionary()


class KubeApiServer:
    """
    Runs a :class:`KubeApiEmulator` on loopback in its own thread and event loop.

    Helpers are synchronous (they block until the server loop answers) with
    ``a``-prefixed awaitable twins for async tests; they act on the store
    directly, as another API client would, so watchers see their changes, but
    they are not logged in :attr:`requests`. They raise :class:`ApiError`
    exactly where the HTTP API answers an error.
    """

    def __init__(self, *, host: str = '127.0.0.1', port: int = 0,
                 bookmark_interval: float = 1.0, history_size: int = 10_000) -> None:
        self._host = host
        self._port = port
        self._options = {'bookmark_interval': bookmark_interval, 'history_size': history_size}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._emulator: KubeApiEmulator | None = None
        self._url: str | None = None
        self.kubeconfig_path: Path | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> KubeApiServer:
        if self._thread is not None:
            raise RuntimeError("The server is already started.")
        self._thread = threading.Thread(target=self._run, name='kubeapi-server', daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"The test API server did not start in {timeout} seconds.")
        if self._failure is not None:
            self._thread.join(timeout)
            raise RuntimeError("The test API server failed to start.") from self._failure
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just closed by itself
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"The test API server did not stop in {timeout} seconds.")
        self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start() if it happens before readiness
            self._failure = e
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        emulator = KubeApiEmulator(**self._options)
        server = LoopbackServer(emulator, host=self._host, port=self._port or None,
                                server_cls=_QuickRawServer)
        async with emulator, server:
            self._emulator = emulator
            self._url = f'http://{server.host}:{server.port}'
            self._ready.set()
            await self._stopping.wait()
            emulator.close()
            await asyncio.sleep(0)  # let the watch streams see their end

    # ---- access --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("The test API server is not started.")
        return self._url

    @property
    def server(self) -> KubeApiEmulator:
        """The kmock handler: ``.objects``, ``.resources``, kmock's DSL, and the controls below."""
        if self._emulator is None:
            raise RuntimeError("The test API server is not started.")
        return self._emulator

    emulator = server

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        if self._loop is None or not self.running:
            raise RuntimeError("The test API server is not running.")
        if threading.current_thread() is self._thread:
            raise RuntimeError("Helpers cannot be called from the server's own thread.")

        async def call() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

    def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._call(fn, *args, **kwargs).result(timeout=10)

    async def _async(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(self._call(fn, *args, **kwargs))

    # ---- test controls (thread-safe) -----------------------------------------------------------

    def inject(self, method: str, path_regex: str, status: int, times: int = 1, **kwargs: Any) -> None:
        """See :meth:`KubeApiEmulator.inject`."""
        self.server.inject(method, path_regex, status, times, **kwargs)

    @property
    def requests(self) -> list[RequestRecord]:
        return self.server.requests

    def clear_requests(self) -> None:
        self.server.clear_requests()

    def clear_faults(self) -> None:
        self.server.clear_faults()

    def expire_watches(self, times: int = 1) -> None:
        self.server.expire_watches(times)

    def end_watches(self) -> int:
        return self._sync(self.server.end_watches)

    def compact(self) -> None:
        self._sync(self.server.compact)

    @property
    def resource_version(self) -> int:
        return self.server.resource_version

    @property
    def open_watches(self) -> int:
        return self._sync(lambda: self.server.open_watches)

    @property
    def internal_errors(self) -> list[Exception]:
        return self.server.internal_errors

    def add_resource(self, key: str, info: kmock.ResourceInfo, *, custom: bool = True) -> None:
        self._sync(self.server.add_resource, key, info, custom=custom)

    # ---- object helpers ------------------------------------------------------------------------

    def _do_objects(self, spec: str, namespace: str | None) -> list[dict[str, Any]]:
        resource = self.server.resolve(spec)
        info = self.server.resources[resource]
        return self.server.select(_Scope(resource=resource, info=info, namespace=namespace,
                                         name=None, labels=(), fields=()))

    def _do_get(self, spec: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.server._current(self.server.resolve(spec), namespace, name)

    def _do_create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        emulator = self.server
        resource = emulator.resolve_kind(obj['apiVersion'], obj['kind'])
        info = emulator.resources[resource]
        namespace = (obj.get('metadata', {}).get('namespace') or 'default') if info.namespaced else None
        created = emulator.create_object(resource, namespace, obj)
        if 'status' in obj and 'status' in info.subresources:
            meta = created['metadata']
            created = emulator.patch_object(resource, namespace, meta['name'],
                                            {'status': obj['status']}, subresource='status')
        return created

    def _do_patch(self, spec: str, name: str, patch: Any, namespace: str | None,
                  subresource: str | None, content_type: str) -> dict[str, Any]:
        return self.server.patch_object(self.server.resolve(spec), namespace, name, patch,
                                        content_type=content_type, subresource=subresource)

    def _do_delete(self, spec: str, name: str, namespace: str | None) -> dict[str, Any]:
        return self.server.delete_object(self.server.resolve(spec), namespace, name)

    def _do_events_for(self, kind: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        found = []
        for spec, ref in (('v1/events', 'involvedObject'), ('events.k8s.io/v1/events', 'regarding')):
            for event in self._do_objects(spec, None):
                target = event.get(ref) or {}
                target_ns = target.get('namespace') or event['metadata'].get('namespace')
                if target.get('kind') == kind and target.get('name') == name and (
                        namespace is None or target_ns == namespace):
                    found.append(event)
        return sorted(found, key=lambda e: int(e['metadata']['resourceVersion']))

    def objects(self, kind_plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of a resource (``'configmaps'``, ``'deployments.apps'``, ...)."""
        return self._sync(self._do_objects, kind_plural, namespace)

    def get(self, kind_plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self._sync(self._do_get, kind_plural, name, namespace)

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object; a ``status`` in it is then written through /status where declared."""
        return self._sync(self._do_create, obj)

    def patch(self, kind_plural: str, name: str, patch: Any, namespace: str | None = None, *,
              subresource: str | None = None, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return self._sync(self._do_patch, kind_plural, name, patch, namespace,
                          subresource, content_type)

    def delete(self, kind_plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """Delete as the API does: objects with finalizers only get a deletionTimestamp."""
        return self._sync(self._do_delete, kind_plural, name, namespace)

    def events_for(self, kind: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        """Events (core v1 and events.k8s.io/v1) about one object, oldest first."""
        return self._sync(self._do_events_for, kind, namespace, name)

    async def aobjects(self, kind_plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self._async(self._do_objects, kind_plural, namespace)

    async def aget(self, kind_plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return await self._async(self._do_get, kind_plural, name, namespace)

    async def acreate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self._async(self._do_create, obj)

    async def apatch(self, kind_plural: str, name: str, patch: Any, namespace: str | None = None, *,
                     subresource: str | None = None, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return await self._async(self._do_patch, kind_plural, name, patch, namespace,
                                 subresource, content_type)

    async def adelete(self, kind_plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self._async(self._do_delete, kind_plural, name, namespace)

    async def aevents_for(self, kind: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        return await self._async(self._do_events_for, kind, namespace, name)

    # ---- clients -------------------------------------------------------------------------------

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (JSON, which is YAML) with one context pointing here."""
        path = Path(path)
        path.write_text(json.dumps({
            'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
            'clusters': [{'name': 'kubeapi', 'cluster': {'server': self.url}}],
            'users': [{'name': 'kubeapi', 'user': {'token': 'kubeapi-test-token'}}],
            'contexts': [{'name': 'kubeapi', 'context': {
                'cluster': 'kubeapi', 'user': 'kubeapi', 'namespace': 'default'}}],
            'current-context': 'kubeapi',
        }, indent=2))
        self.kubeconfig_path = path
        return path

    def connection_info(self) -> Any:
        """kopf credentials for this server (plain HTTP on loopback)."""
        import kopf
        return kopf.ConnectionInfo(server=self.url, insecure=True, default_namespace='default',
                                   priority=1000)

    def login(self, **_: Any) -> Any:
        """A ``@kopf.on.login`` handler: ``kopf.on.login(registry=reg)(api.login)``."""
        return self.connection_info()

    def kubernetes_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server; close it after use."""
        import kubernetes.client
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.ApiClient(configuration)

    # ---- waiting -------------------------------------------------------------------------------

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
                 message: str = "The condition did not come true.") -> T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"{message} Waited {timeout} seconds.")
            time.sleep(interval)

    @staticmethod
    async def await_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                        message: str = "The condition did not come true.") -> Any:
        """The async twin of :meth:`wait_for`; ``predicate`` may return an awaitable."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"{message} Waited {timeout} seconds.")
            await asyncio.sleep(interval)


@contextlib.contextmanager
def run_kopf(api: KubeApiServer, registry: Any = None, *, settings: Any = None,
             clusterwide: bool = True, namespaces: tuple[str, ...] = (), memo: Any = None,
             ready_timeout: float = 10.0, stop_timeout: float = 10.0) -> Iterator[Any]:
    """
    Run a kopf operator against ``api`` in a thread; yield its registry.

    A login handler returning :meth:`KubeApiServer.connection_info` is added
    to the registry (once per registry; it follows the latest ``api``).
    ``settings.process.ultimate_exiting_timeout`` is cleared: kopf would
    otherwise SIGKILL the whole test process after a failed operator exit.
    """
    import kopf

    registry = registry if registry is not None else kopf.OperatorRegistry()
    if registry not in _LOGIN_TARGETS:
        @kopf.on.login(registry=registry, id='tests.kubeapi')
        def login_to_test_api(**_: Any) -> Any:
            return _LOGIN_TARGETS[registry].connection_info()
    _LOGIN_TARGETS[registry] = api

    settings = settings if settings is not None else kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = None
    ready_flag = threading.Event()
    stop_flag = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(kopf.operator(
                registry=registry, settings=settings, standalone=True, clusterwide=clusterwide,
                namespaces=namespaces, memo=memo, ready_flag=ready_flag, stop_flag=stop_flag))
        except BaseException as e:
            failures.append(e)
            ready_flag.set()

    thread = threading.Thread(target=target, name='kopf-operator', daemon=True)
    thread.start()
    try:
        if not ready_flag.wait(ready_timeout):
            raise RuntimeError(f"The kopf operator was not ready in {ready_timeout} seconds.")
        if failures:
            raise RuntimeError("The kopf operator failed to start.") from failures[0]
        yield registry
    finally:
        stop_flag.set()
        thread.join(stop_timeout)
        executor = getattr(settings.execution, 'executor', None)
        if executor is not None:
            executor.shutdown(wait=True)
        if thread.is_alive():
            raise RuntimeError(f"The kopf operator did not stop in {stop_timeout} seconds.")
        if failures:
            raise RuntimeError(f"The kopf operator failed: {failures[0]!r}") from failures[0]

