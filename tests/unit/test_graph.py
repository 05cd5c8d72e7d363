"""The dependency graph: edges from annotations and env, resolution, cycles, depth, amplification, and
incremental changes that give exactly what a rebuild from scratch gives."""
from __future__ import annotations

import copy
import random
import time

import pytest

from guywire.views.annotations import DependencyRef, RetryPolicy, parse_declarations
from guywire.engine.evaluator import Engine
from guywire.graph.dependency_graph import Graph, env_hosts, service_hosts
from guywire.views.inventory import Inventory
from guywire.model.policy import baseline_policy, parse_policy
from guywire.views.workload import PodTemplate, Workload

from .manifests import container, deployment, inventory, namespace, service, view


def D(name, ns="ml"):
    return (ns, "Deployment", name)


def edges_of(g: Graph, key):
    return {(e.dep.name, e.namespace): e for e in g.out[key]}


# ----- env inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("env_name, value, hosts", [
    ("LLM_URL", "http://llm-server:8000/v1", [("llm-server", 8000)]),
    ("OPENAI_BASE_URL", "https://llm.ml.svc.cluster.local/v1", [("llm.ml.svc.cluster.local", None)]),
    ("QDRANT", "vector-db.data.svc.cluster.local:6333", [("vector-db.data.svc.cluster.local", 6333)]),
    ("REDIS", "redis:6379", [("redis", 6379)]),
    ("KAFKA_BROKERS", "k1:9092,k2:9092", [("k1", 9092), ("k2", 9092)]),
    ("VECTOR_DB_HOST", "vector-db", [("vector-db", None)]),
    ("SOMETHING", "vector-db.data.svc.cluster.local", [("vector-db.data.svc.cluster.local", None)]),
    ("MODEL_NAME", "vector-db", []),  # a bare word is a host only in a *_HOST / *_URL-like variable
    ("LOG_LEVEL", "info", []),
    ("TIMEOUT", "30", []),
    ("DATABASE_URL", "postgres://admin:hunter2@db:5432/x", [("db", 5432)]),
    ("BAD_URL", "http://[::1", []),
    ("HUGE_URL", "http://x:1/" + "a" * 5000, []),
])
def test_env_hosts(env_name, value, hosts):
    assert env_hosts(env_name, value) == hosts


@pytest.mark.parametrize("host, own, key", [
    ("svc", "ml", ("ml", "svc")),
    ("svc.data", "ml", ("data", "svc")),
    ("svc.data.svc", "ml", ("data", "svc")),
    ("svc.data.svc.cluster.local", "ml", ("data", "svc")),
    ("SVC.Data.svc.cluster.local.", "ml", ("data", "svc")),
    ("api.openai.com", "ml", None),
    ("bad_name", "ml", None),
])
def test_service_hosts(host, own, key):
    assert service_hosts(host, own) == key


def test_env_urls_and_host_ports_become_undeclared_edges():
    g = Graph(inventory(
        deployment("caller", env={"EMBEDDER_URL": "http://embedder:8080", "DB": "vector-db.data.svc.cluster.local:6333",
                                  "RERANK_HOST": "reranker", "NOT_A_HOST": "reranker", "NOWHERE_URL": "http://ghost:80"}),
        deployment("embedder"), service("embedder"),
        deployment("vector-db", "data"), service("vector-db", "data"),
        deployment("other"), service("reranker", selector={"app": "other"}),
    ))
    edges = edges_of(g, D("caller"))
    assert set(edges) == {("embedder", "ml"), ("vector-db", "data"), ("reranker", "ml"), ("ghost", "ml")}, \
        "a host that names no Service among the inputs is an edge to an unresolved Service"
    ghost = edges.pop(("ghost", "ml"))
    assert not ghost.resolved and ghost.targets == () and ghost.label == "ml/ghost (unresolved)"
    for e in edges.values():
        assert not e.declared and e.resolved and e.inferred_from.startswith("app/")
    assert edges[("embedder", "ml")].targets == (D("embedder"),)
    assert edges[("vector-db", "data")].targets == (D("vector-db", "data"),)
    assert edges[("reranker", "ml")].targets == (D("other"),)
    assert edges[("reranker", "ml")].inferred_from == "app/RERANK_HOST"


