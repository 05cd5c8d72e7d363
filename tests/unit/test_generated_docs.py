"""docs/rules.md is generated from the rule registry; the committed copy must match."""
from pathlib import Path

from guywire.docs import rules_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_rules_md_matches_registry():
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert committed == rules_markdown(), "docs/rules.md is stale: run `guywire rules --format markdown > docs/rules.md`"
