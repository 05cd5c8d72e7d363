#!/usr/bin/env bash
# Install Checkov into its own virtual environment for bench/bench_checkov.py.
#
# Checkov is a bench-only dependency with a large dependency tree (boto3, bc-*,
# networkx, pydantic pins...) that can conflict with kopf/pydantic in the project's
# venv, so it lives apart: /work/main/.cache/checkov-venv by default (git-ignored).
# Usage: bash bench/setup_checkov.sh [VENV_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.cache/checkov-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# A machine-wide pip constraints file (PIP_CONSTRAINT / pip.conf) pins packages for the
# project's own venv; Checkov's pins are its own, so do not apply it here.
PIP_CONSTRAINT= "$venv/bin/pip" install --quiet --upgrade pip
PIP_CONSTRAINT= "$venv/bin/pip" install --quiet "checkov${CHECKOV_VERSION:+==$CHECKOV_VERSION}"
"$venv/bin/checkov" --version
echo "checkov installed in $venv (bench/bench_checkov.py finds it there, or pass --checkov PATH)"
