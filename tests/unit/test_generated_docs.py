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


def test_output_md_names_every_check_format_and_every_json_key(tmp_path, capsys):
    import json

    from guywire.render.formats import choices

    from .test_cli import run, write
    from .test_sarif import EXEMPT

    text = (ROOT / "docs" / "output.md").read_text()
    machine = [f for f in choices("check") if f != "text"]
    assert f"--format {'|'.join(machine)}" in text, "docs/output.md: the formats line is stale"
    rc, out, _ = run(capsys, "check", "-o", "json", write(tmp_path, "app.yaml", EXEMPT), "--baseline",
                     write(tmp_path, "old.yaml", EXEMPT))
    data = json.loads(out)
    keys = set(data) | set(data["summary"]) | set(data["summary"]["graph"]) | set(data["summary"]["baseline"])
    keys |= set(data["exempted"][0]) | {"template"}  # source.template: from helm template output (test_sarif.py)
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/output.md does not describe {missing}"
    for sarif_term in ("uriBaseId", "%SRCROOT%", "originalUriBaseIds", "suppressions", "<skipped"):
        assert sarif_term in text, f"docs/output.md does not mention {sarif_term}"
