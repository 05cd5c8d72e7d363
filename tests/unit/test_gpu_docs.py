"""docs/gpu-health.md is generated from the classification tables; the committed copy must match."""
from pathlib import Path

from guywire.gpu.classify import DEFAULT_TABLE, ROWS, SOURCES
from guywire.gpu.health_docs import gpu_health_markdown
from guywire.model.gpu_report import HealthState

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_health_md_matches_the_tables():
    committed = (ROOT / "docs" / "gpu-health.md").read_text()
    assert committed == gpu_health_markdown(), \
        "docs/gpu-health.md is stale: run `python -m guywire.gpu.health_docs > docs/gpu-health.md`"


def test_every_row_cites_known_sources_and_every_source_is_cited():
    cited = {s for r in ROWS for s in r.sources}
    assert cited <= set(SOURCES)
    assert cited == set(SOURCES)


def test_the_xid_table_follows_the_issue():
    for xid in (48, 64, 74, 79, 95, 109, 119, 120, 140):
        assert DEFAULT_TABLE.xid(xid).state is HealthState.UNHEALTHY, xid
    for xid in (13, 31, 43, 45, 68):
        assert DEFAULT_TABLE.xid(xid).state is HealthState.HEALTHY, xid
