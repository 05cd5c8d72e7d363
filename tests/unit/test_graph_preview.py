"""Copy-on-write overlays and the graph preview built from them: changes stay in the view, reads see
them, the base is never written, and the preview's results are those of the changed cluster."""
from __future__ import annotations

import pytest

from guywire.graph.dependency_graph import Graph
from guywire.graph.overlay import Overlay, overlaid
from tests.snapshot import deep_state, differences

from .manifests import deployment, inventory, service, view


def test_an_overlay_reads_through_and_keeps_its_writes():
    base = {"a": 1, "b": 2, "c": 3}
    o = Overlay(base)
    o["b"] = 20
    o["d"] = 4
    del o["a"]
    assert dict(o) == {"b": 20, "c": 3, "d": 4}
    assert list(o) == ["b", "c", "d"] and len(o) == 3
    assert "a" not in o and o.get("a", "none") == "none" and o.pop("c") == 3 and "c" not in o
    with pytest.raises(KeyError):
        o["a"]
    o["a"] = 10  # a deleted base key written again
    assert o["a"] == 10 and len(o) == 3
    assert base == {"a": 1, "b": 2, "c": 3}


def test_values_changed_in_place_are_copies():
    base = {"s": {1}, "l": [1], "d": {"k": 1}}
    o = Overlay(base)
    o.setdefault("s", set()).add(2)
    o.get("l").remove(1)
    o["d"]["k"] = 2
    o.setdefault("new", set()).add(1)
    assert o["s"] == {1, 2} and o["l"] == [] and o["d"] == {"k": 2} and o["new"] == {1}
    assert base == {"s": {1}, "l": [1], "d": {"k": 1}}


def test_an_overlay_of_an_overlay_leaves_both_below_it_alone():
    base = {"s": {1}}
    middle = Overlay(base)
    middle["s"].add(2)
    top = Overlay(middle)
    top["s"].add(3)
    assert (base["s"], middle["s"], top["s"]) == ({1}, {1, 2}, {1, 2, 3})


def test_overlaid_refuses_a_mutable_attribute_it_does_not_know():
    class Holder:
        def __init__(self):
            self.index = {}
            self.count = 0
            self.items = []

    with pytest.raises(TypeError, match="Holder.items is a list"):
        overlaid(Holder())
    h = Holder()
    v = overlaid(h, items=[])
    v.index["x"] = 1
    v.count += 1
    assert h.index == {} and h.count == 0


def cluster():
    return inventory(
        deployment("gateway", depends_on="orchestrator"),
        deployment("orchestrator", depends_on="retriever"),
        deployment("retriever", depends_on="vector-db"),
        deployment("vector-db"),
        service("retriever", selector={"app": "retriever"}),
        service("vector-db", selector={"app": "vector-db"}),
    )


def test_a_change_in_the_preview_is_seen_there_and_nowhere_else():
    g = Graph(cluster())
    before = deep_state(g)
    p = g.preview()
    closing = view(deployment("vector-db", depends_on="gateway"))
    p.upsert_workload(closing)
    assert p.cycle_of(("ml", "Deployment", "vector-db")) is not None
    assert g.cycle_of(("ml", "Deployment", "vector-db")) is None
    p.upsert_workload(view(deployment("canary", depends_on="retriever")))
    p.remove_workload(("ml", "Deployment", "orchestrator"))
    p.remove_service(("ml", "retriever"))
    assert ("ml", "Deployment", "canary") in p.inv.workloads and ("ml", "Deployment", "orchestrator") not in p.inv.workloads
    after = deep_state(g)
    assert after == before, differences(before, after)


def test_the_preview_gives_what_the_changed_graph_gives():
    """Same edges, callers, backends, depth and amplification as the graph really changed (cycle ids aside:
    they are counters)."""
    changes = [view(deployment("vector-db", depends_on="gateway")),
               view(deployment("reranker", depends_on="retriever, vector-db")),
               view(deployment("orchestrator", depends_on="retriever, reranker"))]
    real = Graph(cluster())
    preview = Graph(cluster()).preview()
    for w in changes:
        real.upsert_workload(w)
        preview.upsert_workload(w)

    def results(g: Graph):
        keys = sorted(g.inv.workloads)
        return {k: ([(e.dep.name, e.targets, e.resolved) for e in g.out.get(k, ())],
                    sorted(g.callers.get(k, ())), sorted(g.selected_by.get(k, ())),
                    g.analysis[k].depth, g.analysis[k].amplification, g.cycle_of(k), g.depth_path(k))
                for k in keys}

    assert results(preview) == results(real)
    assert dict(preview.backends) == real.backends
    assert sorted(map(sorted, preview.sccs.values())) == sorted(map(sorted, real.sccs.values()))
