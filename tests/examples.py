"""The Kubernetes objects under examples/ (the NVML scenarios there are not objects and are left out)."""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@lru_cache(maxsize=1)
def _objects() -> tuple[dict, ...]:
    out = []
    for f in sorted(EXAMPLES.rglob("*.yaml")):
        out += [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict) and "kind" in d]
    return tuple(out)


def example_objects() -> list[dict]:
    """Fresh copies, so a test may change them."""
    return copy.deepcopy(list(_objects()))


def example(kind: str, name: str) -> dict:
    for d in _objects():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return copy.deepcopy(d)
    raise LookupError(f"{kind} {name} is not in examples/")
