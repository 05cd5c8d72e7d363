"""Scenario 1: guywire's CRDs through real kubectl into a real API server: accepted (structural schema,
CEL rules compile), bad policies refused with the message users see, printer columns shown."""
from __future__ import annotations

from tests.cluster.controlplane import ROOT, wait_until

#: the printer columns both kinds show (kubectl get; with -A, NAMESPACE first for the namespaced one)
COLUMNS = ["NAME", "ENFORCEMENT", "MATCHED", "VIOLATING", "READY", "AGE"]


def policy(kind: str, name: str, spec: dict, namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "guywire.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def established(cluster) -> bool:
    for crd in ("complexitypolicies.guywire.dev", "clustercomplexitypolicies.guywire.dev"):
        obj = cluster.get("crd", crd)
        conds = {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}
        if conds.get("Established") != "True" or conds.get("NonStructuralSchema") == "True":
            return False
    return True


def test_kubectl_apply_of_the_crds_is_accepted_and_they_are_established(cluster):
    out = cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    assert "customresourcedefinition.apiextensions.k8s.io/complexitypolicies.guywire.dev" in out.stdout
    assert "clustercomplexitypolicies.guywire.dev" in out.stdout
    assert out.stderr == "", out.stderr  # no warnings about the schema either
    wait_until(lambda: established(cluster), 30, "both CRDs Established")


def test_a_policy_that_breaks_a_cel_rule_is_refused_with_its_message(cluster):
    wait_until(lambda: established(cluster), 30, "both CRDs Established")
    cluster.kubectl("create", "namespace", "crd-test")
    bad = policy("ComplexityPolicy", "selects-namespaces",
                 {"enforcement": "Warn", "match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}}, "crd-test")
    out = cluster.apply(bad, check=False)
    assert out.returncode != 0
    assert "match.namespaceSelector is not allowed" in out.stderr, out.stderr
    assert out.stderr.startswith('The ComplexityPolicy "selects-namespaces" is invalid: '
                                 "spec.match.namespaceSelector: Forbidden: "), out.stderr

    override = policy("ClusterComplexityPolicy", "empty-override", {"overrides": [{"rule": "GW-OBS-002"}]})
    out = cluster.apply(override, check=False)
    assert out.returncode != 0
    assert "spec.overrides[0]" in out.stderr and "give severity, or disabled: true" in out.stderr, out.stderr

    # a label key longer than Kubernetes allows (317: a 253-character prefix, '/', a 63-character name)
    long_key = policy("ClusterComplexityPolicy", "long-label-key",
                      {"match": {"selector": {"matchLabels": {"k" * 400: "v"}}}})
    out = cluster.apply(long_key, check=False)
    assert out.returncode != 0
    assert "spec.match.selector.matchLabels" in out.stderr and "1..317 characters" in out.stderr, out.stderr


def test_a_policy_that_breaks_the_schema_is_refused_naming_the_field(cluster):
    wait_until(lambda: established(cluster), 30, "both CRDs Established")
    out = cluster.apply(policy("ClusterComplexityPolicy", "loud", {"enforcement": "Shout"}), check=False)
    assert out.returncode != 0
    assert "spec.enforcement" in out.stderr and '"Shout"' in out.stderr, out.stderr
    assert 'supported values: "Audit", "Warn", "Enforce"' in out.stderr, out.stderr


def test_kubectl_get_shows_the_printer_columns(cluster):
    wait_until(lambda: established(cluster), 30, "both CRDs Established")
    cluster.apply(policy("ClusterComplexityPolicy", "columns", {"enforcement": "Audit"}))
    header = cluster.kubectl("get", "ccxp").stdout.splitlines()[0].split()
    assert header == COLUMNS, header
    row = cluster.kubectl("get", "ccxp", "columns").stdout.splitlines()[1].split()
    assert row[:2] == ["columns", "Audit"], row
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crd-columns"}})
    cluster.apply(policy("ComplexityPolicy", "columns", {"enforcement": "Warn"}, "crd-columns"))
    header, *rows = cluster.kubectl("get", "cxp", "-A").stdout.splitlines()
    assert header.split() == ["NAMESPACE", *COLUMNS], header
    assert ["crd-columns", "columns", "Warn"] in [r.split()[:3] for r in rows], rows
    both = cluster.kubectl("get", "guywire", "-A").stdout.split()  # the category
    assert {"clustercomplexitypolicy.guywire.dev/columns", "complexitypolicy.guywire.dev/columns"} <= set(both), both
    cluster.kubectl("delete", "ccxp", "columns")
    cluster.kubectl("delete", "namespace", "crd-columns", "--wait=false")