def test_env_dependency_already_declared_is_one_declared_edge():
    g = Graph(inventory(
        deployment("caller", depends_on="embedder", env={"EMBEDDER_URL": "http://embedder.ml.svc.cluster.local:8080"}),
        deployment("embedder"), service("embedder"),
    ))
    (edge,) = g.out[D("caller")]
    assert edge.declared and edge.targets == (D("embedder"),)


def test_env_dependency_declared_by_workload_name_is_not_repeated():
    g = Graph(inventory(
        deployment("caller", depends_on="embedder-deploy", env={"EMBEDDER_URL": "http://embedder:8080"}),
        deployment("embedder-deploy", pod_labels={"svc": "embedder"}), service("embedder", selector={"svc": "embedder"}),
    ))
    assert len(g.out[D("caller")]) == 1 and g.out[D("caller")][0].declared


def test_a_workload_naming_its_own_service_is_no_dependency():
    g = Graph(inventory(
        deployment("llm", env={"PUBLIC_URL": "http://llm:8000", "SELF_HOST": "llm.ml.svc.cluster.local"}),
        service("llm"),
    ))
    assert g.out[D("llm")] == []
    assert g.sccs == {}


def test_env_values_are_never_shown():
    secret = "hunter2-s3cr3t"
    engine = Engine([baseline_policy()], inventory(
        deployment("caller", env={"DATABASE_URL": f"postgres://admin:{secret}@db:5432/app"}),
        deployment("db"), service("db", port=5432),
    ))
    result = engine.evaluate_all()
    undeclared = [f for f in result.findings if f.rule == "GW-DEP-006"]
    assert len(undeclared) == 1
    assert "DATABASE_URL" in undeclared[0].message
    for f in result.findings:
        assert secret not in f.render() and "admin" not in f.render()
        assert secret not in str(f.to_dict())
    from guywire.render.graph_formats import render_dot, render_graph_json, render_graph_text, render_mermaid
    for render in (render_dot, render_graph_json, render_graph_text, render_mermaid):
        assert secret not in render(engine)


# ----- resolution --------------------------------------------------------------------------------------


def test_service_selector_resolves_to_every_matching_workload():
    g = Graph(inventory(
        deployment("gw", depends_on="llm"),
        deployment("llm-a", pod_labels={"serve": "llm"}), deployment("llm-b", kind="StatefulSet", pod_labels={"serve": "llm"}),
        deployment("llm-other", "other", pod_labels={"serve": "llm"}),  # other namespace: not selected
        deployment("nope", pod_labels={"serve": "llm2"}),
        service("llm", selector={"serve": "llm"}),
    ))
    (edge,) = g.out[D("gw")]
    assert edge.service == ("ml", "llm") and edge.resolved
    assert edge.targets == (D("llm-a"), ("ml", "StatefulSet", "llm-b"))
    assert g.selected_by[D("llm-a")] == {("ml", "llm")}
    assert g.callers[D("llm-a")] == {D("gw")}


def test_service_with_multi_label_selector_needs_every_label():
    g = Graph(inventory(
        deployment("gw", depends_on="api"),
        deployment("v1", pod_labels={"tier": "api", "track": "stable"}),
        deployment("v2", pod_labels={"tier": "api", "track": "canary"}),
        service("api", selector={"tier": "api", "track": "stable"}),
    ))
    assert g.out[D("gw")][0].targets == (D("v1"),)


def test_service_without_backends_resolves_but_has_no_targets():
    g = Graph(inventory(deployment("gw", depends_on="empty, no-selector"), service("empty", selector={"app": "none"}),
                        service("no-selector", selector={})))
    for e in g.out[D("gw")]:
        assert e.resolved and e.targets == () and not e.external


