"""Small builders for the Kubernetes objects the unit tests feed the engine (plain dicts, as the API returns them)."""
from __future__ import annotations

from typing import Any

from guywire.views.inventory import Inventory, view_of


def container(name: str = "app", image: str = "registry.example/app:1.0", *, env: dict[str, Any] | None = None,
              ports: list[dict] | None = None, probes: bool = True, resources: dict | None = None) -> dict:
    c: dict[str, Any] = {"name": name, "image": image}
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if ports:
        c["ports"] = ports
    if probes:
        c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}}
        c["livenessProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    c["resources"] = resources if resources is not None else {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}
    return c


def deployment(name: str, namespace: str = "ml", *, kind: str = "Deployment", depends_on: str | None = None,
               retry: str | None = None, annotations: dict[str, str] | None = None,
               labels: dict[str, str] | None = None, pod_labels: dict[str, str] | None = None,
               env: dict[str, Any] | None = None, containers: list[dict] | None = None,
               pod_annotations: dict[str, str] | None = None) -> dict:
    ann = dict(annotations or {})
    if depends_on is not None:
        ann["guywire.dev/depends-on"] = depends_on
    if retry is not None:
        ann["guywire.dev/retry"] = retry
    meta_labels = {"app.kubernetes.io/name": name, **(labels or {})}
    pod_meta: dict[str, Any] = {"labels": {"app": name, **(pod_labels or {})}}
    if pod_annotations:
        pod_meta["annotations"] = pod_annotations
    pod_spec = {"containers": containers or [container(env=env)]}
    obj: dict[str, Any] = {
        "apiVersion": {"Pod": "v1", "Job": "batch/v1", "CronJob": "batch/v1"}.get(kind, "apps/v1"), "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels, "annotations": ann},
    }
    if kind == "Pod":
        obj["metadata"]["labels"] = {**meta_labels, **pod_meta["labels"]}
        obj["spec"] = pod_spec
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
            "metadata": pod_meta, "spec": {**pod_spec, "restartPolicy": "Never"}}}}}
    else:
        obj["spec"] = {"selector": {"matchLabels": pod_meta["labels"]}, "template": {"metadata": pod_meta,
                                                                                    "spec": pod_spec}}
    return obj


def service(name: str, namespace: str = "ml", *, selector: dict[str, str] | None = None, port: int = 80,
            external_name: str | None = None, labels: dict[str, str] | None = None) -> dict:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": port}]}
    if external_name:
        spec["type"] = "ExternalName"
        spec["externalName"] = external_name
    else:
        spec["selector"] = selector if selector is not None else {"app": name}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def view(obj: dict):
    v = view_of(obj)
    assert v is not None, obj
    return v


def inventory(*objs: dict) -> Inventory:
    inv = Inventory()
    for obj in objs:
        inv.add(view(obj))
    return inv
