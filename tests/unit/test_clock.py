"""One clock: guywire.clock is the only module that reads the wall or monotonic clock, and ManualClock moves
only when told to.

The walker resolves imports (``import time as t``, ``from datetime import datetime as dt``) and flags any
reference to a clock-reading function, called or not (``clock=time.monotonic`` as a default is a read
waiting to happen), plus ``loop.time()`` on an asyncio loop. ``time.perf_counter`` stays allowed: it times
durations for metrics and never decides a result.
"""
from __future__ import annotations

import ast
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from guywire.clock import SYSTEM, Clock, ManualClock, parse_time, rfc3339

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "guywire"
CLOCK_MODULE = PACKAGE / "clock.py"

FORBIDDEN = {
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns",
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today",
}
FORBIDDEN_BARE_CALLS = {"time.localtime", "time.gmtime", "time.ctime", "time.asctime"}  # without an argument: now
LOOP_FACTORIES = {"get_running_loop", "get_event_loop", "new_event_loop"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` replaced by what it was imported as; None when the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _is_loop(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return "loop" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "loop" in node.attr.lower()
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in LOOP_FACTORIES
    return False


def wall_clock_reads(source: str, filename: str = "<snippet>") -> list[str]:
    """Every read of the wall or monotonic clock in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    found: list[str] = []
    for node in ast.walk(tree):  # imports first: a function may use a module imported below it
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                qualified = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = qualified
                if qualified in FORBIDDEN:
                    found.append(f"{filename}:{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            name = _dotted(node.func, aliases)
            if name in FORBIDDEN_BARE_CALLS:
                found.append(f"{filename}:{node.lineno}: {name}()")
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "time"
                  and name is None and _is_loop(node.func.value)):
                found.append(f"{filename}:{node.lineno}: loop.time()")
        if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(node.ctx, ast.Load):
            name = _dotted(node, aliases)
            if name in FORBIDDEN:
                found.append(f"{filename}:{node.lineno}: {name}")
    return found


def package_reads() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == CLOCK_MODULE:
            continue
        out += wall_clock_reads(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    return out


def test_only_the_clock_module_reads_the_clock():
    reads = package_reads()
    assert reads == [], ("read the time through a guywire.clock.Clock handed in (clock.now() / "
                         "clock.monotonic()), not directly:\n" + "\n".join(reads))


def test_the_walker_finds_the_clock_module_s_own_reads():
    reads = wall_clock_reads(CLOCK_MODULE.read_text(), "clock.py")
    assert any("datetime.datetime.now" in r for r in reads) and any("time.monotonic" in r for r in reads)


@pytest.mark.parametrize("snippet, what", [
    ("import time\nt = time.time()", "time.time"),
    ("import time\ndef f(clock=time.monotonic): return clock()", "time.monotonic"),
    ("import time as t\nx = t.monotonic_ns()", "time.monotonic_ns"),
    ("import time\nx = time.time_ns()", "time.time_ns"),
    ("from time import monotonic\nx = monotonic()", "from time import monotonic"),
    ("from time import time as now\nx = now()", "from time import time"),
    ("from datetime import datetime, timezone\nx = datetime.now(timezone.utc)", "datetime.datetime.now"),
    ("from datetime import datetime as dt\nx = dt.utcnow()", "datetime.datetime.utcnow"),
    ("import datetime\nx = datetime.datetime.today()", "datetime.datetime.today"),
    ("import datetime as d\nx = d.date.today()", "datetime.date.today"),
    ("from datetime import date\nx = date.today()", "datetime.date.today"),
    ("import asyncio\nasync def f():\n    loop = asyncio.get_running_loop()\n    return loop.time()", "loop.time()"),
    ("import asyncio\nasync def f():\n    return asyncio.get_running_loop().time()", "loop.time()"),
    ("import time\nx = time.localtime()", "time.localtime()"),
])
def test_the_walker_catches_a_planted_read(snippet: str, what: str):
    reads = wall_clock_reads(textwrap.dedent(snippet))
    assert any(r.endswith(what) for r in reads), reads


@pytest.mark.parametrize("snippet", [
    "import time\nstarted = time.perf_counter()",  # durations for metrics
    "from datetime import datetime\nx = datetime.fromisoformat('2026-01-01T00:00:00+00:00')",
    "def f(clock):\n    return clock.now(), clock.monotonic()",
    "from datetime import datetime\ndef f(now: datetime):\n    return now.time()",  # time of day of a given time
    "import time\nx = time.localtime(0)",
    "import os\nx = os.stat('.').st_mtime_ns",
])
def test_the_walker_leaves_what_reads_no_clock_alone(snippet: str):
    assert wall_clock_reads(textwrap.dedent(snippet)) == []


# ----- the clock itself ---------------------------------------------------------------------------------------------
def test_the_system_clock_is_timezone_aware_utc():
    assert isinstance(SYSTEM, Clock) and SYSTEM.now().utcoffset() == timedelta(0)


def test_a_manual_clock_moves_only_when_told_to():
    clock = ManualClock("2026-11-24T10:00:00Z", monotonic=5.0)
    assert clock.now() == clock.now() == datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    clock.advance(90)
    assert rfc3339(clock.now()) == "2026-11-24T10:01:30Z" and clock.monotonic() == 95.0
    clock.set("2026-11-24T09:00:00Z")  # wall time back (an NTP step), monotonic time never goes back
    assert rfc3339(clock.now()) == "2026-11-24T09:00:00Z" and clock.monotonic() == 95.0
    clock.set(datetime(2026, 11, 24, 9, 0, 10))  # naive: UTC
    assert clock.monotonic() == 105.0 and clock.now().tzinfo is not None


def test_rfc3339_is_utc_to_the_second_and_parse_time_reads_it_back():
    cest = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 11, 24, 12, 0, 1, 999_999, tzinfo=cest)) == "2026-11-24T10:00:01Z"
    assert parse_time("2026-11-24T10:00:01Z") == datetime(2026, 11, 24, 10, 0, 1, tzinfo=timezone.utc)
    assert parse_time("2026-11-24T10:00:01").tzinfo is not None
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_seconds_and_nanos_is_the_policyreport_timestamp_and_takes_a_naive_time_as_utc():
    from guywire.clock import aware, seconds_and_nanos

    at = datetime(2026, 11, 24, 10, 0, 1, 250_000, tzinfo=timezone.utc)
    assert seconds_and_nanos(at) == {"seconds": 1795514401, "nanos": 250_000_000}
    assert seconds_and_nanos(at.replace(tzinfo=None)) == seconds_and_nanos(at)
    assert seconds_and_nanos(at.astimezone(timezone(timedelta(hours=-5)))) == seconds_and_nanos(at)
    assert aware(at.replace(tzinfo=None)) == at and aware(at) is at


def test_only_the_clock_module_formats_times():
    """rfc3339 (status, Events, annotations, logs) and seconds_and_nanos (PolicyReports) are the only forms."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == CLOCK_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("strftime", "isoformat", "formatTime"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.attr}")
    assert not found, f"format times with guywire.clock.rfc3339: {found}"


def test_the_operator_s_json_log_lines_carry_rfc3339_utc_times():
    import json
    import logging

    from guywire.operator.main import JsonFormatter

    record = logging.LogRecord("guywire.operator", logging.INFO, __file__, 1, "started", None, None)
    record.created = datetime(2026, 11, 24, 10, 0, 1, 900_000, tzinfo=timezone.utc).timestamp()
    line = json.loads(JsonFormatter().format(record))
    assert line["time"] == "2026-11-24T10:00:01Z" and line["message"] == "started"
