"""check and simulate count the tries on a hop with the one function (mesh.tries_per_hop): the application's
attempts, each made through the caller's sidecar, which retries on its own. simulate nests the two loops."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from guywire.graph.mesh import HopTries

from .test_cli import run

FIXTURE = Path(__file__).resolve().parents[1] / "rules/GW-RTY-006/fail-app-and-mesh-both-retry.yaml"


def manifests(tmp_path, app: str, mesh: str) -> Path:
    text = FIXTURE.read_text().replace("attempts=3, perTryTimeout=20s, backoff=exponential", app) \
        .replace("retries: {attempts: 2, perTryTimeout: 20s", "retries: {" + mesh)
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


def check_tries(capsys, path) -> int:
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    (f,) = [f for f in json.loads(out)["findings"] if f["rule"] == "GW-RTY-001"]
    return int(re.search(r"tries ml/llm-server (\d+) times", f["message"]).group(1))


def simulated(capsys, path, *mode) -> dict:
    rc, out, _ = run(capsys, "simulate", path, "--target", "llm-server", *mode, "-o", "json")
    (hop,) = json.loads(out)["hops"]
    return hop


@pytest.mark.parametrize("app, mesh, app_tries", [
    ("attempts=2, backoff=exponential", "attempts: 3", 2),
    ("attempts=2, perTryTimeout=5s, timeout=12s, backoff=exponential", "attempts: 3, perTryTimeout: 2s", 2),
    ("attempts=3, perTryTimeout=20s, backoff=exponential", "attempts: 2, perTryTimeout: 20s", 3),
])
def test_check_and_simulate_count_the_same_tries(tmp_path, capsys, app, mesh, app_tries):
    path = manifests(tmp_path, app, mesh)
    wire = app_tries * (int(mesh.split()[1].rstrip(",")) + 1)
    assert check_tries(capsys, path) == wire
    hop = simulated(capsys, path, "--error-rate", "1")  # every try fails at once: nothing cuts a try short
    assert hop["tries"] == wire


def test_simulate_nests_the_sidecar_tries_under_each_application_try(tmp_path, capsys):
    # each application try may last 5s; the sidecar tries 2s at a time: 3 of its tries fit (2s, 2s, cut at 5s)
    path = manifests(tmp_path, "attempts=2, perTryTimeout=5s, timeout=12s, backoff=exponential",
                     "attempts: 3, perTryTimeout: 2s")
    assert check_tries(capsys, path) == 8
    hop = simulated(capsys, path, "--down")
    assert hop["tries"] == 2 * 3 and hop["seconds"] == pytest.approx(10.1, abs=0.2)
    rc, out, _ = run(capsys, "simulate", path, "--target", "llm-server", "--down")
    assert "6 tries" in out and "(2 in the application x 3 in the sidecar)" in out


# ----- the mesh's implicit retries and retry budgets: the same count in check and simulate ------------------
RTY = Path(__file__).resolve().parents[1] / "rules"


def check_figures(capsys, path) -> tuple[dict, dict, dict]:
    """What check says: GW-RTY-002's amplification by workload, the calls of each hop on its path (parsed from
    the message) and GW-RTY-001's tries by workload."""
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    findings = json.loads(out)["findings"]
    amplification, factors, tries = {}, {}, {}
    for f in findings:
        source = f"{f['workload']['namespace']}/{f['workload']['name']}"
        if f["rule"] == "GW-RTY-002":
            amplification[source] = f["observed"]
            text = f["message"].split(": ", 1)[1]
            steps = re.findall(r"-\(([\d.]+)x[^)]*\)-> (\S+)", text)
            names = [n.rstrip(".") for n in f["path"]]
            assert [n.rstrip(".") for _, n in steps] == names[1:]
            factors.update({(a, b): float(x) for a, b, (x, _) in zip(names, names[1:], steps)})
        if f["rule"] == "GW-RTY-001":
            tries[source] = f["observed"]
    return amplification, factors, tries


def simulation(capsys, path, target, rate="1") -> dict:
    rc, out, _ = run(capsys, "simulate", path, "--target", target, "--error-rate", rate, "-o", "json")
    return json.loads(out)