def test_workload_name_resolution_prefers_deployment():
    g = Graph(inventory(
        deployment("gw", depends_on="worker, batch, ghost, worker.other"),
        deployment("worker", kind="StatefulSet"), deployment("worker"),
        deployment("batch", kind="CronJob"),
        deployment("worker", "other", kind="Pod"),
    ))
    edges = edges_of(g, D("gw"))
    assert edges[("worker", "ml")].targets == (D("worker"),)
    assert edges[("batch", "ml")].targets == (("ml", "CronJob", "batch"),)
    assert edges[("worker", "other")].targets == (("other", "Pod", "worker"),)
    assert not edges[("ghost", "ml")].resolved and edges[("ghost", "ml")].targets == ()
    assert edges[("ghost", "ml")].label == "ml/ghost (unresolved)"


def test_external_hosts_and_external_name_services_are_leaves():
    g = Graph(inventory(
        deployment("gw", depends_on="external:api.openai.com, openai-proxy", retry="attempts=2, timeout=5s"),
        service("openai-proxy", external_name="api.openai.com"),
    ))
    edges = edges_of(g, D("gw"))
    ext = edges[("api.openai.com", "ml")]
    assert ext.external and ext.resolved and ext.targets == () and ext.service is None
    assert ext.label == "external:api.openai.com"
    proxy = edges[("openai-proxy", "ml")]
    assert proxy.external and proxy.resolved and proxy.service == ("ml", "openai-proxy") and proxy.targets == ()
    a = g.analysis[D("gw")]
    assert (a.depth, a.amplification) == (1, 2)


def test_cross_namespace_dependency_resolves_in_the_named_namespace():
    g = Graph(inventory(deployment("gw", depends_on="vector-db.data.svc.cluster.local:6333"),
                        deployment("vector-db", "data"), service("vector-db", "data"),
                        deployment("vector-db"), service("vector-db")))
    assert g.out[D("gw")][0].targets == (D("vector-db", "data"),)


# ----- cycles, depth, amplification -----------------------------------------------------------------------


def bare(name: str, deps: list[str], ns: str = "ml", attempts: int = 1) -> Workload:
    """A workload built directly (fast) with depends-on ``deps``."""
    decl = parse_declarations({})
    decl.depends_on = [DependencyRef(raw=d, name=d) for d in deps]
    if attempts > 1:
        decl.retry = RetryPolicy(attempts=attempts, per_try_timeout=1.0, backoff="exponential")
    return Workload(kind="Deployment", namespace=ns, name=name, labels={}, annotations={},
                    templates=[PodTemplate(role=None, labels={"app": name}, annotations={}, containers=[])], decl=decl)


def graph_of(*ws: Workload) -> Graph:
    inv = Inventory()
    for w in ws:
        inv.add(w)
    return Graph(inv)


def test_fifty_node_cycle_is_one_component():
    n = 50
    g = graph_of(*(bare(f"w{i}", [f"w{(i + 1) % n}"]) for i in range(n)))
    assert len(g.sccs) == 1
    (members,) = g.sccs.values()
    assert len(members) == n
    cycle = g.cycle_of(D("w0"))
    assert cycle[0] == cycle[-1] == D("w0") and len(cycle) == n + 1
    assert all(g.analysis[D(f"w{i}")].depth == 0 for i in range(n)), "edges inside a cycle add no depth"


def test_self_loop_is_a_cycle():
    g = graph_of(bare("loop", ["loop"]), bare("a", ["b"]), bare("b", []))
    assert list(g.sccs.values()) == [[D("loop")]]
    assert g.cycle_of(D("loop")) == [D("loop"), D("loop")]
    assert g.cycle_of(D("a")) is None


