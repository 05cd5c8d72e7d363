"""One text clipper (guywire.model.messages.clip) for every message cut to a field's or a reader's length."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from guywire.model.messages import clip

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "guywire"


@pytest.mark.parametrize(("text", "limit", "ellipsis", "expected"), [
    ("short", 10, "…", "short"),
    ("exactly10!", 10, "…", "exactly10!"),
    ("eleven chars", 10, "…", "eleven ch…"),
    ("eleven chars", 10, "...", "eleven ..."),
    ("", 3, "…", ""),
])
def test_clip_keeps_short_text_and_cuts_long_text_to_the_limit_with_the_ellipsis(text, limit, ellipsis, expected):
    out = clip(text, limit, ellipsis)
    assert out == expected
    assert len(out) <= limit


def test_clip_keeps_the_whole_start_it_can():
    text = "x" * 5000
    assert clip(text, 1024) == "x" * 1023 + "…"


def test_no_other_module_cuts_text_with_an_ellipsis_of_its_own():
    cut = re.compile(r"""\[\s*:[^\]]*\]\s*\+\s*["'](…|\.\.\.)["']""")
    found = [f"{p.relative_to(PACKAGE)}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "messages.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if cut.search(line)]
    assert not found, f"cut text with guywire.model.messages.clip: {found}"
