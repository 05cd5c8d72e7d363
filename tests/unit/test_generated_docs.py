"""docs/rules.md is generated from the rule registry; the committed copy must match."""
from pathlib import Path

from guywire.render.rule_catalogue import rules_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_rules_md_matches_registry():
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert committed == rules_markdown(), "docs/rules.md is stale: run `guywire rules --format markdown > docs/rules.md`"


def test_output_md_lists_every_measuring_rule_with_its_limit():
    from guywire.rules import all_rules

    text = (ROOT / "docs" / "output.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| GW-")}
    measuring = {r.id: r for r in all_rules() if r.unit}
    assert set(rows) == set(measuring), "docs/output.md: the table of measuring rules differs from the registry"
    for rid, r in measuring.items():
        limit = r.limit_from if r.limit_from and r.limit_from.startswith("rules.") else None
        assert limit is None or f"`{limit}`" in rows[rid], f"docs/output.md: {rid} should name {limit}"
        assert r.limit_from is not None or "null" in rows[rid], f"docs/output.md: {rid} has no limit"