def test_two_cycles_joined_by_an_edge_are_two_components():
    g = graph_of(bare("a", ["b"]), bare("b", ["a", "c"]), bare("c", ["d"]), bare("d", ["c", "e"]), bare("e", []))
    comps = sorted(sorted(k[2] for k in m) for m in g.sccs.values())
    assert comps == [["a", "b"], ["c", "d"]]
    assert g.analysis[D("d")].depth == 1  # d -> e
    assert g.analysis[D("c")].depth == 0  # c's only edge is inside its component; d's exit is d's own
    assert g.analysis[D("b")].depth == 1  # b -> c


def test_twenty_thousand_node_chain():
    n = 20_000
    start = time.perf_counter()
    g = graph_of(*(bare(f"w{i}", [f"w{i + 1}"] if i + 1 < n else []) for i in range(n)))
    elapsed = time.perf_counter() - start
    assert g.sccs == {}
    assert g.analysis[D("w0")].depth == n - 1
    assert g.analysis[D(f"w{n - 1}")].depth == 0
    assert g.stats()["maxDepth"] == n - 1
    assert elapsed < 5, f"building a {n}-node chain took {elapsed:.1f}s"
    # closing the chain into one 20,000-node cycle, incrementally
    g.upsert_workload(bare(f"w{n - 1}", ["w0"]))
    assert len(g.sccs) == 1 and len(next(iter(g.sccs.values()))) == n
    assert g.analysis[D("w0")].depth == 0
    assert len(g.cycle_of(D("w5"))) == n + 1


def test_depth_and_amplification_paths():
    g = Graph(inventory(
        deployment("gateway", depends_on="orchestrator", retry="attempts=3, perTryTimeout=10s, backoff=exponential"),
        deployment("orchestrator", depends_on="retriever, llm",
                   retry="attempts=3, perTryTimeout=2s, backoff=exponential",
                   annotations={"guywire.dev/retry.llm": "attempts=2, perTryTimeout=8s, backoff=exponential"}),
        deployment("retriever", depends_on="vector-db.data", retry="attempts=3, perTryTimeout=1s, backoff=exponential"),
        deployment("vector-db", "data", depends_on="external:s3.amazonaws.com"),
        deployment("llm"),
        service("orchestrator"), service("retriever"), service("vector-db", "data"), service("llm"),
    ))
    a = g.analysis[D("gateway")]
    assert (a.depth, a.amplification) == (4, 27)
    assert g.depth_path(D("gateway")) == ["ml/gateway", "ml/orchestrator", "ml/retriever", "data/vector-db",
                                          "external:s3.amazonaws.com"]
    assert g.amplification_path(D("gateway")) == [("ml/gateway", 1), ("ml/orchestrator", 3), ("ml/retriever", 3),
                                                  ("data/vector-db", 3)]
    # a hop with one attempt multiplies nothing, so the amplification path stops where the calls stop growing
    assert (g.analysis[D("orchestrator")].depth, g.analysis[D("orchestrator")].amplification) == (3, 9)
    assert (g.analysis[D("llm")].depth, g.analysis[D("llm")].amplification) == (0, 1)
    wc, edge = g.callee_worst_case(D("orchestrator"))
    assert wc == 16.0 and edge.dep.name == "llm"
    assert g.stats() == {"workloads": 5, "edges": 5, "cycles": 0, "maxDepth": 4, "maxAmplification": 27}


def test_amplification_multiplies_across_fan_out_and_takes_the_worst_branch():
    g = graph_of(bare("a", ["b", "c"], attempts=2), bare("b", ["d"], attempts=5), bare("c", ["d"], attempts=1),
                 bare("d", []))
    assert g.analysis[D("a")].amplification == 10
    assert [n for n, _ in g.amplification_path(D("a"))] == ["ml/a", "ml/b", "ml/d"]


def test_amplification_ignores_edges_inside_a_cycle():
    g = graph_of(bare("a", ["b"], attempts=3), bare("b", ["a", "c"], attempts=3), bare("c", []))
    assert g.analysis[D("a")].amplification == 1  # a's only edge is inside the cycle
    assert g.analysis[D("b")].amplification == 3


# ----- incremental changes == rebuild ------------------------------------------------------------------

