"""When the whole cluster has been listed, so the graph is built once and nothing is judged on half of it.

kopf lists every watched kind at start-up and hands each object to ``object_event`` with event type
``None``; it says nothing when a kind's listing ends. guywire used to get that moment from kopf's
indexes: kopf runs no handler until every index is populated. But kopf holds every object's first
event, and a worker for it, until then: about 12 KB per object at the gate besides the object
itself, and a ``notify_all`` per object that woke every waiting worker, O(n^2): 10,000 workloads
were not indexed after 13 minutes, and held 550 MB (bench/bench_operator.py).

So the operator counts, before kopf starts watching, how many objects of each kind the API server
has (a ``limit=1`` list: one item and ``remainingItemCount``), and this gate opens when every
counted kind has been listed that many times. Objects created since the count only make a kind
complete sooner (they come in the same listing); objects deleted since, or kinds that could not be
counted (watching selected namespaces, an error), are covered by quiet periods: the gate opens once
nothing has been listed for ``settle`` seconds after something was, or ``empty_wait`` seconds after
the start when nothing was, or ``give_up`` seconds of quiet in any case (a kind counted but never
listed). Until the gate opens, objects are only added to the inventory.
"""
from __future__ import annotations

from collections import Counter


class ListingGate:
    def __init__(self, now: float, *, settle: float = 2.0, empty_wait: float = 10.0, give_up: float = 60.0):
        self.started = now
        self.settle, self.empty_wait, self.give_up = settle, empty_wait, give_up
        self.expected: dict[str, int] | None = None  # kind -> objects counted; None: not counted
        self.seen: Counter[str] = Counter()
        self.last: float | None = None  # when the last listed object came

    def counted(self, counts: dict[str, int] | None) -> None:
        """The counts per kind, or None when some kind could not be counted."""
        self.expected = dict(counts) if counts is not None else None

    def listed(self, kind: str, now: float) -> None:
        self.seen[kind] += 1
        self.last = now

    def missing(self) -> dict[str, int]:
        """Counted kinds not yet listed in full: kind -> objects still expected."""
        if self.expected is None:
            return {}
        return {k: n - self.seen[k] for k, n in self.expected.items() if self.seen[k] < n}

    def ready(self, now: float) -> str | None:
        """None while the listing goes on; else why the gate opens (for the log)."""
        quiet = now - (self.last if self.last is not None else self.started)
        if self.expected is not None:
            missing = self.missing()
            if not missing:
                return f"every kind listed ({sum(self.seen.values())} objects)"
            if quiet >= self.settle and all(self.seen[k] for k in missing):
                return (f"listing quiet for {quiet:.1f} s; fewer objects than counted of "
                        + ", ".join(f"{k} ({n} short: deleted since counted)" for k, n in sorted(missing.items())))
            if quiet >= self.give_up:
                return (f"nothing listed for {quiet:.0f} s; still missing "
                        + ", ".join(f"{n} {k}" for k, n in sorted(missing.items())))
            return None
        if self.last is None:
            return f"nothing listed after {quiet:.0f} s" if quiet >= self.empty_wait else None
        return f"listing quiet for {quiet:.1f} s ({sum(self.seen.values())} objects)" if quiet >= self.settle else None
