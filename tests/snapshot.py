"""A deep, plain copy of everything an object holds, so that two moments of an index compare with ``==``.

``deep_state(x)`` walks dicts (in their order: insertion order is state too, it decides the order
of later evaluations), lists, tuples, sets (sorted), dataclasses (every field, the memo fields
included), pydantic models, Prometheus registries and metrics (their samples), and any other object through its
``__slots__`` and ``__dict__``, down to plain values. Nothing is left out silently: a value it cannot read raises.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import types
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

PLAIN = (type(None), bool, int, float, complex, str, bytes, datetime.datetime, datetime.date, datetime.time,
         datetime.timedelta, datetime.timezone)
CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, staticmethod, classmethod)


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    names: list[str] = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
    out = [(n, getattr(obj, n)) for n in names if hasattr(obj, n)]
    out += sorted(getattr(obj, "__dict__", {}).items())
    return out


def deep_state(obj: Any) -> Any:
    return _walk(obj, set())


def _walk(obj: Any, path: set[int]) -> Any:
    if isinstance(obj, enum.Enum):
        return ("enum", type(obj).__name__, obj.value)
    if isinstance(obj, PLAIN):
        return obj
    if isinstance(obj, CODE):
        return ("code", getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj)))
    if isinstance(obj, re.Pattern):
        return ("pattern", obj.pattern, obj.flags)
    if isinstance(obj, (CollectorRegistry, MetricWrapperBase)):  # what they count, not their locks
        return ("metrics", type(obj).__name__, sorted((s.name, sorted(s.labels.items()), s.value)
                                                      for m in obj.collect() for s in m.samples))
    if id(obj) in path:  # a reference back up the walk
        return ("cycle", type(obj).__name__)
    path.add(id(obj))
    try:
        if isinstance(obj, Mapping):
            return ("dict", type(obj).__name__, [(_walk(k, path), _walk(v, path)) for k, v in obj.items()])
        if isinstance(obj, (set, frozenset)):
            return ("set", sorted((_walk(x, path) for x in obj), key=repr))
        if isinstance(obj, (list, tuple)):
            return (type(obj).__name__, [_walk(x, path) for x in obj])
        if isinstance(obj, BaseModel):
            return ("model", type(obj).__name__, [(n, _walk(getattr(obj, n), path)) for n in type(obj).model_fields])
        if dataclasses.is_dataclass(obj):
            return ("dataclass", type(obj).__name__,
                    [(f.name, _walk(getattr(obj, f.name), path)) for f in dataclasses.fields(obj)])
        attrs = _attributes(obj)
        if not attrs and not hasattr(obj, "__dict__"):
            raise TypeError(f"deep_state cannot read a {type(obj).__name__}: {obj!r}")
        return ("object", type(obj).__name__, [(n, _walk(v, path)) for n, v in attrs])
    finally:
        path.discard(id(obj))


def differences(before: Any, after: Any, where: str = "", limit: int = 10) -> list[str]:
    """Where two deep states differ, as readable paths (the first ``limit``), for assertion messages."""
    out: list[str] = []
    _diff(before, after, where or "state", out, limit)
    return out


def _diff(a: Any, b: Any, where: str, out: list[str], limit: int) -> None:
    if len(out) >= limit or a == b:
        return
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] and a and a[0] in ("dict", "object",
                                                                                              "dataclass", "model"):
        ka, kb = dict(a[-1]) if a[0] != "dict" else None, dict(b[-1]) if b[0] != "dict" else None
        if a[0] == "dict":
            da, db = {repr(k): v for k, v in a[-1]}, {repr(k): v for k, v in b[-1]}
            for k in da.keys() - db.keys():
                out.append(f"{where}[{k}] removed")
            for k in db.keys() - da.keys():
                out.append(f"{where}[{k}] added")
            for k in da.keys() & db.keys():
                _diff(da[k], db[k], f"{where}[{k}]", out, limit)
            if len(out) < limit and da == db and list(da) != list(db):
                out.append(f"{where}: same items in another order")
            return
        for n in ka:
            _diff(ka[n], kb.get(n), f"{where}.{n}", out, limit)
        return
    out.append(f"{where}: {_short(a)} -> {_short(b)}")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 200 else text[:197] + "..."
