#!/usr/bin/env bash
# Download the real helm v4 (and kubectl) into .cache/bin and print helm's path.
# Idempotent; see scripts/fetch_helm.py for where the binaries come from.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="${PYTHON:-python3}"; fi
exec "$py" "$here/fetch_helm.py" "$@"
