"""The taint decision behind `guywire run --taint-unhealthy-gpu-nodes`, circuit breaker included."""
from __future__ import annotations

import pytest

from guywire.gpu.taint import NodeTaintState, has_taint, plan_taints, taint_limit, taint_spec
from guywire.model.gpu_report import HealthState

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY


def n(name: str, state: HealthState | None, tainted: bool = False, gpu: bool = True) -> NodeTaintState:
    return NodeTaintState(name=name, gpu_node=gpu, state=state, tainted=tainted)


def test_unhealthy_nodes_are_tainted_within_the_limit():
    plan = plan_taints([n("g1", U), n("g2", H), n("g3", H), n("g4", D)], max_fraction=0.5)
    assert (plan.taint, plan.untaint, plan.held_back) == (["g1"], [], [])
    assert (plan.gpu_nodes, plan.limit, plan.tainted_after) == (4, 2, 1)
    assert plan.message() is None and not plan.tripped


def test_recovered_nodes_are_untainted():
    plan = plan_taints([n("g1", H, tainted=True), n("g2", D, tainted=True), n("g3", U, tainted=True)])
    assert plan.untaint == ["g1", "g2"] and plan.taint == [] and plan.tainted_after == 1


def test_the_circuit_breaker_holds_back_taints_beyond_the_fraction():
    nodes = [n(f"g{i}", U) for i in range(1, 6)] + [n(f"h{i}", H) for i in range(1, 6)]
    plan = plan_taints(nodes, max_fraction=0.3)
    assert plan.limit == 3
    assert plan.taint == ["g1", "g2", "g3"] and plan.held_back == ["g4", "g5"]
    assert plan.tripped
    msg = plan.message()
    assert msg.startswith("Circuit breaker: 2 Unhealthy GPU node(s) left untainted (g4, g5); 3 of 10 GPU nodes")
    assert msg.endswith("raise --taint-max-fraction.")


def test_already_tainted_nodes_count_against_the_limit():
    plan = plan_taints([n("g1", U, tainted=True), n("g2", U), n("g3", H), n("g4", H)], max_fraction=0.25)
    assert plan.limit == 1 and plan.taint == [] and plan.held_back == ["g2"] and plan.untaint == []


def test_recovering_nodes_free_room_for_new_taints_in_the_same_pass():
    plan = plan_taints([n("g1", H, tainted=True), n("g2", U), n("g3", H), n("g4", H)], max_fraction=0.25)
    assert plan.untaint == ["g1"] and plan.taint == ["g2"] and plan.held_back == []


def test_recovering_nodes_are_untainted_even_when_over_the_limit():
    # the fleet shrank: 3 tainted out of 4, limit 2; untaint never waits on the breaker
    plan = plan_taints([n("g1", U, tainted=True), n("g2", U, tainted=True), n("g3", H, tainted=True),
                        n("g4", U)], max_fraction=0.5)
    assert plan.untaint == ["g3"] and plan.taint == [] and plan.held_back == ["g4"]


def test_nodes_without_a_report_keep_their_taint_and_are_not_tainted():
    plan = plan_taints([n("g1", None, tainted=True), n("g2", None), n("g3", H), n("g4", H)])
    assert plan.taint == [] and plan.untaint == [] and plan.tainted_after == 1


def test_a_node_that_is_no_longer_a_gpu_node_is_untainted():
    plan = plan_taints([n("cpu-1", None, tainted=True, gpu=False), n("g1", H)])
    assert plan.untaint == ["cpu-1"] and plan.gpu_nodes == 1


def test_one_gpu_node_at_half_is_never_tainted():
    assert plan_taints([n("g1", U)], 0.5).held_back == ["g1"]
    assert plan_taints([n("g1", U)], 1.0).taint == ["g1"]


def test_zero_disables_tainting_but_not_untainting():
    plan = plan_taints([n("g1", U), n("g2", H, tainted=True)], max_fraction=0.0)
    assert plan.taint == [] and plan.held_back == ["g1"] and plan.untaint == ["g2"]


@pytest.mark.parametrize("nodes, fraction, limit", [(10, 0.5, 5), (3, 0.5, 1), (10, 0.3, 3), (7, 1.0, 7), (0, 0.5, 0)])
def test_limit_is_the_floor_of_the_fraction(nodes, fraction, limit):
    assert taint_limit(nodes, fraction) == limit


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        plan_taints([], fraction)


def test_the_order_is_deterministic():
    a = plan_taints([n("g3", U), n("g1", U), n("g2", U), n("h", H)], 0.5)
    b = plan_taints([n("g2", U), n("h", H), n("g3", U), n("g1", U)], 0.5)
    assert a.taint == b.taint == ["g1", "g2"] and a.held_back == b.held_back == ["g3"]


def test_the_taint_itself():
    assert taint_spec() == {"key": "guywire.dev/gpu-unhealthy", "value": "true", "effect": "NoSchedule"}
    assert has_taint({"spec": {"taints": [taint_spec()]}})
    assert not has_taint({"spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}})
    assert not has_taint({})
