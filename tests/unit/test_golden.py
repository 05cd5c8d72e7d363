"""One golden output per registered format: ``tests/golden/<command>-<format>.<extension>``, compared byte for byte.

Each is what ``guywire <command> --format <format>`` writes for examples/ at a fixed ``--now`` (and a
ManualClock at that time), run from the repository root. The one machine-dependent line, SARIF's
``originalUriBaseIds`` (the absolute URI of the checkout), is written as ``file:///SRCROOT/``.

After a deliberate change of an output, regenerate and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_golden.py
    git diff tests/golden/
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from guywire.cli import main, parser
from guywire.clock import ManualClock
from guywire.render.formats import FORMATS, Format

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
NOW = "2026-11-22T10:00:00Z"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# What each command renders for its golden files: examples/ judged at NOW.
ARGV = {
    "check": ["check", "examples/", "--now", NOW, "--color", "never"],
    "graph": ["graph", "examples/", "--now", NOW],
    "report": ["report", "examples/", "--now", NOW],
    "simulate": ["simulate", "examples/", "--now", NOW, "--target", "vector-db", "--latency", "5s", "--rps", "100"],
    "rules": ["rules"],
}
# What each command hands a renderer before the options: check a Report, graph one cluster's engine,
# report its figures, simulate the simulation and its graph, rules nothing.
SUBJECTS = {"check": ("report",), "graph": ("engine",), "report": ("figures",),
            "simulate": ("simulation", "graph"), "rules": ()}
ALL = [f for per_command in FORMATS.values() for f in per_command.values()]


def golden_path(fmt: Format) -> Path:
    return GOLDEN / f"{fmt.command}-{fmt.name}.{fmt.extension}"


def output(fmt: Format, capsys, monkeypatch) -> str:
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    code = main([*ARGV[fmt.command], "--format", fmt.name], clock=ManualClock(NOW))
    out, err = capsys.readouterr()
    assert code in (0, 1), f"guywire {fmt.command} --format {fmt.name} could not run ({code}): {err}"
    return out.replace(ROOT.as_uri() + "/", "file:///SRCROOT/")


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f"{f.command}-{f.name}")
def test_output_matches_golden_file(fmt: Format, capsys, monkeypatch):
    got = output(fmt, capsys, monkeypatch)
    path = golden_path(fmt)
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(got.encode())
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py"
    want = path.read_bytes().decode()
    assert got == want, (f"guywire {fmt.command} --format {fmt.name} differs from {path.relative_to(ROOT)}; if the "
                         "change is meant, regenerate with UPDATE_GOLDEN=1 and review git diff tests/golden/")


def test_golden_outputs_differ_from_format_to_format():
    """A renderer wired to the wrong format would write another format's output: no two golden files are alike."""
    seen: dict[bytes, str] = {}
    for fmt in ALL:
        data = golden_path(fmt).read_bytes()
        assert data not in seen, f"{golden_path(fmt).name} is the same as {seen[data]}"
        seen[data] = golden_path(fmt).name


def test_every_golden_file_belongs_to_a_registered_format():
    expected = {golden_path(f).name for f in ALL}
    stale = sorted(p.name for p in GOLDEN.iterdir() if p.name not in expected)
    assert not stale, f"golden files of no registered format (remove them): {stale}"


def _format_action(command: str):
    sub = next(a for a in parser()._subparsers._group_actions if a.dest == "command")
    return next(a for a in sub.choices[command]._actions if a.dest == "format")


@pytest.mark.parametrize("command", sorted(FORMATS))
def test_argparse_offers_exactly_the_registered_formats(command):
    action = _format_action(command)
    assert list(action.choices) == list(FORMATS[command])
    assert action.default == next(iter(FORMATS[command]))
    for fmt in FORMATS[command].values():
        if fmt.help:
            assert f"{fmt.name}: {fmt.help}" in action.help


def test_every_command_with_a_format_option_is_registered():
    sub = next(a for a in parser()._subparsers._group_actions if a.dest == "command")
    with_format = {name for name, p in sub.choices.items() if any(a.dest == "format" for a in p._actions)}
    assert with_format == set(FORMATS) == set(ARGV) == set(SUBJECTS)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f"{f.command}-{f.name}")
def test_renderer_takes_the_options_the_format_names(fmt: Format):
    params = inspect.signature(fmt.renderer()).parameters
    for name in (*fmt.options, *fmt.fixed):
        assert name in params, f"{fmt.module}.{fmt.function} takes no {name!r}"
    positional = [p for p in params.values() if p.default is p.empty and p.name not in (*fmt.options, *fmt.fixed)]
    assert len(positional) == len(SUBJECTS[fmt.command]), (fmt, positional)
