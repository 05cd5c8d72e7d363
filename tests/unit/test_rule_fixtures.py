"""Fixtures decide (STYLE.md rule 3): every rule ships pass and fail examples, and they are run here.

``tests/rules/<RULE-ID>/pass-*.yaml`` must give no finding of that rule, ``fail-*.yaml`` at
least one; the outcome comes from the file name, as in Polaris. Header comments at the top
of a fixture tune the check:

    # expect: <fragment>   every fragment appears in some rendered finding of the rule (fail only)
    # count: N             exactly N findings of the rule
    # now: 2026-11-24T10:00:00Z   judge at this time, exactly as ``guywire check --now`` does

A fixture without ``# now:`` must not depend on the time at all: it is judged at two times a
century apart (the clock ``check`` would read), and both verdicts must agree.

A fixture is read by the same code as ``guywire check`` and judged by the baseline policy
unless it carries its own ComplexityPolicy / ClusterComplexityPolicy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from guywire.cli import judge_inputs
from guywire.clock import ManualClock
from guywire.rules import REGISTRY

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
EARLY, LATE = "2001-01-01T00:00:00Z", "2101-01-01T00:00:00Z"  # what the clock says when no '# now:' does
HEADER = re.compile(r"^#\s*(expect|count|now)\s*:\s*(.*?)\s*$")


@dataclass
class Header:
    expect: list[str] = field(default_factory=list)
    count: int | None = None
    now: str | None = None


def read_header(path: Path) -> Header:
    """The ``# key: value`` lines of the comment block the fixture starts with."""
    header = Header()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line.startswith("#"):
            break
        m = HEADER.match(line)
        if not m:
            continue
        key, value = m.groups()
        if key == "expect":
            assert value, f"{path}: '# expect:' needs a message fragment."
            header.expect.append(value)
        elif key == "count":
            assert value.isdigit(), f"{path}: '# count:' needs a whole number, got {value!r}."
            header.count = int(value)
        else:
            header.now = value
    return header


def fixture_files() -> list[Path]:
    return sorted(p for p in RULES_DIR.glob("*/*.yaml") if p.name.startswith(("pass-", "fail-")))


FIXTURES = fixture_files()


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURES])
def test_rule_fixture(path: Path) -> None:
    rule_id = path.parent.name
    assert rule_id in REGISTRY, f"{path}: {rule_id} is not a registered rule."
    header = read_header(path)

    def judged_at(clock: ManualClock) -> list[str]:
        """What ``guywire check PATH [--now T]`` finds, its clock reading ``clock``."""
        judged, diagnostics, _, _ = judge_inputs([str(path)], [], header.now, clock)
        errors = [d.render() for d in diagnostics if d.error]
        assert not errors, f"{path} could not be read cleanly:\n" + "\n".join(errors)
        assert judged.first.inventory.workloads, f"{path} holds no workload to judge."
        result = judged.evaluate_all()
        broken = [e.render() for e in result.errors]
        assert not broken, "a rule could not evaluate:\n" + "\n".join(broken)
        return [f.render() for f in result.findings if f.rule == rule_id]

    found = judged_at(ManualClock(EARLY))
    if header.now is None:
        assert judged_at(ManualClock(LATE)) == found, \
            f"{path}: the verdict depends on the time; fix it with '# now: <RFC 3339>'."
    shown = "\n".join(found) or "(none)"

    if path.name.startswith("pass-"):
        assert not header.expect, f"{path}: '# expect:' belongs in fail-* fixtures."
        assert not found, f"{path} should pass {rule_id}, but got:\n{shown}"
        return

    assert header.expect, f"{path}: a fail fixture names at least one '# expect:' fragment."
    assert found, f"{path} should fail {rule_id}, but it gave no finding of that rule."
    for fragment in header.expect:
        assert any(fragment in msg for msg in found), \
            f"{path}: no {rule_id} finding contains {fragment!r}; got:\n{shown}"
    if header.count is not None:
        assert len(found) == header.count, \
            f"{path}: expected {header.count} {rule_id} finding(s), got {len(found)}:\n{shown}"


def test_every_rule_has_pass_and_fail_fixtures() -> None:
    problems = []
    for rule_id in sorted(REGISTRY):
        folder = RULES_DIR / rule_id
        for outcome in ("pass", "fail"):
            if not list(folder.glob(f"{outcome}-*.yaml")):
                problems.append(f"{rule_id} has no {outcome}-*.yaml fixture in {folder}.")
    for folder in sorted(p for p in RULES_DIR.iterdir() if p.is_dir()):
        if folder.name not in REGISTRY:
            problems.append(f"{folder} names no registered rule.")
        for f in sorted(folder.iterdir()):
            if f.suffix != ".yaml" or not f.name.startswith(("pass-", "fail-")):
                problems.append(f"{f} is neither pass-*.yaml nor fail-*.yaml, so it is never run.")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rule_id", sorted(REGISTRY))
def test_rule_metadata_is_complete(rule_id: str) -> None:
    r = REGISTRY[rule_id]
    assert r.summary.strip(), f"{rule_id} has no summary."
    assert r.remediation.strip(), f"{rule_id} has no remediation."
    assert r.doc.strip(), f"{rule_id} has no docstring (its rationale in docs/rules.md)."
