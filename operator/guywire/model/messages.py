"""Cutting text for messages: an API field, a tooltip or a log line takes so many characters, no more."""
from __future__ import annotations


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` as it is when it has at most ``limit`` characters, else its start and ``ellipsis``,
    ``limit`` characters in all."""
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


def some_of(names: list[str], shown: int = 4) -> str:
    """The first ``shown`` of ``names``, comma-separated, and how many more were left out
    (``a, b, c, d and 3 more``)."""
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")
