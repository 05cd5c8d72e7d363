"""Cutting text for messages: an API field, a tooltip or a log line takes so many characters, no more."""
from __future__ import annotations


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` as it is when it has at most ``limit`` characters, else its start and ``ellipsis``,
    ``limit`` characters in all."""
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis
