"""The ValidatingWebhookConfiguration that routes admission requests to guywire (also rendered by the chart)."""
from __future__ import annotations

import base64
import re

import yaml

from ..views.aikinds import AI_KINDS

WORKLOAD_RULES = [
    {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments", "statefulsets", "daemonsets",
                                                                  "replicasets"]},
    {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs", "cronjobs"]},
    {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
]
WORKLOAD_RULES = [dict(r, scope="Namespaced") for r in WORKLOAD_RULES]
_AI_GROUPS: dict[tuple[str, str, bool], list[str]] = {}
for _k in AI_KINDS.values():
    _AI_GROUPS.setdefault((_k.group, _k.version, _k.namespaced), []).append(_k.plural)
WORKLOAD_RULES += [{"apiGroups": [g], "apiVersions": [v], "resources": sorted(set(p)),
                    "scope": "Namespaced" if namespaced else "Cluster"}
                   for (g, v, namespaced), p in sorted(_AI_GROUPS.items())]
POLICY_RULES = [{"apiGroups": ["guywire.dev"], "apiVersions": ["v1alpha1"],
                 "resources": ["complexitypolicies", "clustercomplexitypolicies"]}]


_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def ca_bundle_problem(data: bytes) -> tuple[str, str] | None:
    """Why ``data`` cannot be a caBundle, or None when it holds PEM certificates and nothing secret.

    ``("error", why)`` when it holds a private key (never to be put into a cluster object), ``("warning",
    why)`` when it holds no ``CERTIFICATE`` block (so the API server would trust nothing)."""
    labels = [m.group(1).decode() for m in _PEM_BEGIN.finditer(data)]
    keys = [label for label in labels if "PRIVATE KEY" in label]
    if keys:
        return "error", (f"holds a {keys[0]}, which must never go into caBundle (it would be readable by anyone "
                         "who can read the webhook configuration); give the CA's certificate (ca.crt), not its key")
    if "CERTIFICATE" not in labels:
        found = f"only {', '.join(sorted(set(labels)))} blocks" if labels else "no PEM block"
        return "warning", f"holds {found}, not a PEM CERTIFICATE (-----BEGIN CERTIFICATE-----)"
    return None


def webhook_configuration(*, namespace: str = "guywire", service: str | None = "guywire", port: int = 443,
                          base_url: str | None = None, ca_bundle: bytes | None = None,
                          service_account: str = "guywire", name: str = "guywire", timeout: int = 3) -> dict:
    """Fail-open (Ignore), short timeout, no side effects on dry run, and filtered before it reaches the pod.

    Status and other subresources never match: the rules name only the main resources. There is no
    ``request.subResource == ''`` condition: a real API server leaves the field out when it is empty,
    the expression then fails with "no such key", and under failurePolicy Ignore a failing condition
    skips the webhook, so no request ever reached guywire (found against kube-apiserver v1.37)."""
    own_user = f"system:serviceaccount:{namespace}:{service_account}"

    def client(path: str) -> dict:
        if base_url:
            cfg: dict = {"url": base_url.rstrip("/") + path}
        else:
            cfg = {"service": {"namespace": namespace, "name": service, "path": path, "port": port}}
        if ca_bundle:
            cfg["caBundle"] = base64.b64encode(ca_bundle).decode()
        return cfg

    common = {"failurePolicy": "Ignore", "timeoutSeconds": timeout, "sideEffects": "NoneOnDryRun",
              "admissionReviewVersions": ["v1"], "matchPolicy": "Equivalent"}
    not_own = {"name": "not-guywire-itself", "expression": f"request.userInfo.username != '{own_user}'"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "guywire",
                                              "app.kubernetes.io/component": "webhook"}},
        "webhooks": [
            {
                "name": "workloads.guywire.dev",
                "clientConfig": client("/validate/workloads"),
                "rules": [dict(r, operations=["CREATE", "UPDATE"]) for r in WORKLOAD_RULES],
                "namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}]},
                "matchConditions": [
                    not_own,
                    {"name": "not-controlled-by-another-workload",
                     "expression": "!has(object.metadata.ownerReferences) || "
                                   "!object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)"},
                ],
                **common,
            },
            {
                "name": "policies.guywire.dev",
                "clientConfig": client("/validate/policies"),
                "rules": [dict(r, operations=["CREATE", "UPDATE"], scope="*") for r in POLICY_RULES],
                "matchConditions": [not_own],
                **common,
            },
        ],
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice in full each time: no ``&id001`` anchors and ``*id001`` aliases, which
    kubectl accepts but people reading or diffing the YAML should not have to follow."""

    def ignore_aliases(self, data) -> bool:
        return True


def webhook_configuration_yaml(**kwargs) -> str:
    return "# Generated by `guywire webhook-config`.\n" + yaml.dump(webhook_configuration(**kwargs),
                                                                      Dumper=_PlainDumper, sort_keys=False)
