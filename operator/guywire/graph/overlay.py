"""Copy-on-write views: a dict, or an object made of dicts, that takes changes without passing them on.

``Overlay(base)`` reads through to ``base`` and keeps its own writes and deletions. A mutable value
(a set, list or dict) it hands out from the base is copied into the overlay first, so that code which
changes a value in place (``index.setdefault(k, set()).add(x)``, ``names.remove(x)``) changes the
copy; the base is never written, whatever is done to the overlay. The cost is the part that is
touched: nothing is copied up front.

``overlaid(obj)`` makes such a view of an object whose state is dicts (the graph, the inventory, the
mesh index): a new instance of the same class whose dict attributes are overlays of ``obj``'s, so
the class's own methods run on it unchanged. Admission judges a request on one (Graph.preview).
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Values copied before they are handed out (their ``copy`` is shallow: the items are shared, as in the base).
COPIED = (set, list, dict)
#: Attribute values an overlaid object shares with its base: they cannot be changed in place.
SHARED = (type(None), bool, int, float, str, bytes, tuple, frozenset)
_GONE = object()


class Overlay(MutableMapping[K, V]):
    __slots__ = ("base", "local")

    def __init__(self, base: MutableMapping[K, V]):
        self.base = base
        self.local: dict[K, Any] = {}  # key -> own value, or _GONE where a base key was deleted

    def __getitem__(self, key: K) -> V:
        local = self.local.get(key, self)
        if local is not self:
            if local is _GONE:
                raise KeyError(key)
            return local
        value = self.base[key]
        if type(value) in COPIED:
            value = self.local[key] = value.copy()  # type: ignore[attr-defined]
        return value

    def get(self, key: K, default: Any = None) -> Any:  # the hot path: no exception for a miss
        local = self.local.get(key, self)
        if local is not self:
            return default if local is _GONE else local
        value = self.base.get(key, _GONE)
        if value is _GONE:
            return default
        if type(value) in COPIED:
            value = self.local[key] = value.copy()  # type: ignore[attr-defined]
        return value

    def __contains__(self, key: object) -> bool:
        local = self.local.get(key, self)  # type: ignore[call-overload]
        if local is not self:
            return local is not _GONE
        return key in self.base

    def __setitem__(self, key: K, value: V) -> None:
        self.local[key] = value

    def __delitem__(self, key: K) -> None:
        if key not in self:
            raise KeyError(key)
        if key in self.base:
            self.local[key] = _GONE
        else:
            del self.local[key]

    def __iter__(self) -> Iterator[K]:
        """The base's keys in its order (those not deleted), then the overlay's new keys in theirs."""
        local = self.local
        for key in self.base:
            if local.get(key) is not _GONE:
                yield key
        for key in local:
            if key not in self.base and local[key] is not _GONE:
                yield key

    def __len__(self) -> int:
        base = self.base
        gone = sum(1 for k, v in self.local.items() if v is _GONE)
        new = sum(1 for k, v in self.local.items() if v is not _GONE and k not in base)
        return len(base) - gone + new

    def __repr__(self) -> str:
        return f"Overlay({len(self.local)} changed over {len(self.base)})"


def _attributes(obj: Any) -> dict[str, Any]:
    out = {}
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out[name] = getattr(obj, name)
    out.update(getattr(obj, "__dict__", {}))
    return out


def overlaid(obj: Any, **given: Any) -> Any:
    """A new ``type(obj)``, made without ``__init__``, whose dicts are overlays of ``obj``'s; ``given``
    sets attributes that need their own view (an object of dicts inside: pass ``overlaid(...)`` of it).
    Any other attribute that could change in place is refused, so a new one cannot slip past unseen."""
    view = object.__new__(type(obj))
    for name, value in _attributes(obj).items():
        if name in given:
            value = given[name]
        elif isinstance(value, (dict, Overlay)):
            value = Overlay(value)
        elif not isinstance(value, SHARED):
            raise TypeError(f"{type(obj).__name__}.{name} is a {type(value).__name__}: overlaid() cannot tell "
                            "how to keep it apart; pass its view.")
        setattr(view, name, value)
    return view


__all__ = ["Overlay", "overlaid"]
