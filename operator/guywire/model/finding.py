"""Findings: what a rule reports about one workload (or Node)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .severity import Severity


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @property
    def short(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where an object was read: the file (``<stdin>`` for standard input) and the line it starts on;
    ``template`` is the chart file Helm rendered it from (its ``# Source:`` comment), when there is one."""

    file: str
    line: int | None = None
    template: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.template} ({where})" if self.template else where

    def to_dict(self) -> dict:
        out: dict = {"file": self.file, "line": self.line}
        if self.template:
            out["template"] = self.template
        return out


@dataclass(slots=True)
class Finding:
    """One rule broken by one object.

    ``observed`` and ``limit`` are the figures a measuring rule compared (the message is rendered from
    them, so the two cannot disagree), in ``unit`` (``model.units.UNITS``); ``observed`` is above
    ``limit`` whenever both are set. Rules that measure nothing leave all three None; a rule that
    measures without a limit (the size of a cycle) leaves ``limit`` None.

    A plain dataclass rather than a pydantic model: the engine makes tens of
    thousands of these per full evaluation and they are built only from
    already-validated values.
    """

    rule: str
    name: str
    severity: Severity
    workload: ObjectRef
    message: str
    location: str | None = None
    path: list[str] = field(default_factory=list)
    source: SourceRef | None = None
    policy: str | None = None
    observed: float | None = None
    limit: float | None = None
    unit: str | None = None
    _sort_key: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def render(self) -> str:
        """The one message format used by denials, Events, status and the CLI (STYLE.md rule 5)."""
        where = f" {self.location}" if self.location else ""
        return f"[{self.rule} {self.name}] {self.workload}{where}: {self.message}"

    @property
    def sort_key(self) -> tuple:
        """Worst first, then rule, object and location; worked out once (findings are sorted often)."""
        key = self._sort_key
        if key is None:
            key = self._sort_key = (-self.severity.rank, self.rule, self.workload.namespace or "", self.workload.name,
                                    self.location or "")
        return key

    def to_dict(self) -> dict:
        out = {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity.value,
            "workload": {"kind": self.workload.kind, "namespace": self.workload.namespace, "name": self.workload.name},
            "message": self.render(),
            "path": list(self.path),
            "observed": self.observed,
            "limit": self.limit,
            "unit": self.unit,
        }
        if self.location:
            out["location"] = self.location
        if self.source:
            out["source"] = self.source.to_dict()
        if self.policy:
            out["policy"] = self.policy
        return out
