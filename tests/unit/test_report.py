"""Cluster complexity figures, what changed between two states, the GW-SMP suggestions in `guywire report`."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from guywire.cli import main
from guywire.engine.evaluator import Engine
from guywire.model.policy import baseline_policy
from guywire.engine.insights import (
    ComplexityReport, Figures, complexity_report, describe_changes, diff_reports, simplify_suggestions,
)

from .manifests import deployment, inventory, service

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
R3 = "attempts=3, perTryTimeout=1s, timeout=10s, backoff=exponential"


def engine_of(*objs: dict) -> Engine:
    e = Engine([baseline_policy()], inventory(*objs))
    e.evaluate_all()
    return e


def shop() -> list[dict]:
    """shop: web -> api -> db (3x each), api also calls cache through env (undeclared);
    ops: a <-> b cycle that crosses into shop (b calls shop/cache)."""
    return [
        deployment("web", "shop", depends_on="api", retry=R3), service("web", "shop"),
        deployment("api", "shop", depends_on="db", retry=R3, env={"CACHE_URL": "http://cache:6379", "DB_HOST": "db"}),
        service("api", "shop"),
        deployment("db", "shop", kind="StatefulSet"), service("db", "shop"),
        deployment("cache", "shop"), service("cache", "shop"),
        deployment("a", "ops", depends_on="b"), service("a", "ops"),
        deployment("b", "ops", depends_on="a, cache.shop"), service("b", "ops"),
    ]


def test_cluster_and_namespace_figures():
    rep = complexity_report(engine_of(*shop()))
    c = rep.cluster
    assert (c.workloads, c.services, c.edges, c.undeclared_calls) == (6, 6, 6, 1)
    assert c.longest_chain == 2 and c.longest_chain_path == ["shop/web", "shop/api", "shop/db"]
    assert c.worst_amplification == 9
    assert c.worst_amplification_path == ["shop/web", "shop/api (3x)", "shop/db (3x)"]
    assert c.cycles == 1
    assert c.entry_points == 1  # shop/web; the ops cycle is called from inside only
    shop_f, ops_f = rep.namespaces["shop"], rep.namespaces["ops"]
    assert (shop_f.workloads, shop_f.edges, shop_f.undeclared_calls, shop_f.cycles) == (4, 3, 1, 0)
    assert (ops_f.workloads, ops_f.edges, ops_f.cycles) == (2, 3, 1)
    assert ops_f.longest_chain == 1 and ops_f.worst_amplification == 1
    assert shop_f.largest_blast_radius == 4 and shop_f.largest_blast_radius_workload == "shop/cache"
    scores = [engine_of(*shop()).score(k) for k in sorted(engine_of(*shop()).inventory.workloads)]
    assert c.max_score == max(scores) and abs(c.mean_score - sum(scores) / len(scores)) < 1e-9
    assert c.findings_by_category["dependencies"] >= 3  # cycle x2, undeclared
    assert sum(c.findings_by_category.values()) == sum(f.findings for f in rep.namespaces.values())


def test_gauges_are_numbers_with_stable_names():
    g = complexity_report(engine_of(*shop())).cluster.gauges()
    assert set(g) == {"workloads", "services", "dependency_edges", "undeclared_calls", "longest_chain", "cycles",
                      "worst_retry_amplification", "complexity_score_mean", "complexity_score_max", "entry_points",
                      "largest_blast_radius"}
    assert all(isinstance(v, (int, float)) for v in g.values())


def test_a_cycle_across_namespaces_counts_once_in_each():
    objs = [deployment("a", "x", depends_on="b.y"), deployment("b", "y", depends_on="a.x"),
            service("a", "x"), service("b", "y")]
    rep = complexity_report(engine_of(*objs))
    assert rep.cluster.cycles == 1 and rep.namespaces["x"].cycles == 1 and rep.namespaces["y"].cycles == 1


def test_report_round_trips_through_json():
    rep = complexity_report(engine_of(*shop()))
    again = ComplexityReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert diff_reports(rep, again) == []


def test_diff_says_what_a_change_adds_and_raises():
    before = complexity_report(engine_of(*shop()))
    after_objs = shop()
    after_objs[4] = deployment("db", "shop", kind="StatefulSet", depends_on="index", retry=R3)  # db -> index -> blob
    after_objs += [deployment("index", "shop", depends_on="blob"), service("index", "shop"),
                   deployment("blob", "shop"), service("blob", "shop")]
    after = complexity_report(engine_of(*after_objs))
    changes = diff_reports(before, after)
    lines = describe_changes(changes)
    assert lines[0].startswith("This change adds 2 workloads, adds 2 dependency edges")
    assert "raises the longest chain from 2 hops to 4 hops" in lines[0]
    assert "raises the worst retry amplification from 9x to 27x" in lines[0]
    assert any(line.startswith("  shop: adds 2 workloads, adds 2 dependency edges") for line in lines)
    assert describe_changes(diff_reports(after, after)) == ["This change leaves every complexity figure as it was."]
    back = describe_changes(diff_reports(after, before))[0]
    assert "removes 2 dependency edges" in back and "lowers the longest chain from 4 hops to 2 hops" in back


def test_suggestions_are_listed_whatever_the_policy():
    e = engine_of(*shop())
    assert not [f for f in e.result().findings if f.rule.startswith("GW-SMP")], "off in the baseline policy"
    found = simplify_suggestions(e)
    assert [f.rule for f in found] == ["GW-SMP-002"]
    assert "shop/web -(3x)-> shop/api -(3x)-> shop/db" in found[0].message


def test_suggestions_include_services_without_workloads():
    e = engine_of(deployment("api"), service("api"), service("orphan", selector={"app": "gone"}))
    found = simplify_suggestions(e)
    assert [(f.rule, str(f.workload)) for f in found] == [("GW-SMP-003", "Service ml/orphan")]


def test_enabled_simplify_policy_judges_services_and_follows_changes():
    from guywire.model.policy import parse_policy
    from guywire.views.workload import parse_service

    pol = parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "p"},
                        "spec": {"rules": {"simplify": {"enabled": True}}}})
    e = Engine([pol], inventory(deployment("api"), service("orphan", selector={"app": "gone"})))
    e.evaluate_all()
    assert ("ml", "orphan") in e.service_results
    assert [f.rule for f in e.result().findings if f.rule.startswith("GW-SMP")] == ["GW-SMP-003"]
    assert "GW-SMP-003" in {f.rule for f in e.policy_result(pol).findings}
    # the workload it should select arrives: the suggestion goes away
    from guywire.views.inventory import view_of
    e.upsert(view_of(deployment("gone", pod_labels={"app": "gone"})))
    assert not [f for f in e.result().findings if f.rule == "GW-SMP-003"]
    e.remove("Service", "ml", "orphan")
    assert ("ml", "orphan") not in e.service_results
    e.upsert(parse_service(service("lost", selector={"app": "nobody"})))
    assert [str(f.workload) for f in e.result().findings if f.rule == "GW-SMP-003"] == ["Service ml/lost"]


def test_a_policy_for_other_kinds_does_not_judge_services():
    from guywire.model.policy import parse_policy

    pol = parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "p"},
                        "spec": {"match": {"kinds": ["Deployment"]}, "rules": {"simplify": {"enabled": True}}}})
    e = Engine([pol], inventory(deployment("api"), service("orphan", selector={"app": "gone"})))
    assert not e.evaluate_all().findings or all(f.rule != "GW-SMP-003" for f in e.result().findings)


# ----- the command -------------------------------------------------------------------------------
def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def write_all(path: Path, objs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return path


def test_report_examples_text(capsys):
    rc, out, err = run(capsys, "report", EXAMPLES)
    assert rc == 0, err
    assert out.startswith("Cluster: 11 workload(s), 10 Service(s), 12 dependency edge(s) (3 undeclared)")
    assert "Worst retry amplification: 27x" in out
    assert "Simplification suggestions (GW-SMP, listed whatever the policy): 1" in out
    assert "[GW-SMP-002 retries-at-several-layers] Deployment ml/gateway" in out


def test_report_json_and_diff_against_saved_json(tmp_path, capsys):
    old = write_all(tmp_path / "old.yaml", shop())
    rc, out, _ = run(capsys, "report", old, "-o", "json")
    assert rc == 0
    saved = tmp_path / "old-report.json"
    saved.write_text(out)
    data = json.loads(out)
    assert data["cluster"]["edges"] == 6 and data["namespaces"]["shop"]["workloads"] == 4
    new_objs = shop() + [deployment("extra", "shop", depends_on="web, api"), service("extra", "shop")]
    new = write_all(tmp_path / "new.yaml", new_objs)
    rc, out, _ = run(capsys, "report", new, "--diff", saved)
    assert rc == 0
    assert "This change adds 1 workload, adds 2 dependency edges" in out
    rc, out2, _ = run(capsys, "report", new, "--diff", old)  # manifests work as well
    assert "This change adds 1 workload, adds 2 dependency edges" in out2
    rc, out3, _ = run(capsys, "report", new, "--diff", old, "-o", "json")
    assert json.loads(out3)["changeSummary"][0].startswith("This change adds 1 workload")


def test_report_diff_refuses_a_check_report(tmp_path, capsys):
    old = write_all(tmp_path / "old.yaml", shop())
    run(capsys, "check", old)
    rc, out, _ = run(capsys, "check", old, "-o", "json")
    saved = tmp_path / "check.json"
    saved.write_text(out)
    rc, _, err = run(capsys, "report", old, "--diff", saved)
    assert rc == 2 and "guywire report --format json" in err


def test_figures_from_an_empty_dict_are_zero():
    f = Figures.from_dict({})
    assert f.workloads == 0 and f.worst_amplification == 1 and f.findings == 0
