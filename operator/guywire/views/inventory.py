"""The set of objects the engine evaluates, keyed for quick lookup, built from plain dicts."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .aikinds import ai_kind_of, parse_ai_workload
from .annotations import OWN_ANNOTATIONS
from ..model.finding import SourceRef
from .workload import (
    DEFAULT_NAMESPACE, MESH_GROUPS, MESH_KINDS, MONITOR_KINDS, WORKLOAD_KINDS, MeshRoute, Monitor, Namespace, Node,
    ParseError, Service, Workload, parse_http_route, parse_mesh, parse_service_profile, parse_monitor, parse_namespace, parse_node, parse_service,
    parse_workload,
)

POLICY_KINDS = frozenset({"ComplexityPolicy", "ClusterComplexityPolicy"})


@dataclass(slots=True)
class Inventory:
    workloads: dict[tuple[str, str, str], Workload] = field(default_factory=dict)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    monitors: dict[tuple[str, str, str], Monitor] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    meshes: dict[tuple[str, str, str], MeshRoute] = field(default_factory=dict)  # Istio VirtualService, DestinationRule

    def add(self, view: Any) -> bool:
        """Hold ``view``; False for a workload run by another workload (a Deployment's ReplicaSet, a
        CronJob's Job, a controller's Pod): its owner is evaluated instead, once."""
        if isinstance(view, Workload):
            if view.owner is not None:
                return False
            self.workloads[view.key] = view
            for name in view.implicit_services:
                if (view.namespace, name) not in self.services:
                    self.services[(view.namespace, name)] = implicit_service(view, name)
        elif isinstance(view, Service):
            self.services[view.key] = view
        elif isinstance(view, Monitor):
            self.monitors[(view.namespace, view.kind, view.name)] = view
        elif isinstance(view, Namespace):
            self.namespaces[view.name] = view
        elif isinstance(view, Node):
            self.nodes[view.name] = view
        elif isinstance(view, MeshRoute):
            self.meshes[view.key] = view
        return True

    def namespace_labels(self, ns: str) -> dict[str, str]:
        found = self.namespaces.get(ns)
        labels = dict(found.labels) if found else {}
        labels.setdefault("kubernetes.io/metadata.name", ns)
        return labels


def fingerprint(body: dict) -> int:
    """A hash of what the engine reads of an object (labels, annotations, owner, spec; a Node's
    allocatable). guywire's own annotations and kopf's bookkeeping are left out, so a write that
    changes only those never causes another evaluation, in the operator or at admission."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    raw = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    annotations = {k: v for k, v in raw.items()
                   if k not in OWN_ANNOTATIONS and not str(k).startswith("kopf.zalando.org")}
    status = body.get("status") if isinstance(body.get("status"), dict) else {}
    relevant = [meta.get("labels"), annotations, meta.get("ownerReferences"), body.get("spec"),
                status.get("allocatable") if body.get("kind") == "Node" else None]
    import hashlib  # here, not at the top: loading OpenSSL is a cost `guywire check` does not need

    digest = hashlib.blake2b(json.dumps(relevant, sort_keys=True, default=str).encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big")  # an int, not hex: the operator keeps one per object (44 vs 81 bytes)


def implicit_service(w: Workload, name: str) -> Service:
    """A Service the workload's controller creates; it leads to that workload only."""
    return Service(namespace=w.namespace, name=name, selector={}, ports=[], labels={}, backend=w.key)


def view_of(obj: dict, source: SourceRef | None = None, default_namespace: str = DEFAULT_NAMESPACE) -> Any:
    """The view for ``obj``, or None for a kind the engine does not read. Raises ParseError on a bad object."""
    kind = obj.get("kind")
    ai = ai_kind_of(obj)
    if ai is not None:
        return parse_ai_workload(obj, ai, source, default_namespace)
    if kind in WORKLOAD_KINDS:
        return parse_workload(obj, source, default_namespace)
    if kind == "Service":
        return parse_service(obj, source, default_namespace)
    if kind in MONITOR_KINDS:
        return parse_monitor(obj, source, default_namespace)
    if kind == "Namespace":
        return parse_namespace(obj)
    if kind == "Node":
        return parse_node(obj, source)
    if kind in MESH_KINDS and str(obj.get("apiVersion") or "").split("/")[0] == MESH_GROUPS[kind]:
        if kind == "HTTPRoute":
            return parse_http_route(obj, source, default_namespace)
        if kind == "ServiceProfile":
            return parse_service_profile(obj, source, default_namespace)
        return parse_mesh(obj, source, default_namespace)
    return None


__all__ = ["Inventory", "POLICY_KINDS", "ParseError", "fingerprint", "view_of"]
