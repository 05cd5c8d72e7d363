"""Failure simulation: hand-made graphs with known answers (retry storms, timeout inversion, hangs, cycles,
expected case), the blast radius, and `guywire simulate` on the examples."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from guywire.views.annotations import RetryPolicy
from guywire.cli import main
from guywire.engine.evaluator import Engine
from guywire.graph.dependency_graph import Graph
from guywire.model.policy import baseline_policy
from guywire.graph.simulate import (
    Answer, Failure, backoff_delay, blast_radius, call_hop, entry_points, find_workload, simulate, top_blast_radii,
)

from .manifests import deployment, inventory, service

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def K(name: str, ns: str = "ml", kind: str = "Deployment") -> tuple[str, str, str]:
    return (ns, kind, name)


def graph(*objs: dict) -> Graph:
    return Graph(inventory(*objs))


def chain(retries: list[str | None], names: list[str] | None = None) -> Graph:
    """w0 -> w1 -> ... -> wN, ``retries[i]`` the retry annotation of w{i}."""
    names = names or [f"w{i}" for i in range(len(retries) + 1)]
    objs: list[dict] = []
    for i, name in enumerate(names):
        dep = names[i + 1] if i + 1 < len(names) else None
        objs.append(deployment(name, depends_on=dep, retry=retries[i] if i < len(retries) else None))
        objs.append(service(name))
    return graph(*objs)


R3 = "attempts=3, perTryTimeout=1s, timeout=10s, backoff=exponential"


# ----- one hop -----------------------------------------------------------------------------------
def test_backoff_assumptions():
    assert [backoff_delay("exponential", k) for k in (1, 2, 3, 4)] == [0.0, 0.1, 0.2, 0.4]
    assert backoff_delay("exponential", 20) == 10.0  # capped
    assert [backoff_delay("linear", k) for k in (2, 3)] == [pytest.approx(0.1), pytest.approx(0.2)]
    assert backoff_delay("fixed", 5) == 0.1
    assert backoff_delay(None, 3) == backoff_delay("none", 3) == 0.0
    assert backoff_delay("exponential", 3, base=1.0) == 2.0


def test_per_try_timeouts_and_overall_timeout_cut_the_hop():
    pol = RetryPolicy(attempts=3, per_try_timeout=1.0, timeout=3.0, backoff="exponential")
    # tries at 0-1, 1.1-2.1, 2.3-3.3: the overall timeout cuts the third at 3s
    assert call_hop(pol, Answer("hang", None)) == (3, "timeout", 3.0, "per-try timeout", True)
    pol = RetryPolicy(attempts=3, per_try_timeout=2.0, timeout=6.0)  # no backoff: 0-2, 2-4, 4-6
    assert call_hop(pol, Answer("slow", 5.0)) == (3, "timeout", 6.0, "per-try timeout", False)


def test_a_slow_answer_within_the_per_try_timeout_succeeds_once():
    pol = RetryPolicy(attempts=3, per_try_timeout=8.0)
    assert call_hop(pol, Answer("slow", 5.0)) == (1, "slow", 5.0, "answered", False)
    # ... unless the overall timeout is shorter than the answer
    assert call_hop(RetryPolicy(attempts=3, timeout=4.0), Answer("slow", 5.0))[:3] == (1, "timeout", 4.0)


def test_errors_are_retried_with_backoff():
    pol = RetryPolicy(attempts=3, per_try_timeout=10.0, backoff="exponential")
    assert call_hop(pol, Answer("error", 3.0)) == (3, "error", 9.3, "error", False)


def test_no_timeout_on_a_hanging_callee_is_unbounded():
    assert call_hop(RetryPolicy(attempts=3), Answer("hang", None)) == (1, "hang", None, "no answer", False)
    assert call_hop(RetryPolicy(attempts=3, timeout=5.0), Answer("hang", None))[:3] == (1, "timeout", 5.0)


def test_failure_is_validated():
    with pytest.raises(ValueError):
        Failure("latency", latency=0)
    with pytest.raises(ValueError):
        Failure("error-rate", error_rate=1.5)
    with pytest.raises(ValueError):
        Failure("melted")


# ----- whole graphs ------------------------------------------------------------------------------
def test_three_layers_of_three_attempts_send_27_calls_to_the_bottom():
    g = chain([R3, R3, R3])
    sim = simulate(g, K("w3"), Failure("down"))
    (entry,) = sim.entries
    assert entry.key == K("w0")
    assert entry.calls == 27 and entry.healthy_calls == 1 and entry.amplification == 27
    assert [(k[2], n) for k, n in entry.path] == [("w0", 1), ("w1", 3), ("w2", 3), ("w3", 3)]
    assert sim.load == {K("w0"): 1, K("w1"): 3, K("w2"): 9, K("w3"): 27}
    assert entry.answer.failed
    assert [h.distance for h in sim.hops] == [1, 2, 3]
    assert sim.hop(K("w2"), K("w3")).timed_out


def test_latencies_add_up_the_chain():
    g = chain([R3, R3, "attempts=3, perTryTimeout=2s, timeout=6s"])
    sim = simulate(g, K("w3"), Failure("latency", latency=5.0))
    # w2 -> w3: 3 x 2s per-try timeouts = 6s; w1 -> w2: 1s per try, 3 tries + 0.3s backoff = 3.3s;
    # w0 -> w1: each try times out after 1s too: 3.3s
    assert sim.answers[K("w2")] == Answer("error", 6.0)
    assert sim.answers[K("w1")] == Answer("error", 3.3)
    assert sim.answers[K("w0")] == Answer("error", 3.3)


def test_timeout_inversion_makes_the_entry_time_out_although_the_callee_answers():
    g = graph(deployment("gateway", depends_on="orchestrator",
                         retry="attempts=3, perTryTimeout=1s, timeout=10s, backoff=exponential"),
              deployment("orchestrator", depends_on="llm", retry="attempts=2, perTryTimeout=8s, timeout=16s"),
              deployment("llm"), service("orchestrator"), service("llm"))
    sim = simulate(g, K("llm"), Failure("latency", latency=5.0))
    assert sim.answers[K("orchestrator")] == Answer("slow", 5.0)  # its own timeout tolerates the latency
    hop = sim.hop(K("gateway"), K("orchestrator"))
    assert hop.timed_out and hop.tries == 3 and hop.each_try == "per-try timeout"
    (entry,) = sim.entries
    assert entry.answer == Answer("error", 3.3)  # 3 x 1s + 100ms + 200ms backoff
    assert entry.calls == 3  # the LLM still serves every abandoned try


def test_a_down_leaf_with_no_timeouts_anywhere_is_unbounded():
    g = chain([None, None])
    sim = simulate(g, K("w2"), Failure("down"))
    (entry,) = sim.entries
    assert entry.answer == Answer("hang", None)
    assert all(h.outcome == "hang" and h.seconds is None for h in sim.hops)


def test_a_hang_is_bounded_by_the_first_caller_with_a_timeout():
    g = chain(["attempts=2, perTryTimeout=2s", None])
    sim = simulate(g, K("w2"), Failure("down"))
    assert sim.answers[K("w1")] == Answer("hang", None)
    assert sim.answers[K("w0")] == Answer("error", 4.0)
    assert sim.load[K("w2")] == 2


def test_a_cycle_terminates_and_every_member_that_reaches_the_failure_fails():
    # a -> b -> c -> a, and c -> db; the entry calls a
    objs = [deployment("entry", depends_on="a", retry=R3),
            deployment("a", depends_on="b", retry=R3), deployment("b", depends_on="c", retry=R3),
            deployment("c", depends_on="a, db", retry=R3), deployment("db")]
    objs += [service(n) for n in ("a", "b", "c", "db")]
    g = graph(*objs)
    sim = simulate(g, K("db"), Failure("down"))
    assert {k[2] for k, a in sim.answers.items() if a.failed} == {"entry", "a", "b", "c", "db"}
    assert sim.cycle_edges == [(K("c"), K("a"))]  # followed once, never round again
    assert sim.entries[0].calls == 3 ** 4


def test_a_self_loop_terminates():
    g = graph(deployment("a", depends_on="a, db", retry=R3), deployment("db"), service("a"), service("db"))
    sim = simulate(g, K("db"), Failure("down"))
    assert sim.answers[K("a")].failed
    assert (K("a"), K("a")) in sim.cycle_edges


def test_error_rate_has_a_worst_case_and_an_expected_case():
    g = chain(["attempts=3, perTryTimeout=1s, timeout=10s"])
    sim = simulate(g, K("w1"), Failure("error-rate", error_rate=0.3))
    (entry,) = sim.entries
    assert entry.calls == 3  # worst case: every call fails
    assert entry.expected_calls == pytest.approx(1 + 0.3 + 0.09)
    assert entry.failure_probability == pytest.approx(0.3 ** 3)
    hop = sim.hop(K("w0"), K("w1"))
    assert hop.expected_tries == pytest.approx(1.39) and hop.failure_probability == pytest.approx(0.027)


def test_error_rate_expected_case_multiplies_through_layers():
    g = chain([R3, R3])
    sim = simulate(g, K("w2"), Failure("error-rate", error_rate=0.5))
    q1 = 0.5 ** 3
    e1 = 1 + 0.5 + 0.25
    e0 = 1 + q1 + q1 ** 2
    assert sim.entries[0].expected_calls == pytest.approx(e0 * e1)
    assert sim.entries[0].failure_probability == pytest.approx(q1 ** 3)
    assert sim.entries[0].calls == 9


def test_unaffected_workloads_are_left_out_and_entries_are_the_uncalled():
    g = graph(deployment("a", depends_on="db", retry=R3), deployment("b", depends_on="a", retry=R3),
              deployment("other", depends_on="x"), deployment("db"), deployment("x"),
              service("a"), service("db"), service("x"))
    sim = simulate(g, K("db"), Failure("down"))
    assert set(sim.answers) == {K("a"), K("b"), K("db")}
    assert [e.key for e in sim.entries] == [K("b")]
    assert entry_points(g) == [K("b"), K("other")]


def test_a_given_entry_limits_the_simulation_to_its_paths():
    g = graph(deployment("a", depends_on="db", retry=R3), deployment("b", depends_on="db"),
              deployment("db"), service("db"))
    sim = simulate(g, K("db"), Failure("down"), [K("b")])
    assert [e.key for e in sim.entries] == [K("b")] and K("a") not in sim.answers
    with pytest.raises(ValueError, match="does not call"):
        simulate(g, K("a"), Failure("down"), [K("b")])


def test_a_service_with_several_backends_may_send_every_call_to_the_failing_one():
    g = graph(deployment("api", depends_on="pool", retry=R3),
              deployment("blue", pod_labels={"pool": "x"}), deployment("green", pod_labels={"pool": "x"}),
              service("pool", selector={"pool": "x"}))
    sim = simulate(g, K("blue"), Failure("down"))
    assert sim.entries[0].answer.failed and sim.entries[0].calls == 3


def test_find_workload_by_name_namespace_or_service():
    g = graph(deployment("api", "a"), deployment("api", "b"), deployment("db", "data", kind="StatefulSet"),
              service("vector", "data", selector={"app": "db"}))
    assert find_workload(g, "db") == ("data", "StatefulSet", "db")
    assert find_workload(g, "api.b") == K("api", "b") == find_workload(g, "b/api")
    assert find_workload(g, "vector.data") == ("data", "StatefulSet", "db")
    with pytest.raises(ValueError, match="names 2 workloads"):
        find_workload(g, "api")
    with pytest.raises(ValueError, match="no workload or Service named nope"):
        find_workload(g, "nope")


# ----- blast radius ------------------------------------------------------------------------------
def examples_engine() -> Engine:
    from guywire.cli import build

    inv, policies, _, _, _ = build([str(EXAMPLES)], [])
    return Engine(policies or [baseline_policy()], inv)


def test_blast_radius_counts_callers_and_entry_points():
    g = chain([R3, R3, R3])
    radii = blast_radius(g)
    assert radii[K("w3")].workloads == 3 and radii[K("w3")].entry_points == 1
    assert radii[K("w3")].entries == (K("w0"),)
    assert radii[K("w0")].workloads == 0 and radii[K("w0")].entry_points == 1  # itself
    assert radii[K("w3")].annotation() == "entryPoints=1,workloads=3"
    assert top_blast_radii(radii, 2)[0][0] == K("w3")


def test_blast_radius_in_a_cycle_includes_the_other_members():
    g = graph(deployment("a", depends_on="b"), deployment("b", depends_on="a"), deployment("top", depends_on="a"),
              service("a"), service("b"))
    radii = blast_radius(g)
    assert radii[K("a")].workloads == 2  # b and top
    assert radii[K("b")].workloads == 2  # a and top
    assert radii[K("top")].workloads == 0


def test_blast_radius_agrees_with_simulating_each_workload_down():
    engine = examples_engine()
    radii = blast_radius(engine)
    for key in engine.graph.out:
        sim = simulate(engine.graph, key, Failure("down"))
        failed = {k for k, a in sim.answers.items() if a.failed} - {key}
        assert radii[key].workloads == len(failed), key
        assert radii[key].entry_points == len([e for e in sim.entries if e.answer.failed or e.key == key]), key


def test_blast_radius_is_fast_on_a_large_graph():
    import time

    objs = []
    for i in range(2000):
        deps = ", ".join(f"w{j}" for j in (i + 1, i + 7) if j < 2000)
        objs.append(deployment(f"w{i}", depends_on=deps or None))
        objs.append(service(f"w{i}"))
    g = graph(*objs)
    start = time.perf_counter()
    radii = blast_radius(g)
    assert time.perf_counter() - start < 2.0
    assert radii[K("w1999")].workloads == 1999


# ----- the command -------------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_simulate_examples_names_the_broken_endpoint_and_the_retry_storm(capsys):
    rc, out, err = run(capsys, "simulate", EXAMPLES, "--target", "vector-db", "--latency", "5s")
    assert rc == 0, err
    assert "What if data/vector-db answers 5s late?" in out
    assert "Breaks: ml/gateway, ml/finetune-reranker." in out
    assert "one request at ml/gateway sends up to 27 calls to data/vector-db" in out
    assert re.search(r"ml/gateway \(Deployment\)\s+FAILS after 9.3s\s+27 calls to data/vector-db per request \(27x\)",
                     out)
    assert "ml/gateway -(3x)-> ml/rag-orchestrator -(3x)-> ml/retriever -(3x)-> data/vector-db" in out
    assert len(out.splitlines()) <= 40, "fits one screen"


def test_simulate_with_rps_gives_absolute_load(capsys):
    rc, out, _ = run(capsys, "simulate", EXAMPLES, "--target", "vector-db.data", "--down", "--rps", "100",
                     "--entry", "gateway")
    assert rc == 0
    assert "2,700/s at 100 req/s" in out


def test_simulate_json(capsys):
    rc, out, _ = run(capsys, "simulate", EXAMPLES, "--target", "vector-db", "--error-rate", "30%", "-o", "json")
    assert rc == 0
    data = json.loads(out)
    gw = next(e for e in data["entries"] if e["workload"] == "ml/gateway")
    assert gw["callsToTarget"] == 27 and gw["broken"] is True
    assert math.isclose(gw["expectedCallsToTarget"], 1.0000196833874206 * 1.027729 * 1.39, rel_tol=1e-6)
    assert data["cycleEdgesNotFollowed"] == [["ml/retriever", "ml/reranker"]]


def test_simulate_html_is_self_contained(capsys):
    rc, out, _ = run(capsys, "simulate", EXAMPLES, "--target", "vector-db", "--latency", "5s", "-o", "html")
    assert rc == 0
    assert out.startswith("<!DOCTYPE html>") and "<svg" in out and "</html>" in out
    assert "<script" not in out and "http://" not in out.replace("http://www.w3.org/2000/svg", "")
    assert "#1 3x timeout" in out  # the hop nearest the failure, coloured first


def test_simulate_bad_target_is_an_error(capsys):
    rc, _, err = run(capsys, "simulate", EXAMPLES, "--target", "nope", "--down")
    assert rc == 2 and "no workload or Service named nope" in err
    rc, _, err = run(capsys, "simulate", EXAMPLES, "--target", "vector-db", "--error-rate", "lots")
    assert rc == 2 and "--error-rate" in err


def test_readme_shows_the_real_output(capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cmd = "$ guywire simulate examples/ --target vector-db --latency 5s\n"
    assert cmd in readme, "README section 'What if a dependency fails?' shows the command"
    shown = readme.split(cmd, 1)[1].split("```", 1)[0]
    rc, out, _ = run(capsys, "simulate", EXAMPLES, "--target", "vector-db", "--latency", "5s")
    assert rc == 0
    assert shown == out, "README.md shows other output than guywire simulate prints now; paste the new output"


def test_simulate_text_says_unbounded_where_no_timeout_bounds_a_wait(tmp_path, capsys):
    import yaml

    objs = [deployment("web", depends_on="api", retry="attempts=2, perTryTimeout=2s"), deployment("api", depends_on="db"),
            deployment("batch", depends_on="api"), deployment("db", kind="StatefulSet")]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    rc, out, _ = run(capsys, "simulate", path, "--target", "db", "--down")
    assert rc == 0
    assert re.search(r"ml/batch \(Deployment\)\s+NEVER ANSWERS \(unbounded\)", out)
    assert re.search(r"ml/web \(Deployment\)\s+FAILS after 4s", out)
    assert "ml/api waits with no timeout, so it never answers (ml/web gives up after 4s, but ml/api stays busy)." \
        in out
