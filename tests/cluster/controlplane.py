"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (and kwok's fake kubelets), built from source by scripts/build_kube.py.

Everything lives in one temporary directory: a self-signed CA, the serving and client certificates,
the ServiceAccount signing keys, one kubeconfig per component, the logs and etcd's data. Processes
are started in their own session and stopped by PID (TERM, then KILL), also when a test fails.
The API server writes an audit log of every request made by a ServiceAccount, so a test can prove
that guywire never met a 403.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.certs import CertificateAuthority, write_signing_key

ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.96.0.0/16"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Process:
    """One child process with its log file, stopped by PID."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None):
        self.name, self.argv, self.log_path = name, argv, log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        self._log.close()


class ControlPlane:
    def __init__(self, bin_dir: Path, kubectl: str, workdir: Path):
        self.bin, self.kubectl_bin, self.dir = bin_dir, kubectl, workdir
        self.processes: dict[str, Process] = {}
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.audit_log = workdir / "audit.log"
        self.pki = workdir / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(self.pki)
        self.admin_kubeconfig = workdir / "admin.kubeconfig"

    # -- set-up -------------------------------------------------------------------------------------------------
    def write_kubeconfig(self, path: Path, user: str, *, cert: Path | None = None, key: Path | None = None,
                         token: str | None = None) -> Path:
        creds: dict[str, str] = {"token": token} if token else {"client-certificate": str(cert),
                                                                 "client-key": str(key)}
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "real", "cluster": {"server": self.url,
                                                       "certificate-authority": str(self.ca.cert_path)}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": user, "context": {"cluster": "real", "user": user}}],
        }))
        return path

    def client_kubeconfig(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        cert, key = self.ca.issue(stem, user, organizations=groups)
        return self.write_kubeconfig(self.dir / f"{stem}.kubeconfig", user, cert=cert, key=key)

    def start(self, *, kwok: bool = True, controllers: bool = True) -> None:
        """etcd and kube-apiserver; with ``controllers`` also the controller-manager, the scheduler and kwok."""
        serving = self.ca.issue("apiserver", "kube-apiserver", hosts=(
            "127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"))
        self.sa_pub, self.sa_key = write_signing_key(self.pki)
        self.client_kubeconfig("admin", "kubernetes-admin", ("system:masters",)).rename(self.admin_kubeconfig)
        self.kcm_kubeconfig = self.client_kubeconfig("kcm", "system:kube-controller-manager")
        self.scheduler_kubeconfig = self.client_kubeconfig("scheduler", "system:kube-scheduler")
        self.kwok_kubeconfig = self.client_kubeconfig("kwok", "kwok", ("system:masters",))
        (self.dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self.apiserver_argv = [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={serving[0]}", f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={self.ca.cert_path}", "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={self.sa_pub}", f"--service-account-signing-key-file={self.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking", "--endpoint-reconciler-type=none",
        ]
        try:
            self._start_etcd()
            self.start_apiserver()
            if not controllers:
                return
            with_kwok = kwok and (self.bin / "kwok").exists()
            # without kwok no kubelet heartbeats: the node lifecycle controller would taint every Node
            off = ["node-ipam-controller", "persistentvolume-binder-controller",
                   "persistentvolume-attach-detach-controller", *([] if with_kwok else ["node-lifecycle-controller"])]
            self._spawn("kube-controller-manager", [
                str(self.bin / "kube-controller-manager"), f"--kubeconfig={self.kcm_kubeconfig}",
                "--secure-port=0", "--leader-elect=false",
                f"--service-account-private-key-file={self.sa_key}", f"--root-ca-file={self.ca.cert_path}",
                "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*," + ",".join(f"-{c}" for c in off),
            ])
            self._spawn("kube-scheduler", [
                str(self.bin / "kube-scheduler"), f"--kubeconfig={self.scheduler_kubeconfig}",
                "--secure-port=0", "--leader-elect=false",
            ])
            if with_kwok:
                self._spawn("kwok", [
                    str(self.bin / "kwok"), f"--kubeconfig={self.kwok_kubeconfig}",
                    f"--config={(self.bin / 'kwok').resolve().parent.parent / 'kwok-stages.yaml'}",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    f"--server-address=127.0.0.1:{free_port()}", "--node-ip=127.0.0.1",
                ])
            wait_until(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                            check=False).returncode == 0, 60,
                       "the controller-manager to create the default ServiceAccount")
        except BaseException:
            self.stop()
            raise

    @property
    def has_kwok(self) -> bool:
        return "kwok" in self.processes

    def _spawn(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, self.dir / f"{name}.log")
        self.processes[name] = proc
        return proc

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            str(self.bin / "etcd"), "--name=default", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}", "--unsafe-no-fsync", "--log-level=warn",
        ])

    def start_apiserver(self) -> None:
        proc = self._spawn("kube-apiserver", self.apiserver_argv)
        wait_until(lambda: self._ready(proc), 60, "kube-apiserver /readyz")

    def stop_apiserver(self) -> None:
        self.processes.pop("kube-apiserver").stop()

    def _ready(self, proc: Process) -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        for p in self.processes.values():
            if p.name == "etcd" and not p.alive():
                raise AssertionError(f"etcd exited ({p.popen.returncode}):\n{p.tail()}")
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop()

    # -- use ----------------------------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([self.kubectl_bin, f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
                             input=input, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return out

    def apply(self, obj: dict | list[dict], *args: str, check: bool = True) -> subprocess.CompletedProcess:
        docs = obj if isinstance(obj, list) else [obj]
        return self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all(docs), check=check)

    def get(self, resource: str, name: str | None = None, namespace: str | None = None) -> dict | None:
        args = ["get", resource, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args, check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr or "not found" in out.stderr:
                return None
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr}")
        return json.loads(out.stdout)

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path, pod: str | None = None) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount, with a TokenRequest token; with ``pod``, one
        bound to that Pod (the API server puts the pod's node in the token's user extra, as for a mounted token)."""
        bound = ["--bound-object-kind=Pod", f"--bound-object-name={pod}"] if pod else []
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=2h",
                             *bound).stdout.strip()
        return self.write_kubeconfig(path, f"{namespace}-{service_account}", token=token)

    def audit_events(self) -> Iterator[dict]:
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    def forbidden(self, username: str) -> list[str]:
        """Every request of ``username`` the API server refused with 403, as VERB URI."""
        return [f"{e['verb']} {e['requestURI']}" for e in self.audit_events()
                if e.get("user", {}).get("username") == username
                and e.get("responseStatus", {}).get("code") == 403]

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "etcdctl"), f"--endpoints=http://127.0.0.1:{self.etcd_port}", *args],
                              capture_output=True, text=True, timeout=60, check=True)
