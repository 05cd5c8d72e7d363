"""Durations as people write them in policies and annotations: ``2s``, ``500ms``, ``5m``, ``1m30s``."""
from __future__ import annotations

import math
import re
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(text: Any) -> float:
    """Return seconds for ``text``; raise ValueError with a sentence naming the bad value."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 2s, 500ms or 5m, got {text!r}.")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a duration cannot be negative, got {text!r}.")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 2s, 500ms or 5m, got {text!r}.")
    value = text.strip()
    if not _WHOLE.match(value):
        raise ValueError(f"{text!r} is not a duration: use a number with ms, s, m or h, such as 2s, 500ms or 5m.")
    return sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(value))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds``: 0.5 -> 500ms, 90 -> 90s, 300 -> 5m."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms and abs(seconds * 1000 - ms) < 1e-6:  # a whole number of milliseconds
        if ms % 3_600_000 == 0:
            return f"{ms // 3_600_000}h"
        if ms % 60_000 == 0:
            return f"{ms // 60_000}m"
        if ms % 1000 == 0:
            return f"{ms // 1000}s"
        if ms < 1000:
            return f"{ms}ms"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"  # not {:g}: 1234.567 must not become 1234.57s



# ----- figures a finding measures ---------------------------------------------------------------
#: The units a finding's ``observed`` and ``limit`` are in (plural -> singular). Durations are in seconds.
UNITS: dict[str, str] = {
    "dependencies": "dependency", "hops": "hop", "attempts": "attempt", "calls": "call", "points": "point",
    "workloads": "workload", "seconds": "second",
}


# The most calls or tries one request is counted to become. Retries multiply along a path (3 tries on each of
# 700 hops is a number of 334 digits, beyond a float), so counts saturate here and say so: any figure this
# large already means the path must change, and every output stays a finite number.
CALLS_CAP = 10 ** 12


def saturate(x: float) -> float:
    """``x``, or :data:`CALLS_CAP` when it is larger or not a finite number."""
    if isinstance(x, int):
        return x if x < CALLS_CAP else CALLS_CAP
    return x if math.isfinite(x) and x < CALLS_CAP else CALLS_CAP


def render_figure(value: float, unit: str) -> str:
    """How a figure appears in a message: ``4``, ``27``, ``2s``/``500ms`` for seconds; a saturated count as
    ``at least 1000000000000``."""
    if unit == "seconds":
        return format_duration(value)
    if unit in ("calls", "attempts") and value >= CALLS_CAP:
        return f"at least {CALLS_CAP}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def figure_with_unit(value: float, unit: str) -> str:
    """A figure with its unit, for sentences about it: ``5 hops``, ``1 hop``, ``2s``."""
    if unit == "seconds":
        return format_duration(value)
    text = render_figure(value, unit)
    return f"{text} {UNITS.get(unit, unit) if value == 1 else unit}"
