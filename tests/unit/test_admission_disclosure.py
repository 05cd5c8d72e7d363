"""An admission answer tells the requester about its own object and its own edges only: a retry chain, a
cycle or a call chain beyond the object's next hop is not named, nor the policy's namespace allow-list.
Events, status and the CLI keep the whole message."""
from __future__ import annotations

import copy

from guywire.engine.admission import Admission, told
from guywire.model.finding import Finding, ObjectRef
from guywire.model.severity import Severity
from tests.unit.test_admission import example_engine, example_object, request


def answer_text(d) -> str:
    return "\n".join([d.message, *d.warnings])


def test_a_retry_chain_is_shown_only_up_to_the_objects_own_next_hop():
    engine = example_engine()
    obj = example_object("Deployment", "gateway")
    changed = copy.deepcopy(obj)
    changed["spec"]["replicas"] = 5
    d = Admission(engine).decide(request(changed, "UPDATE", old=obj))
    text = answer_text(d)
    amplification = next(w for w in d.warnings if w.startswith("[GW-RTY-002"))
    assert "ml/gateway -(3x)-> ml/rag-orchestrator -(3x)-> … (2 workloads not shown)" in amplification
    assert "data/vector-db" not in text and "ml/retriever" not in text and "ml/llm-server" not in text
    full = [f for f in engine.results[("ml", "Deployment", "gateway")].values() for f in f if f.rule == "GW-RTY-002"]
    assert "data/vector-db" in full[0].render(), "the stored finding (Events, status, CLI) keeps the path"


def test_a_cycle_names_the_objects_own_edge_and_hides_the_rest():
    f = Finding(rule="GW-DEP-004", name="dependency-cycle", severity=Severity.HIGH,
                workload=ObjectRef("Deployment", "ml", "a"),
                message="is on a dependency cycle of 3 workload(s): ml/a -> team-b/b -> team-c/c -> ml/a. "
                        "Break one edge of the cycle.",
                path=["ml/a", "team-b/b", "team-c/c", "ml/a"])
    assert "ml/a -> team-b/b -> … -> ml/a" in told(f)
    assert "team-c" not in told(f)


def test_the_policys_namespace_allow_list_is_not_quoted():
    f = Finding(rule="GW-DEP-005", name="cross-namespace-dependency", severity=Severity.MEDIUM,
                workload=ObjectRef("Deployment", "ml", "a"),
                message='depends on "db.payments" in namespace payments, which is not allowed (allowed: shared, '
                        'secret-team-*). Use a shared Service or allow the namespace.')
    assert told(f).endswith('which is not allowed (not a namespace the policy allows). Use a shared Service or '
                            'allow the namespace.')
    assert "secret-team" not in told(f)
