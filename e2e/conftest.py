"""Opt-in end-to-end suite against a real cluster (kind in CI): install the chart, run the examples, uninstall.

It runs only when KUBECONFIG names a reachable cluster; otherwise every test skips with the reason.
The cluster must be able to run the image named by GUYWIRE_E2E_IMAGE (default guywire:e2e, e.g.
`docker build -t guywire:e2e . && kind load docker-image guywire:e2e`).

    KUBECONFIG=~/.kube/config GUYWIRE_E2E_IMAGE=guywire:e2e python -m pytest e2e -v

With GUYWIRE_E2E_REQUIRED=1 (CI) a missing cluster is an error, not a skip.
The default `pytest` run never collects this folder (pyproject: testpaths = ["tests"]).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "guywire"
EXAMPLES = ROOT / "examples"
NAMESPACE = os.environ.get("GUYWIRE_E2E_NAMESPACE", "guywire")
RELEASE = os.environ.get("GUYWIRE_E2E_RELEASE", "guywire")
IMAGE = os.environ.get("GUYWIRE_E2E_IMAGE", "guywire:e2e")
NO_CLUSTER = "no cluster: set KUBECONFIG to a kind cluster to run e2e"


def _kubectl_binary() -> str | None:
    cached = ROOT / ".cache" / "bin" / "kubectl"
    return os.environ.get("KUBECTL") or shutil.which("kubectl") or (str(cached) if cached.exists() else None)


def _helm_binary() -> str | None:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    spec = importlib.util.spec_from_file_location("fetch_helm", ROOT / "scripts" / "fetch_helm.py")
    fetcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetcher)
    try:
        return str(fetcher.fetch())
    except fetcher.Unavailable:
        on_path = shutil.which("helm")
        return on_path if on_path and (fetcher.helm_version(Path(on_path)) or "").startswith("v4") else None


def _why_no_cluster() -> str | None:
    """None when a cluster is reachable, else the reason every test skips."""
    config = os.environ.get("KUBECONFIG")
    if not config:
        return NO_CLUSTER
    if not all(Path(p).exists() for p in config.split(os.pathsep) if p):
        return f"{NO_CLUSTER} (KUBECONFIG={config} does not exist)"
    kubectl = _kubectl_binary()
    if not kubectl:
        return "kubectl not found: put it on PATH or run scripts/fetch-helm.sh (it fetches kubectl too)"
    try:
        out = subprocess.run([kubectl, "version", "-o", "json", "--request-timeout=5s"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{NO_CLUSTER} (kubectl version: {exc})"
    if out.returncode != 0 or "serverVersion" not in out.stdout:
        return f"{NO_CLUSTER} (the cluster in KUBECONFIG={config} does not answer: {out.stderr.strip()[:200]})"
    return None


_REASON: list[str | None] = []


def pytest_collection_modifyitems(config, items):
    if not _REASON:
        _REASON.append(_why_no_cluster())
    if _REASON[0] and os.environ.get("GUYWIRE_E2E_REQUIRED"):
        raise pytest.UsageError(f"GUYWIRE_E2E_REQUIRED is set but e2e cannot run: {_REASON[0]}")
    if _REASON[0]:
        skip = pytest.mark.skip(reason=_REASON[0])
        for item in items:
            item.add_marker(skip)


@dataclass
class Cluster:
    kubectl_bin: str
    helm_bin: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run([self.kubectl_bin, *args], input=input, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        out = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def exists(self, *args: str) -> bool:
        out = self.kubectl("get", *args, "-o", "name", "--ignore-not-found", check=False)
        return out.returncode == 0 and bool(out.stdout.strip())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 180, interval: float = 2) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as exc:  # a kubectl call that failed this time
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:2000])


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubectl, helm = _kubectl_binary(), _helm_binary()
    if not helm:
        pytest.skip("helm v4 cannot be had: run scripts/fetch-helm.sh or set HELM")
    return Cluster(kubectl_bin=kubectl, helm_bin=helm)
