"""Evaluation errors: a rule that could not evaluate one object. Not a finding.

Kyverno's model: an evaluation has results (here, findings) and, apart from them, errors.
A finding says "this object breaks the rule"; an error says "guywire could not tell", so it
never becomes a violation, an annotation, a Warning Event or a denial. It carries the rule,
the object, the exception's class and its message; never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass

from .finding import ObjectRef, SourceRef
from .messages import clip

MAX_DETAIL = 300


def _detail(exc: BaseException) -> str:
    """The exception's message on one line, cut at ``MAX_DETAIL`` characters; ``<unprintable TypeName>`` when
    its ``__str__`` raises too (this runs in the engine's except block: it must not raise)."""
    try:
        text = " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 - a rule's own exception class may fail any way
        return f"<unprintable {type(exc).__name__}>"
    return clip(text, MAX_DETAIL)


@dataclass(frozen=True, slots=True)
class EvaluationError:
    rule: str
    name: str  # the rule's name
    object: ObjectRef
    error: str  # the exception's class name
    detail: str  # the exception's message, one line
    source: SourceRef | None = None
    policy: str | None = None  # the policy's name, as in Finding.policy

    @classmethod
    def of(cls, rule_id: str, rule_name: str, exc: BaseException, ref: ObjectRef, source: SourceRef | None,
           policy: str | None) -> EvaluationError:
        return cls(rule=rule_id, name=rule_name, object=ref, error=type(exc).__name__, detail=_detail(exc),
                   source=source, policy=policy)

    @property
    def key(self) -> tuple:
        """The same error seen through several policies is one error."""
        return (self.rule, self.object.kind, self.object.namespace or "", self.object.name, self.error, self.detail)

    @property
    def cause(self) -> str:
        return f"{self.error}: {self.detail}" if self.detail else self.error

    def render(self) -> str:
        """One line in the shape of Finding.render: what, where, why, and what it means."""
        return (f"[{self.rule} {self.name}] {self.object}: the rule could not evaluate ({self.cause}); "
                "no finding of this rule is reported for it.")

    def to_dict(self) -> dict:
        out: dict = {
            "level": "error",
            "rule": self.rule,
            "name": self.name,
            "object": {"kind": self.object.kind, "namespace": self.object.namespace, "name": self.object.name},
            "exception": {"type": self.error, "message": self.detail},
            "message": self.render(),
            "file": self.source.file if self.source else None,
            "line": self.source.line if self.source else None,
        }
        if self.policy:
            out["policy"] = self.policy
        return out


def unique_errors(errors) -> list[EvaluationError]:
    """One error per rule, object and cause (several policies run the same rule), ordered by object then rule."""
    seen: dict[tuple, EvaluationError] = {}
    for e in errors:
        seen.setdefault(e.key, e)
    return sorted(seen.values(), key=lambda e: (e.object.namespace or "", e.object.kind, e.object.name, e.rule))


__all__ = ["EvaluationError", "unique_errors"]
