"""Sharing the strings of long-lived views.

A view is made from an object as the API returns it, and JSON parsing makes a new string for every
value and for every key of every object: a cluster's thousand Deployments hold a thousand copies of
``app.kubernetes.io/name``, ``memory``, ``TCP``, their namespace... In bench/bench_operator.py's
synthetic cluster that was 3.1 KB of strings per workload, 0.2 KB once shared (``sys.intern``:
interned strings are freed when nothing uses them any more, so deleted objects leave nothing behind).
The operator keeps a view per object for as long as it runs, so it compacts each one it keeps;
``guywire check`` does not need to.
"""
from __future__ import annotations

import dataclasses
from sys import intern
from typing import Any

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))
    return names


def compact(value: Any) -> Any:
    """``value`` with every string in it interned: dicts, lists and tuples rebuilt, dataclasses (views,
    frozen or not) changed in place. Anything else is returned as it is."""
    cls = type(value)
    if cls is str:
        return intern(value)
    if cls is dict:
        return {intern(k) if type(k) is str else k: compact(v) for k, v in value.items()}
    if cls is list:
        return [compact(v) for v in value]
    if cls is tuple:
        return tuple(compact(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for name in _fields(cls):
            old = getattr(value, name)
            new = compact(old)
            if new is not old:
                object.__setattr__(value, name, new)  # frozen dataclasses too: nothing else holds them yet
        return value
    return value