NAMESPACES = ("a", "b")
NAMES = [f"w{i}" for i in range(10)]
SERVICES = [f"s{i}" for i in range(6)]
APPS = ["x", "y", "z", "q"]


def random_workload(rng: random.Random) -> dict:
    ns = rng.choice(NAMESPACES)
    name = rng.choice(NAMES)
    kind = rng.choice(["Deployment", "Deployment", "Deployment", "StatefulSet", "Job"])
    deps = []
    for _ in range(rng.randint(0, 4)):
        target = rng.choice(NAMES + SERVICES + ["ghost", "external:api.example.com"])
        if not target.startswith("external") and rng.random() < 0.25:
            target += "." + rng.choice(NAMESPACES)
        if rng.random() < 0.1:
            target += ":8080"
        deps.append(target)
    env = {}
    for i in range(rng.randint(0, 3)):
        host = rng.choice(SERVICES + NAMES)
        if rng.random() < 0.3:
            host += "." + rng.choice(NAMESPACES) + ".svc.cluster.local"
        env[rng.choice([f"DEP{i}_URL", f"DEP{i}_HOST", f"X{i}"])] = rng.choice(
            [f"http://{host}:8000/v1", f"{host}:9000", host])
    annotations = {}
    if rng.random() < 0.3 and deps:
        annotations["guywire.dev/retry." + deps[0].split(":")[0].split(".")[0]] = \
            f"attempts={rng.randint(1, 4)}, perTryTimeout={rng.randint(1, 9)}s"
    ports = [{"name": "metrics", "containerPort": 9090}] if rng.random() < 0.3 else None
    return deployment(
        name, ns, kind=kind, depends_on=", ".join(deps) if deps else None,
        retry=f"attempts={rng.randint(1, 4)}, perTryTimeout={rng.randint(1, 9)}s" if rng.random() < 0.7 else None,
        annotations=annotations, pod_labels={"app": rng.choice(APPS), "tier": rng.choice(["t1", "t2"])},
        containers=[container(env=env, ports=ports, probes=rng.random() < 0.5)],
    )


def random_service(rng: random.Random) -> dict:
    ns = rng.choice(NAMESPACES)
    name = rng.choice(SERVICES + NAMES[:3])
    r = rng.random()
    if r < 0.1:
        return service(name, ns, external_name="api.example.com")
    if r < 0.2:
        return service(name, ns, selector={})
    selector = {"app": rng.choice(APPS)}
    if rng.random() < 0.3:
        selector["tier"] = rng.choice(["t1", "t2"])
    return service(name, ns, selector=selector, labels={"team": rng.choice(["m", "n"])})


def random_change(rng: random.Random, inv: Inventory):
    """One change: ('upsert', view) or ('remove', kind, namespace, name)."""
    r = rng.random()
    if r < 0.45:
        return ("upsert", view(random_workload(rng)))
    if r < 0.6 and inv.workloads:
        ns, kind, name = rng.choice(sorted(inv.workloads))
        return ("remove", kind, ns, name)
    if r < 0.85:
        return ("upsert", view(random_service(rng)))
    if inv.services:
        ns, name = rng.choice(sorted(inv.services))
        return ("remove", "Service", ns, name)
    return ("upsert", view(random_service(rng)))


def fresh_inventory(inv: Inventory) -> Inventory:
    return copy.deepcopy(inv)


def edge_facts(g: Graph) -> dict:
    return {k: [(e.dep.raw, e.dep.name, e.namespace, e.declared, e.inferred_from, e.service, e.targets, e.resolved,
                 e.external, e.retry) for e in edges] for k, edges in g.out.items()}


