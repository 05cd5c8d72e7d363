"""Annotation rules: what a workload declares must be readable, and exemptions must say why."""
from __future__ import annotations

from typing import Iterator

from ..views.annotations import EXEMPT, EXEMPT_REASON
from ..model.severity import Severity
from ..views.workload import Workload
from .base import Context, Issue, rule


@rule(id="GW-ANN-001", name="malformed-annotation", severity=Severity.MEDIUM,
      summary="A guywire.dev/ annotation cannot be read.",
      remediation="Fix the annotation's value; the message quotes it and says what was expected. See the "
                  "annotation contract in the README.")
def malformed_annotation(w: Workload, params: None, ctx: Context) -> Iterator[Issue]:
    """A dependency or retry policy that cannot be parsed is a hole in the graph: the rules would
    judge the workload on what it did not mean. The parts that could be read are still used."""
    for err in w.decl.errors:
        yield Issue(f"{err.render()}")


@rule(id="GW-ANN-002", name="exemption-without-reason", severity=Severity.MEDIUM,
      summary="guywire.dev/exempt is set without guywire.dev/exempt-reason.",
      remediation="Add guywire.dev/exempt-reason with why the rule does not apply (a ticket, an owner, an end "
                  "date); until then the exemption is not honoured.")
def exemption_without_reason(w: Workload, params: None, ctx: Context) -> Iterator[Issue]:
    """Exemptions without a reason outlive the reason they had. An exemption is honoured only with
    a non-empty guywire.dev/exempt-reason."""
    if w.decl.exempt and not w.decl.exempt_reason:
        yield Issue(f"exempts {', '.join(sorted(w.decl.exempt))} without {EXEMPT_REASON}, so the exemption is "
                    f"ignored. Add {EXEMPT_REASON} or remove {EXEMPT}.")
