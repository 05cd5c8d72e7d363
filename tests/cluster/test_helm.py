"""Scenario 2: `helm install`, `helm upgrade` and `helm uninstall` of helm/guywire against the real server."""
from __future__ import annotations

import json

from tests.cluster.conftest import CHART, helm

NS, REL = "gw-life", "gw-life"
FULL = "gw-life-guywire"
KINDS = ("deployments,daemonsets,services,serviceaccounts,secrets,configmaps,poddisruptionbudgets,roles,"
         "rolebindings")
CLUSTER_KINDS = "clusterroles,clusterrolebindings,validatingwebhookconfigurations"


def labelled(cluster, kinds: str, namespaced: bool) -> list[str]:
    args = ["get", kinds, "-l", f"app.kubernetes.io/instance={REL}", "-o", "name"]
    out = cluster.kubectl(*args, *(["-n", NS] if namespaced else []))
    return sorted(out.stdout.split())


def test_install_upgrade_uninstall(cluster, tools):
    crds = ("complexitypolicies.guywire.dev", "clustercomplexitypolicies.guywire.dev")
    absent = [c for c in crds if cluster.get("crd", c) is None]  # none when another module's release came first
    out = helm(cluster, tools, "install", REL, str(CHART), "-n", NS, "--create-namespace", "--wait=hookOnly",
               "--set", "metrics.serviceMonitor.enabled=false")
    assert "STATUS: deployed" in out.stdout, out.stdout
    for crd in absent:  # Helm installed the chart's crds/ itself (the session's first release proves it otherwise)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")

    names = labelled(cluster, KINDS, True)
    for want in (f"deployment.apps/{FULL}", f"daemonset.apps/{FULL}-node-agent", f"service/{FULL}",
                 f"serviceaccount/{FULL}", f"secret/{FULL}-webhook-tls"):
        assert want in names, names
    cluster_names = labelled(cluster, CLUSTER_KINDS, False)
    for want in (f"clusterrole.rbac.authorization.k8s.io/{FULL}", f"clusterrolebinding.rbac.authorization.k8s.io/{FULL}",
                 f"validatingwebhookconfiguration.admissionregistration.k8s.io/{FULL}"):
        assert want in cluster_names, cluster_names
    vwc = cluster.get("validatingwebhookconfiguration", FULL)
    ca = {h["clientConfig"]["caBundle"] for h in vwc["webhooks"]}
    assert len(ca) == 1 and ca != {""}, "every webhook carries the chart-generated caBundle"

    out = helm(cluster, tools, "upgrade", REL, str(CHART), "-n", NS, "--wait=hookOnly",
               "--set", "operator.auditInterval=5m")
    assert "STATUS: deployed" in out.stdout and "REVISION: 2" in out.stdout, out.stdout
    args = cluster.get("deployment", FULL, NS)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--audit-interval=5m" in args, args
    after = cluster.get("validatingwebhookconfiguration", FULL)
    assert {h["clientConfig"]["caBundle"] for h in after["webhooks"]} == ca, \
        "helm upgrade kept the certificate (lookup of the existing Secret on a real server)"

    status = json.loads(helm(cluster, tools, "status", REL, "-n", NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 2

    helm(cluster, tools, "uninstall", REL, "-n", NS, "--wait")
    assert labelled(cluster, KINDS, True) == []
    assert labelled(cluster, CLUSTER_KINDS, False) == []
    assert helm(cluster, tools, "status", REL, "-n", NS, check=False).returncode != 0
    # what Helm keeps by design: the CRDs of the chart's crds/ folder, and the namespace it created
    assert cluster.get("crd", "complexitypolicies.guywire.dev") is not None
    assert cluster.get("namespace", NS) is not None
    left = cluster.kubectl("get", "all,secrets,configmaps,roles,rolebindings", "-n", NS, "-o", "name").stdout.split()
    assert set(left) <= {"configmap/kube-root-ca.crt", "serviceaccount/default"}, left
