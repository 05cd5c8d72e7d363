"""What one workload's annotations and Events should be, from the engine's results: a pure decision (no
client, no clock of its own), so every case is a unit test. The annotation writer applies it."""
from __future__ import annotations

from datetime import datetime
from typing import Callable, NamedTuple

from ..views.annotations import BLAST_RADIUS, COMPLEXITY_SCORE, EVALUATED_AT, VIOLATIONS
from ..clock import rfc3339
from ..engine.evaluator import worst_first
from ..model.finding import Finding
from ..model.policy import Enforcement
from ..views.workload import Workload

#: What guywire's annotations on a workload hold: (violations, complexity score, blast radius); "" for absent.
Written = tuple[str, str, str]
NOTHING_WRITTEN: Written = ("", "", "")


class Desired(NamedTuple):
    patch: dict[str, str | None] | None  # the annotations' merge patch; None: they already say this
    events: list[tuple[str, str, dict]]  # (type, rule, {message, key}) to post


def written_of(annotations: dict[str, str]) -> Written:
    """What a workload's own annotations say guywire wrote (read back after a restart)."""
    return (annotations.get(VIOLATIONS, ""), annotations.get(COMPLEXITY_SCORE, ""),
            annotations.get(BLAST_RADIUS, ""))


def written_by(patch: dict[str, str | None]) -> Written:
    """What the annotations hold once ``patch`` is applied."""
    return (patch.get(VIOLATIONS) or "", patch.get(COMPLEXITY_SCORE) or "", patch.get(BLAST_RADIUS) or "")


def announced_of(annotations: dict[str, str]) -> set[str]:
    """The rules whose Warning a workload's violations annotation says was announced."""
    return {r for r in annotations.get(VIOLATIONS, "").split(",") if r}


def desired(w: Workload, per: dict[str, list[Finding]], score: int | None, blast: str, *, written: Written,
            announced: set[str], enforcement: Callable[[str], Enforcement], now: datetime) -> Desired:
    """The annotation patch and the Events for workload ``w``, given its findings per policy ref (``per``,
    empty when no policy looks at it), its complexity ``score`` and ``blast`` radius annotation, what its
    annotations hold (``written``), the rules whose Warning the API accepted (``announced``), each policy's
    enforcement (Audit policies post no Events) and the time to stamp."""
    findings = worst_first(f for found in per.values() for f in found)
    violations = ",".join(dict.fromkeys(f.rule for f in findings))
    score_text = str(score) if per else ""
    blast = blast if per else ""
    patch = None
    if (violations, score_text, blast) != written:
        if per:
            patch = {VIOLATIONS: violations or None, COMPLEXITY_SCORE: score_text, BLAST_RADIUS: blast or None,
                     EVALUATED_AT: rfc3339(now)}
        else:  # no policy looks at it any more: take our annotations away
            patch = {VIOLATIONS: None, COMPLEXITY_SCORE: None, BLAST_RADIUS: None, EVALUATED_AT: None}
    loud: dict[str, list[Finding]] = {}
    for ref, found in per.items():
        if enforcement(ref) is Enforcement.AUDIT:
            continue
        for f in found:
            loud.setdefault(f.rule, []).append(f)
    events = []
    for rule in [r for r in loud if r not in announced]:
        group = worst_first(loud[rule])
        text = group[0].render() + (f" (and {len(group) - 1} more)" if len(group) > 1 else "")
        events.append(("Warning", rule, {"message": text, "key": f"{w.uid or w.key}|{rule}|{text}"}))
    for rule in sorted(announced - set(loud)):
        text = f"[{rule}] {w.ref}: no longer violated."
        events.append(("Normal", rule, {"message": text, "key": f"{w.uid or w.key}|{rule}|resolved|{rfc3339(now)}"}))
    return Desired(patch, events)
