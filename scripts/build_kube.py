#!/usr/bin/env python3
"""Build a real Kubernetes control plane from source into .cache/kube and print the bin folder.

No Kubernetes binary can be downloaded here; Go and the Go module proxy can be had. So:

- ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler`` from ``k8s.io/kubernetes``.
  Its go.mod requires every staging module (``k8s.io/api``, ``k8s.io/client-go``, ...) at v0.0.0
  and replaces it with ``./staging/src/...``; a consuming module pins each to the matching v0.X.Y
  with ``replace``. The three commands build in ONE ``go build`` so shared packages compile once.
- ``etcd`` (the main package is the root of ``go.etcd.io/etcd/server/v3``) and ``etcdctl``.
- ``kwok`` (``sigs.k8s.io/kwok/cmd/kwok``): fake kubelets. Optional: a failure is reported and
  the tests that need it create Nodes and bind Pods themselves.

Each part lands in ``.cache/kube/<part>-<version>/bin``; a part whose binaries are there is not
rebuilt, so a second run takes seconds. Exit 0 and the folder holding all binaries (symlinks in
``.cache/kube/bin``) on stdout; exit 1 and the reason on stderr (and in
``.cache/kube/unavailable.txt``, which the tests' skip message quotes) when a required part cannot
be built (no Go, no proxy, a failed build).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("GUYWIRE_KUBE_CACHE", ROOT / ".cache" / "kube"))
KUBE_VERSION = os.environ.get("GUYWIRE_KUBE_VERSION", "v1.37.2")
ETCD_VERSION = os.environ.get("GUYWIRE_ETCD_VERSION", "v3.6.17")
KWOK_VERSION = os.environ.get("GUYWIRE_KWOK_VERSION", "v0.8.0")
GO_FLAGS = ["-trimpath", "-ldflags=-s -w"]


def version_ldflags(version: str) -> list[str]:
    """Stamp the release into the binaries, as Kubernetes' own build does: without it the server
    reports v0.0.0-master and Helm refuses a chart whose kubeVersion it cannot satisfy."""
    major, minor = version.removeprefix("v").split(".")[:2]
    x = "-X k8s.io/component-base/version."
    return ["-trimpath", f"-ldflags=-s -w {x}gitVersion={version} {x}gitMajor={major} {x}gitMinor={minor} "
            f"{x}gitTreeState=clean"]


class Unavailable(Exception):
    """A part cannot be built here; the message says why."""


def find_go() -> str:
    go = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
                                     if os.access(p, os.X_OK)), None)
    if go is None:
        raise Unavailable("no Go toolchain (go not on PATH nor in /usr/local/go/bin).")
    return go


def run(go: str, args: list[str], cwd: Path, log) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOTOOLCHAIN="local")
    log.write(f"$ go {' '.join(args)}  (in {cwd})\n")
    log.flush()
    out = subprocess.run([go, *args], cwd=cwd, env=env, capture_output=True, text=True)
    log.write(out.stdout + out.stderr)
    log.flush()
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:] or ["no output"]
        raise Unavailable(f"go {args[0]} failed in {cwd}: " + " | ".join(tail))
    return out.stdout


def staging_replaces(go: str, work: Path, log) -> list[str]:
    """``k8s.io/X => k8s.io/X v0.M.P`` for every staging module of k8s.io/kubernetes."""
    info = json.loads(run(go, ["mod", "download", "-json", f"k8s.io/kubernetes@{KUBE_VERSION}"], work, log))
    gomod = Path(info["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", gomod, re.M)))
    if not staging:
        raise Unavailable(f"k8s.io/kubernetes@{KUBE_VERSION} go.mod lists no staging replaces.")
    v = "v0." + KUBE_VERSION.removeprefix("v1.")
    return [f"\t{m} => {m} {v}" for m in staging]


def module(work: Path, name: str, replaces: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    text = f"module guywire.local/{name}\n\ngo 1.25\n"
    if replaces:
        text += "\nreplace (\n" + "\n".join(replaces) + "\n)\n"
    (work / "go.mod").write_text(text)
    (work / "go.sum").unlink(missing_ok=True)


def build(go: str, part: str, version: str, requires: list[str], pkgs: list[str], bins: list[str],
          log, replaces=None, flags=GO_FLAGS) -> Path:
    out = CACHE / f"{part}-{version}" / "bin"
    if all((out / b).is_file() for b in bins):
        return out
    work = CACHE / "src" / f"{part}-{version}"
    module(work, part, [])
    if replaces:
        module(work, part, replaces(go, work, log))
    run(go, ["get", *requires], work, log)
    tmp = out.with_name("bin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.monotonic()
    run(go, ["build", *flags, "-o", str(tmp) + "/", *pkgs], work, log)
    log.write(f"built {part} {version} in {time.monotonic() - start:.0f}s\n")
    missing = [b for b in bins if not (tmp / b).is_file()]
    if missing:
        raise Unavailable(f"go build of {part} produced no {', '.join(missing)}.")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


KWOK_STAGES = ["node/fast/node-initialize.yaml", "node/heartbeat/node-heartbeat.yaml", "pod/fast/pod-ready.yaml",
               "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"]


def kwok_stages(go: str, dest: Path, log) -> None:
    """kwok simulates nothing without Stages: copy its own 'fast' node and pod stages to kwok-stages.yaml."""
    out = dest / "kwok-stages.yaml"
    if out.is_file():
        return
    info = json.loads(run(go, ["mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"], CACHE, log))
    stage = Path(info["Dir"]) / "kustomize" / "stage"
    out.write_text("\n---\n".join((stage / s).read_text() for s in KWOK_STAGES))


def link(bindir: Path, src: Path) -> None:
    for b in src.iterdir():
        dest = bindir / b.name
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(os.path.relpath(b, bindir))


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    bindir = CACHE / "bin"
    bindir.mkdir(exist_ok=True)
    start = time.monotonic()
    with open(CACHE / "build.log", "a") as log:
        log.write(f"--- build {KUBE_VERSION} etcd {ETCD_VERSION} kwok {KWOK_VERSION} load {os.getloadavg()}\n")
        try:
            go = find_go()
            etcd = build(go, "etcd", ETCD_VERSION,
                         [f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}", f"go.etcd.io/etcd/etcdctl/v3@{ETCD_VERSION}"],
                         ["go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3"], ["server", "etcdctl"], log)
            if not (etcd / "etcd").exists():
                (etcd / "etcd").symlink_to("server")
            link(bindir, etcd)
            kube = build(go, "kubernetes", KUBE_VERSION, [f"k8s.io/kubernetes@{KUBE_VERSION}"],
                         [f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kube-controller-manager",
                                                                "kube-scheduler")],
                         ["kube-apiserver", "kube-controller-manager", "kube-scheduler"], log,
                         replaces=staging_replaces, flags=version_ldflags(KUBE_VERSION))
            link(bindir, kube)
        except Unavailable as exc:
            reason = f"{exc} (log: {CACHE / 'build.log'})"
            (CACHE / "unavailable.txt").write_text(reason + "\n")
            print(f"build-kube: {reason}", file=sys.stderr)
            return 1
        try:
            kwok = build(go, "kwok", KWOK_VERSION, [f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
                         ["sigs.k8s.io/kwok/cmd/kwok"], ["kwok"], log)
            kwok_stages(go, kwok.parent, log)
            link(bindir, kwok)
        except Unavailable as exc:
            print(f"build-kube: kwok unavailable, continuing without it: {exc}", file=sys.stderr)
        (CACHE / "unavailable.txt").unlink(missing_ok=True)
        log.write(f"done in {time.monotonic() - start:.0f}s load {os.getloadavg()}\n")
    print(bindir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