def graph_facts(g: Graph) -> dict:
    def scc(key):
        a = g.analysis[key]
        return frozenset(g.sccs[a.scc]) if a.scc in g.sccs else None

    return {
        "keys": set(g.out),
        "analysed": set(g.analysis),
        "edges": edge_facts(g),
        "analysis": {k: (a.depth, a.amplification, scc(k)) for k, a in g.analysis.items()},
        "paths": {k: (g.depth_path(k), g.amplification_path(k), g.cycle_of(k)) for k in g.out},
        "sccs": sorted(sorted(m) for m in g.sccs.values()),
        "callers": {k: v for k, v in g.callers.items() if v},
        "selected_by": {k: v for k, v in g.selected_by.items() if v},
        "backends": {k: v for k, v in g.backends.items() if v},
        "stats": g.stats(),
    }


def apply(g: Graph, change) -> set:
    if change[0] == "upsert":
        v = change[1]
        return g.upsert_service(v) if v.__class__.__name__ == "Service" else g.upsert_workload(v)
    _, kind, ns, name = change
    return g.remove_service((ns, name)) if kind == "Service" else g.remove_workload((ns, kind, name))


def start_inventory(rng: random.Random) -> Inventory:
    inv = Inventory()
    for _ in range(14):
        inv.add(view(random_workload(rng)))
    for _ in range(6):
        inv.add(view(random_service(rng)))
    return inv


@pytest.mark.parametrize("seed", range(8))
def test_incremental_graph_equals_rebuild(seed):
    rng = random.Random(seed)
    g = Graph(start_inventory(rng))
    assert graph_facts(g) == graph_facts(Graph(fresh_inventory(g.inv)))
    for step in range(60):
        change = random_change(rng, g.inv)
        before = graph_facts(g)
        apply(g, change)
        expected = graph_facts(Graph(fresh_inventory(g.inv)))
        got = graph_facts(g)
        for part in expected:
            assert got[part] == expected[part], (f"seed {seed} step {step}: {part} differs after {change}; "
                                                 f"before: {before[part]}")


def test_incremental_service_added_after_the_workload_that_names_it_in_env():
    # The operator sees objects in any order: a workload's env may name a Service that arrives later.
    g = Graph(inventory(deployment("caller", env={"EMBEDDER_URL": "http://embedder:8080"}), deployment("embedder")))
    (before,) = g.out[D("caller")]
    assert before.service is None and before.targets == (D("embedder"),), "the host names the workload itself"
    g.upsert_service(view(service("embedder")))
    assert [(e.service, e.targets) for e in g.out[D("caller")]] == [(("ml", "embedder"), (D("embedder"),))]
    assert edge_facts(g) == edge_facts(Graph(fresh_inventory(g.inv)))
    g.remove_service(("ml", "embedder"))
    assert [(e.service, e.targets) for e in g.out[D("caller")]] == [(None, (D("embedder"),))]
    assert edge_facts(g) == edge_facts(Graph(fresh_inventory(g.inv)))


def test_incremental_self_service_gains_another_backend():
    g = Graph(inventory(deployment("llm", env={"PEER_URL": "http://llm:8000"}), service("llm")))
    assert g.out[D("llm")] == []
    g.upsert_workload(view(deployment("llm-canary", pod_labels={"app": "llm"})))
    expected = Graph(fresh_inventory(g.inv))
    assert edge_facts(g) == edge_facts(expected)
    assert g.out[D("llm")] and g.out[D("llm")][0].targets == (D("llm"), D("llm-canary"))


def test_removing_a_self_loop_removes_its_cycle():
    g = graph_of(bare("loop", ["loop"]), bare("a", []))
    assert len(g.sccs) == 1
    g.remove_workload(D("loop"))
    assert g.sccs == {} and g.stats()["cycles"] == 0


def test_a_removed_workload_leaves_no_name_behind():
    g = Graph(inventory(deployment("a")))
    for i in range(3):
        g.upsert_workload(view(deployment(f"run-{i}", kind="Job")))
        g.remove_workload(("ml", "Job", f"run-{i}"))
    assert g.by_name == {("ml", "a"): [D("a")]}


# ----- the engine, incrementally -----------------------------------------------------------------------------

