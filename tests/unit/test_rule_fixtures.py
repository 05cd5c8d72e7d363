"""Fixtures decide (STYLE.md rule 3): every rule ships pass and fail examples, and they are run here.

``tests/rules/<RULE-ID>/pass-*.yaml`` must give no finding of that rule, ``fail-*.yaml`` at
least one; the outcome comes from the file name, as in Polaris. Header comments at the top
of a fixture tune the check:

    # expect: <fragment>   every fragment appears in some rendered finding of the rule (fail only)
    # count: N             exactly N findings of the rule
    # now: 2026-11-24T10:00:00Z   judge at this time, exactly as ``guywire check --now`` does

A fixture without ``# now:`` must not depend on the time at all: it is judged at two times a
century apart (the clock ``check`` would read), and both verdicts must agree.

    # unmeasured: <why>    a measuring rule's findings here carry no figures (fail only)

Every finding of a measuring rule (one that names a ``unit``) carries ``observed`` in that unit,
and ``limit`` when the rule names where its limit comes from, both rendered in its message;
findings of other rules carry neither.

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
from guywire.model.finding import Finding
from guywire.model.units import render_figure
from guywire.rules import REGISTRY

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
EARLY, LATE = "2001-01-01T00:00:00Z", "2101-01-01T00:00:00Z"  # what the clock says when no '# now:' does
HEADER = re.compile(r"^#\s*(expect|count|now|unmeasured)\s*:\s*(.*?)\s*$")


@dataclass
class Header:
    expect: list[str] = field(default_factory=list)
    count: int | None = None
    now: str | None = None
    unmeasured: str | None = None


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
        elif key == "unmeasured":
            assert value, f"{path}: '# unmeasured:' needs the reason its findings carry no figures."
            header.unmeasured = value
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
        for f in result.findings:
            figure_problems(f, strict=f.rule == rule_id and not header.unmeasured, path=path)
        return [f.render() for f in result.findings if f.rule == rule_id]

    found = judged_at(ManualClock(EARLY))
    if header.now is None:
        assert judged_at(ManualClock(LATE)) == found, \
            f"{path}: the verdict depends on the time; fix it with '# now: <RFC 3339>'."
    shown = "\n".join(found) or "(none)"

    if path.name.startswith("pass-"):
        assert not header.expect, f"{path}: '# expect:' belongs in fail-* fixtures."
        assert not header.unmeasured, f"{path}: '# unmeasured:' belongs in fail-* fixtures."
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


def figure_problems(f: Finding, *, strict: bool, path: Path) -> None:
    """A finding's figures agree with its rule and its message; with ``strict``, a measuring rule's finding has them."""
    r = REGISTRY.get(f.rule)
    if r is None or r.unit is None:
        assert (f.observed, f.limit, f.unit) == (None, None, None), \
            f"{path}: {f.rule} measures nothing, yet its finding carries figures: {f.render()}"
        return
    if f.observed is None:
        assert not strict, f"{path}: {f.rule} measures {r.unit}, but its finding carries no observed: {f.render()}"
        assert (f.limit, f.unit) == (None, None), f"{path}: a limit without an observed figure: {f.render()}"
        return
    assert f.unit == r.unit, f"{path}: {f.rule} measures {r.unit}, but its finding says {f.unit}."
    assert render_figure(f.observed, f.unit) in f.message, \
        f"{path}: the message does not show observed={f.observed} {f.unit}: {f.render()}"
    if r.limit_from is None:
        assert f.limit is None, f"{path}: {f.rule} has no limit, yet its finding carries one: {f.render()}"
        return
    assert f.limit is not None, f"{path}: {f.rule} measures against {r.limit_from}, but carries no limit."
    assert render_figure(f.limit, f.unit) in f.message, \
        f"{path}: the message does not show limit={f.limit} {f.unit}: {f.render()}"
    assert f.observed > f.limit, f"{path}: observed {f.observed} is not past the limit {f.limit}: {f.render()}"


#: The rules that compare a number with a limit (or, for a cycle, only measure): what they count.
MEASURING = {"GW-DEP-002": "dependencies", "GW-DEP-003": "hops", "GW-DEP-004": "workloads", "GW-RTY-001": "attempts",
             "GW-RTY-002": "calls", "GW-RTY-004": "seconds", "GW-GPU-003": "seconds", "GW-CPX-001": "points"}


def test_the_rules_that_measure_say_what_they_count() -> None:
    assert {rid: r.unit for rid, r in REGISTRY.items() if r.unit} == MEASURING
    assert [rid for rid in MEASURING if REGISTRY[rid].limit_from is None] == ["GW-DEP-004"]


@pytest.mark.parametrize("rule_id", sorted(MEASURING))
def test_a_measuring_rule_has_a_fail_fixture_with_figures(rule_id: str) -> None:
    measured = [p for p in (RULES_DIR / rule_id).glob("fail-*.yaml") if not read_header(p).unmeasured]
    assert measured, f"{rule_id} measures {MEASURING[rule_id]}, but every fail fixture of it is '# unmeasured:'."


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
