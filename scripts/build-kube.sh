#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, etcd, etcdctl (and kwok) from
# source into .cache/kube and print the bin folder. Idempotent; see scripts/build_kube.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/build_kube.py" "$@"