POLICIES = [
    parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "strict"},
                  "spec": {"rules": {"dependencies": {"maxFanOut": 2, "maxDepth": 2,
                                                      "allowCrossNamespace": ["b"]},
                                     "retries": {"maxAmplification": 4}, "complexity": {"maxScore": 12}},
                           "overrides": [{"rule": "GW-OBS-*", "severity": "Low"}]}}),
    parse_policy({"kind": "ComplexityPolicy", "metadata": {"name": "local", "namespace": "a"},
                  "spec": {"overrides": [{"rule": "GW-OBS-002", "severity": "Critical"}]}}),
    parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "ml-teams"},
                  "spec": {"match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}},
                           "overrides": [{"rule": "GW-OBS-006", "disabled": True}]}}),
    parse_policy({"kind": "ClusterComplexityPolicy", "metadata": {"name": "gpu"},
                  "spec": {"match": {"kinds": ["StatefulSet"]}}}),
]


def engine_facts(engine: Engine) -> dict:
    return {k: [f.to_dict() for f in engine.findings_for(k)] for k in engine.inventory.workloads}


def random_engine_change(rng: random.Random, inv: Inventory):
    r = rng.random()
    if r < 0.08:
        return ("upsert", view(namespace(rng.choice(NAMESPACES), {"team": rng.choice(["ml", "data"])})))
    if r < 0.12:
        return ("upsert", view({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                                "metadata": {"name": "mon", "namespace": rng.choice(NAMESPACES)},
                                "spec": {"selector": {"matchLabels": {"team": rng.choice(["m", "n"])}}}}))
    if r < 0.14 and inv.monitors:
        ns, kind, name = rng.choice(sorted(inv.monitors))
        return ("remove", kind, ns, name)
    return random_change(rng, inv)


@pytest.mark.parametrize("seed", range(5))
def test_incremental_engine_equals_full_evaluation(seed):
    rng = random.Random(1000 + seed)
    inv = start_inventory(rng)
    inv.add(view(namespace("a", {"team": "ml"})))
    engine = Engine(POLICIES, inv)
    engine.evaluate_all()
    for step in range(40):
        change = random_engine_change(rng, engine.inventory)
        if change[0] == "upsert":
            engine.upsert(change[1])
        else:
            engine.remove(*change[1:])
        fresh = Engine(POLICIES, fresh_inventory(engine.inventory))
        fresh.evaluate_all()
        got, expected = engine_facts(engine), engine_facts(fresh)
        assert set(got) == set(expected)
        for key in expected:
            assert got[key] == expected[key], f"seed {seed} step {step}: findings of {key} differ after {change}"
        assert set(engine.results) == set(engine.inventory.workloads)


def test_engine_new_caller_makes_the_callee_serving():
    # A workload with no port and no Service is not checked for a readiness probe until something calls it.
    quiet = deployment("worker", containers=[container(probes=False)])
    engine = Engine([baseline_policy()], inventory(quiet))
    engine.evaluate_all()
    assert "GW-OBS-001" not in {f.rule for f in engine.findings_for(D("worker"))}
    engine.upsert(view(deployment("caller", depends_on="worker")))
    assert "GW-OBS-001" in {f.rule for f in engine.findings_for(D("worker"))}
    engine.remove("Deployment", "ml", "caller")
    assert "GW-OBS-001" not in {f.rule for f in engine.findings_for(D("worker"))}


def test_engine_service_relabelled_for_a_service_monitor():
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "mon", "namespace": "ml"}, "spec": {"selector": {"matchLabels": {"scrape": "yes"}}}}
    engine = Engine([baseline_policy()], inventory(deployment("llm"), service("llm"), monitor))
    engine.evaluate_all()
    assert "GW-OBS-003" in {f.rule for f in engine.findings_for(D("llm"))}
    engine.upsert(view(service("llm", labels={"scrape": "yes"})))
    assert "GW-OBS-003" not in {f.rule for f in engine.findings_for(D("llm"))}