@pytest.mark.parametrize("fixture, target, hops, storm, amplification", [
    # no retry configured: Istio's default, 3 tries a hop, on three hops
    ("GW-RTY-002/fail-implicit-mesh-retries.yaml", "vector-db.ml",
     {("ml/gateway", "ml/orchestrator"): (3, 3), ("ml/orchestrator", "ml/retriever"): (3, 3),
      ("ml/retriever", "ml/vector-db"): (3, 3)}, 27, 27),
    # 3 application tries x 2 by Linkerd a hop, the proxies' extra calls held to 25% by the budget: 3.75
    ("GW-RTY-002/fail-linkerd-service-profile-budget.yaml", "retriever.ml",
     {("ml/gateway", "ml/orchestrator"): (6, 3.75), ("ml/orchestrator", "ml/retriever"): (6, 3.75)}, 14.0625, 14.0625),
    # 3 application tries x 3 by the VirtualService, the sidecar's extra calls held to 20%: 3.6 on the first hop
    # (check's 12.96 is for the path on to ml/retriever, which the next test follows)
    ("GW-RTY-002/fail-budget-named.yaml", "orchestrator.ml", {("ml/gateway", "ml/orchestrator"): (9, 3.6)}, 3.6,
     12.96),
])
def test_check_and_simulate_agree_on_implicit_retries_and_budgets(capsys, fixture, target, hops, storm,
                                                                  amplification):
    path = RTY / fixture
    found, factors, tries = check_figures(capsys, path)
    assert found == {"ml/gateway": amplification}
    sim = simulation(capsys, path, target)  # every try fails at once: no timeout cuts a try
    assert {(h["from"], h["to"]): (h["tries"], h["calls"]) for h in sim["hops"]} == hops
    for hop, (n, calls) in hops.items():
        assert factors[hop] == calls  # GW-RTY-002's factor for the hop
        if n > 3:
            assert tries[hop[0]] == n  # GW-RTY-001's count (it reports above maxAttempts 3)
    (entry,) = sim["entries"]
    assert [p["calls"] for p in entry["path"]] == [1, *(calls for _, calls in hops.values())]
    assert entry["callsToTarget"] == storm
    rc, out, _ = run(capsys, "simulate", path, "--target", target, "--error-rate", "1")
    assert f"sends up to {storm} calls" in out


def test_a_timeout_that_cuts_tries_keeps_simulate_below_check(capsys):
    # ml/orchestrator takes 1.2s to fail (9 tries with backoff); ml/gateway's sidecar waits 1s a try, cut by the
    # application's 1s per-try timeout, so it never retries: 3 tries on that hop, not check's 3.6 calls
    path = RTY / "GW-RTY-002/fail-budget-named.yaml"
    amplification, factors, tries = check_figures(capsys, path)
    sim = simulation(capsys, path, "retriever.ml")
    hop = {(h["from"], h["to"]): h for h in sim["hops"]}
    inner, outer = hop[("ml/orchestrator", "ml/retriever")], hop[("ml/gateway", "ml/orchestrator")]
    assert (inner["tries"], inner["calls"]) == (tries["ml/orchestrator"], factors[("ml/orchestrator", "ml/retriever")])
    assert (outer["tries"], outer["calls"], outer["eachTry"]) == (3, 3, "per-try timeout")
    assert sim["entries"][0]["callsToTarget"] == 10.8 < amplification["ml/gateway"] == 12.96


def test_implicit_mesh_retry_on_one_hop(tmp_path, capsys):
    # 2 application attempts in a meshed namespace, no VirtualService: Istio's default retries twice under each
    text = FIXTURE.read_text()
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml, labels: {istio-injection: enabled}}\n---\n" + \
        text[:text.index("---\napiVersion: networking.istio.io")].replace("attempts=3, perTryTimeout=20s", "attempts=2")
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    report = json.loads(out)
    assert report["summary"]["graph"]["maxAmplification"] == 6
    (f,) = [f for f in report["findings"] if f["rule"] == "GW-RTY-001"]
    assert f["observed"] == 6 and "implicit mesh retry" in f["message"]
    assert check_tries(capsys, path) == 6
    hop = simulated(capsys, path, "--error-rate", "1")
    assert (hop["tries"], hop["calls"], hop["attempts"]) == (6, 6, 6)
    rc, out, _ = run(capsys, "simulate", path, "--target", "llm-server", "--error-rate", "1")
    assert "(2 in the application x 3 in the sidecar; implicit mesh retry)" in out
    # graph draws the hop with the same tries: its label, its JSON, the implicit retry named
    rc, out, _ = run(capsys, "graph", "-o", "json", path)
    (edge,) = [e for e in json.loads(out)["edges"] if e["to"].endswith("llm-server")]
    assert (edge["tries"], edge["calls"], edge["attempts"]) == (6, 6, 2)
    assert edge["mesh"]["implicit"] is True and edge["mesh"]["applicationAttempts"] == 2
    rc, out, _ = run(capsys, "graph", path)
    assert re.search(r"llm-server .*\[6x", out), out


def test_a_budget_caps_the_expected_calls_as_it_caps_the_worst_case():
    q = 0.5
    plain = HopTries(app=3, sidecar=3)
    assert plain.expected(q) == pytest.approx((sum(q ** i for i in range(9)), q ** 9))  # tries one after another
    budget = HopTries(app=3, sidecar=3, budget=0.2)
    assert (budget.tries, budget.calls) == (9, 3.6) and budget.expected(1.0) == pytest.approx((3.6, 1.0))
    calls, fails = budget.expected(q)
    # a share f of the sidecar's loops retries: 1 + f x (0.5 + 0.25) = 1.2, f = 0.2 / 0.75; a loop fails with
    # (1 - f) x 0.5 + f x 0.125 = 0.4, and the application repeats it: 1.2 x (1 + 0.4 + 0.16) calls, 0.4^3 fails
    assert (calls, fails) == pytest.approx((1.2 * 1.56, 0.064))
    assert HopTries(app=3, sidecar=3, budget=5).expected(q) == pytest.approx(plain.expected(q))  # never binds
