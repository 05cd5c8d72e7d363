"""Severities, ordered so that the worst sorts first."""
from __future__ import annotations

from enum import Enum


class Severity(str, Enum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"
    CRITICAL = "Critical"

    @property
    def rank(self) -> int:
        return _RANK_BY_VALUE[self._value_]  # _value_ is a plain attribute; Enum hashing is slow in hot loops

    @classmethod
    def parse(cls, text: str) -> "Severity":
        for sev in cls:
            if sev.value.lower() == str(text).strip().lower():
                return sev
        raise ValueError(f"unknown severity {text!r}: use low, medium, high or critical.")


_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
_RANK_BY_VALUE = {sev.value: rank for sev, rank in _RANK.items()}