# ----- Istio VirtualServices, incrementally ---------------------------------------------------------------


def random_virtual_service(rng: random.Random) -> dict:
    ns = rng.choice(NAMESPACES)
    host = rng.choice([rng.choice(SERVICES + NAMES), f"{rng.choice(SERVICES)}.{rng.choice(NAMESPACES)}",
                       f"{rng.choice(SERVICES)}.{rng.choice(NAMESPACES)}.svc.cluster.local",
                       f"*.{rng.choice(NAMESPACES)}.svc.cluster.local", "api.example.com"])
    route: dict = {"route": [{"destination": {"host": host}}]}
    if rng.random() < 0.7:
        route["retries"] = {"attempts": rng.randint(0, 3), "perTryTimeout": f"{rng.randint(1, 9)}s"}
    if rng.random() < 0.5:
        route["timeout"] = f"{rng.randint(1, 30)}s"
    spec: dict = {"hosts": [host], "http": [route]}
    if rng.random() < 0.15:
        spec["gateways"] = ["istio-system/ingress"]
    if rng.random() < 0.15:
        spec["exportTo"] = ["."]
    return {"apiVersion": rng.choice(["networking.istio.io/v1", "networking.istio.io/v1beta1"]),
            "kind": "VirtualService", "metadata": {"name": f"vs{rng.randint(0, 3)}", "namespace": ns}, "spec": spec}


def mesh_facts(g: Graph) -> dict:
    return {**graph_facts(g), "mesh": {k: [(e.dep.raw, e.app_retry, e.mesh) for e in edges]
                                       for k, edges in g.out.items()}}


@pytest.mark.parametrize("seed", range(6))
def test_incremental_graph_with_virtual_services_equals_rebuild(seed):
    # A VirtualService changes the retries of every call to the hosts it covers (before and after the
    # change): those callers' edges, and their ancestors' amplification, are rebuilt.
    rng = random.Random(500 + seed)
    g = Graph(start_inventory(rng))
    for step in range(60):
        r = rng.random()
        if r < 0.3:
            change = ("upsert", view(random_virtual_service(rng)))
            got_affected = g.upsert_mesh(change[1])
        elif r < 0.4 and g.inv.meshes:
            key = rng.choice(sorted(g.inv.meshes))
            change = ("remove", *key)
            got_affected = g.remove_mesh(key)
        else:
            change = random_change(rng, g.inv)
            got_affected = apply(g, change)
        assert got_affected <= set(g.inv.workloads)
        expected, got = mesh_facts(Graph(fresh_inventory(g.inv))), mesh_facts(g)
        for part in expected:
            assert got[part] == expected[part], f"seed {seed} step {step}: {part} differs after {change}"


def test_engine_virtual_service_change_rejudges_callers_and_their_callers():
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "llm", "namespace": "ml"},
          "spec": {"hosts": ["llm"], "http": [{"route": [{"destination": {"host": "llm"}}],
                                               "retries": {"attempts": 4, "perTryTimeout": "5s"}}]}}
    engine = Engine([baseline_policy()], inventory(
        deployment("gateway", depends_on="chat", retry="attempts=3, perTryTimeout=60s, backoff=exponential"),
        deployment("chat", depends_on="llm"), service("chat"), deployment("llm"), service("llm")))
    engine.evaluate_all()
    rules = lambda name: {f.rule for f in engine.findings_for(D(name))}  # noqa: E731
    assert "GW-RTY-001" not in rules("chat") and "GW-RTY-002" not in rules("gateway")
    affected = engine.upsert(view(vs))
    assert {D("chat"), D("gateway")} <= affected
    assert "GW-RTY-001" in rules("chat"), "5 tries on the wire, above maxAttempts 3"
    assert "GW-RTY-002" in rules("gateway"), "3 x 5 = 15 calls, above maxAmplification 10"
    engine.remove("VirtualService", "ml", "llm")
    assert "GW-RTY-001" not in rules("chat") and "GW-RTY-002" not in rules("gateway")
