"""Fixtures for the real-cluster tests: one control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok) for the whole session, the chart installed by real helm, and guywire run as a process
on the host with the chart's ServiceAccount token and arguments.

The binaries come from ``scripts/build-kube.sh`` (``.cache/kube/bin``, or ``$GUYWIRE_KUBE_BIN``);
without them every test here skips with the reason the build gave.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.examples import example_objects
from tests.scripts import load_script
from tests.cluster.controlplane import ROOT, ControlPlane, Process, free_port, wait_until

HERE = Path(__file__).resolve().parent
CHART = ROOT / "helm" / "guywire"
NAMESPACE = "guywire"
RELEASE = "guywire"
NEEDED = ("etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _fetcher():
    return load_script("fetch_helm")


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    cache = ROOT / ".cache" / "kube"
    bin_dir = Path(os.environ.get("GUYWIRE_KUBE_BIN", cache / "bin"))
    missing = [b for b in NEEDED if not (bin_dir / b).exists()]
    if missing:
        why = cache / "unavailable.txt"
        reason = why.read_text().strip() if why.exists() else "scripts/build-kube.sh was not run"
        pytest.skip(f"no real control plane: {', '.join(missing)} missing in {bin_dir} ({reason}). "
                    "Run scripts/build-kube.sh (needs Go and the Go module proxy).")
    return bin_dir


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """Real kubectl and helm v4: $KUBECTL / $HELM, else what scripts/fetch_helm.py fetches."""
    fetcher = _fetcher()
    found = {"helm": os.environ.get("HELM"), "kubectl": os.environ.get("KUBECTL")}
    reason = ""
    if not all(found.values()):
        try:
            helm = fetcher.fetch()
            found["helm"] = found["helm"] or str(helm)
            kubectl = Path(helm).with_name("kubectl")
            if kubectl.exists():
                found["kubectl"] = found["kubectl"] or str(kubectl)
        except fetcher.Unavailable as exc:
            reason = str(exc)
    found["kubectl"] = found["kubectl"] or shutil.which("kubectl")
    missing = [k for k, v in found.items() if not v]
    if missing:
        pytest.skip(f"{' and '.join(missing)} cannot be had: {reason} (run scripts/fetch-helm.sh).")
    return found


@pytest.fixture(scope="session")
def cluster(kube_bin, tools, tmp_path_factory) -> Iterator[ControlPlane]:
    plane = ControlPlane(kube_bin, tools["kubectl"], tmp_path_factory.mktemp("control-plane"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def helm(cluster: ControlPlane, tools: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    home = cluster.dir / "helm-home"
    env = dict(os.environ, KUBECONFIG=str(cluster.admin_kubeconfig), HELM_CACHE_HOME=str(home / "cache"),
               HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))
    out = subprocess.run([tools["helm"], *args], capture_output=True, text=True, timeout=180, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out


class Release:
    """The chart installed as release ``guywire`` in namespace ``guywire``."""

    def __init__(self, cluster: ControlPlane, tools: dict):
        self.cluster, self.tools = cluster, tools
        self.namespace, self.name = NAMESPACE, RELEASE
        self.operator_user = f"system:serviceaccount:{NAMESPACE}:guywire"
        self.agent_user = f"system:serviceaccount:{NAMESPACE}:guywire-node-agent"

    def install(self, *extra: str) -> None:
        """``helm upgrade --install`` without the chart's webhook configuration: that one would send the API
        server to the in-cluster Service, which nothing serves here. The tests register the chart's rendered
        configuration with the URL patched in (``Operator.register_webhook``); left in the release, helm v4's
        server-side apply would fight over ``clientConfig`` at every upgrade. The agent here runs with a token
        bound to no pod, so no node: the chart's own-node admission policy (nodeAgent.restrictToOwnNode)
        would refuse its writes, and is left out (test_node_agent_policy turns it on, with a pod-bound token)."""
        crds = ("complexitypolicies.guywire.dev", "clustercomplexitypolicies.guywire.dev")
        absent = [c for c in crds if self.cluster.get("crd", c) is None]
        helm(self.cluster, self.tools, "upgrade", "--install", self.name, str(CHART), "--namespace",
             self.namespace, "--create-namespace", "--wait=hookOnly", "--set", "webhook.enabled=false",
             "--set", "nodeAgent.restrictToOwnNode=false", *extra)
        for crd in absent:  # a first install: Helm itself installs the chart's crds/, and the API server takes them
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
        self.operator_kubeconfig = self.cluster.token_kubeconfig(self.namespace, "guywire",
                                                                 self.cluster.dir / "operator.kubeconfig")
        self.agent_kubeconfig = self.cluster.token_kubeconfig(self.namespace, "guywire-node-agent",
                                                              self.cluster.dir / "node-agent.kubeconfig")

    def manifest(self) -> list[dict]:
        text = helm(self.cluster, self.tools, "get", "manifest", self.name, "-n", self.namespace).stdout
        return [d for d in yaml.safe_load_all(text) if d]

    def rendered_webhook(self) -> dict:
        text = helm(self.cluster, self.tools, "template", self.name, str(CHART), "--namespace", self.namespace).stdout
        return next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ValidatingWebhookConfiguration")

    def container_args(self, kind: str) -> list[str]:
        obj = next(o for o in self.manifest() if o["kind"] == kind)
        return obj["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture(scope="session")
def release(cluster, tools) -> Release:
    rel = Release(cluster, tools)
    rel.install()
    return rel


class Operator:
    """``guywire run`` as a process on the host, with the chart's arguments and ServiceAccount token; its
    webhook serves on 127.0.0.1 with a certificate of the control plane's CA."""

    def __init__(self, cluster: ControlPlane, release: Release, *extra: str):
        self.cluster, self.release, self.extra = cluster, release, list(extra)
        self.port, self.metrics_port = free_port(), free_port()
        self.cert, self.key = cluster.ca.issue("webhook", "guywire-webhook", hosts=("127.0.0.1",))
        self.process: Process | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        args = []
        for a in self.release.container_args("Deployment"):
            flag = a.split("=", 1)[0]
            if flag in ("--metrics-port", "--health-port", "--webhook-port", "--webhook-cert", "--webhook-key"):
                continue
            args.append(a)
        return [sys.executable, "-m", "guywire.cli", *args, f"--kubeconfig={self.release.operator_kubeconfig}",
                f"--metrics-port={self.metrics_port}", "--health-port=0", "--webhook-host=127.0.0.1", f"--webhook-port={self.port}",
                f"--webhook-cert={self.cert}", f"--webhook-key={self.key}", *self.extra]

    def start(self) -> None:
        assert self.process is None or not self.process.alive()
        self.starts += 1
        env = dict(os.environ, POD_NAMESPACE=self.release.namespace, SERVICE_ACCOUNT_NAME="guywire",
                   POD_NAME="guywire-host")
        self.process = Process("guywire", self.argv(), self.cluster.dir / f"guywire-{self.starts}.log", env=env)
        wait_until(self.webhook_up, 60, "guywire's webhook port")

    def webhook_up(self) -> bool:
        import socket
        if self.process is None or not self.process.alive():
            raise AssertionError(f"guywire exited:\n{self.process.tail(40) if self.process else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def metric(self, name: str) -> float:
        """The sum of one metric's samples on the operator's /metrics."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines
                   if ln.startswith(name) and ln[len(name):len(name) + 1] in (" ", "{"))

    def evaluated_all(self) -> int:
        """How many times the current process finished indexing and judging the whole cluster."""
        return self.process.log_path.read_text(errors="replace").count("evaluated all.") if self.process else 0

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.cluster.dir.glob("guywire-*.log")))

    def register_webhook(self) -> None:
        """The chart's ValidatingWebhookConfiguration, pointed at this process: URL and caBundle patched in."""
        vwc = self.release.rendered_webhook()
        ca = base64.b64encode(self.cluster.ca.cert_path.read_bytes()).decode()
        for hook in vwc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{self.port}{path}", "caBundle": ca}
        self.cluster.apply(vwc)


@pytest.fixture(scope="session")
def stack(cluster, release) -> ControlPlane:
    """guywire's CRDs, the PolicyReport CRDs, and examples/ (namespaces, workloads, Services, policies)
    applied with kubectl before the operator starts. ServiceMonitors are left out: no Prometheus
    Operator CRDs here."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds"), "-f", str(HERE / "crds"))
    for crd in ("complexitypolicies.guywire.dev", "clustercomplexitypolicies.guywire.dev",
                "policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    objects = [o for o in example_objects() if o["kind"] != "ServiceMonitor"]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    cluster.apply(namespaces)
    cluster.apply([o for o in objects if o["kind"] != "Namespace"])
    return cluster


@pytest.fixture(scope="session")
def operator(stack, release) -> Iterator[Operator]:
    op = Operator(stack, release)
    try:
        op.start()  # a start that fails (its webhook never up) leaves a process to stop too
        op.register_webhook()
        yield op
    finally:
        op.stop()
