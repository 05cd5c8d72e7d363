"""The one clock guywire reads.

Every part that needs the time (the NVML reader and its XID watcher, the GPU health tracker, the
node agent, the operator's state and writers, the Kubernetes client, renderers that fall back to
"now") takes a :class:`Clock` and asks it; no other module reads ``datetime.now``, ``time.time``
or ``time.monotonic`` (``tests/unit/test_clock.py`` walks the source tree and fails on any other
read). Tests hand in a :class:`ManualClock` and move it, so no result depends on today's date.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


class Clock:
    """The system's wall clock (timezone-aware UTC) and monotonic clock (seconds)."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = Clock()


class ManualClock(Clock):
    """A clock that moves only when told to: wall time and monotonic time advance together."""

    def __init__(self, now: datetime | str = "2026-01-01T00:00:00Z", monotonic: float = 1000.0) -> None:
        self._now = parse_time(now) if isinstance(now, str) else aware(now)
        self._monotonic = float(monotonic)

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, now: datetime | str) -> None:
        """Move the wall clock to ``now`` (forward or back); the monotonic clock moves forward only."""
        new = parse_time(now) if isinstance(now, str) else aware(now)
        self._monotonic += max(0.0, (new - self._now).total_seconds())
        self._now = new


def aware(value: datetime) -> datetime:
    """``value`` with a time zone: a naive time is taken as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; a naive one is taken as UTC. Raises ValueError."""
    return aware(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def rfc3339(value: datetime) -> str:
    """The form Kubernetes writes in status and Event times: second precision, UTC, ``Z``."""
    return aware(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_and_nanos(value: datetime) -> dict:
    """The form a PolicyReport's ``timestamp`` takes (a protobuf Timestamp): whole seconds since the epoch
    and the nanoseconds past them; a naive time is taken as UTC."""
    return {"seconds": int(aware(value).timestamp() // 1), "nanos": value.microsecond * 1000}
