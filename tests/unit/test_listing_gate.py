"""The listing gate: the operator judges nothing until kopf has listed the whole cluster."""
import asyncio

from guywire.kube.client import ApiFailure
from guywire.operator.gate import ListingGate
from guywire.operator.state import OperatorState


def test_opens_when_every_counted_kind_is_listed():
    gate = ListingGate(0.0)
    gate.counted({"Deployment": 2, "Service": 1})
    gate.listed("Deployment", 0.1)
    gate.listed("Service", 0.2)
    assert gate.ready(0.3) is None and gate.missing() == {"Deployment": 1}
    gate.listed("Deployment", 0.4)
    assert gate.ready(0.4).startswith("every kind listed (3 objects)")


def test_objects_created_since_the_count_do_not_hold_it():
    gate = ListingGate(0.0)
    gate.counted({"Deployment": 1})
    for t in (0.1, 0.2, 0.3):
        gate.listed("Deployment", t)
    assert gate.ready(0.3) is not None


def test_objects_deleted_since_the_count_open_it_after_a_quiet_settle():
    gate = ListingGate(0.0, settle=2.0)
    gate.counted({"Deployment": 3})
    gate.listed("Deployment", 1.0)
    gate.listed("Deployment", 1.5)
    assert gate.ready(3.0) is None  # 1.5 s quiet: the listing may still be paging
    why = gate.ready(3.6)
    assert why and "Deployment (1 short" in why


def test_a_counted_kind_never_listed_holds_it_until_give_up():
    """A paused replica (kopf peering) lists nothing: it must not judge an empty cluster and then
    annotate everything as objects stream in; only a long silence opens the gate."""
    gate = ListingGate(0.0, settle=2.0, give_up=60.0)
    gate.counted({"Deployment": 5, "Service": 1})
    gate.listed("Service", 1.0)
    assert gate.ready(30.0) is None
    assert "still missing 5 Deployment" in gate.ready(61.5)


def test_without_counts_it_opens_on_a_quiet_listing_or_an_empty_start():
    gate = ListingGate(0.0, settle=2.0, empty_wait=10.0)
    gate.counted(None)
    assert gate.ready(9.0) is None
    assert gate.ready(10.5) == "nothing listed after 10 s"
    busy = ListingGate(0.0, settle=2.0)
    busy.listed("Pod", 5.0)
    assert busy.ready(6.0) is None and busy.ready(7.5).startswith("listing quiet for 2.5 s (1 objects)")


def test_an_empty_counted_cluster_opens_at_once():
    gate = ListingGate(0.0)
    gate.counted({"Deployment": 0})
    assert gate.ready(0.0).startswith("every kind listed")


class FakeClient:
    def __init__(self, answers):
        self.answers, self.paths = answers, []

    async def get(self, path):
        self.paths.append(path)
        answer = self.answers.get(path)
        if isinstance(answer, ApiFailure):
            raise answer
        if answer is None:
            raise ApiFailure(404, "NotFound")
        return answer


def _list(kind, items, remaining=None):
    meta = {"resourceVersion": "1"}
    if remaining:
        meta |= {"continue": "abc", "remainingItemCount": remaining}
    return {"kind": f"{kind}List", "metadata": meta, "items": [{}] * items}


def test_count_cluster_reads_one_item_and_the_remaining_count():
    client = FakeClient({
        "/apis/apps/v1/deployments?limit=1": _list("Deployment", 1, remaining=41),
        "/api/v1/services?limit=1": _list("Service", 0),
        "/apis/networking.istio.io": {"preferredVersion": {"version": "v1"}},
        "/apis/networking.istio.io/v1/virtualservices?limit=1": _list("VirtualService", 1),
    })
    state = OperatorState(client)
    asyncio.run(state.index.count_cluster([("apps", "v1", "deployments"), ("", "v1", "services"),
                                     ("ray.io", "v1", "rayclusters"),  # not served: 404, nothing to wait for
                                     ("networking.istio.io", None, "virtualservices")]))
    assert state.index.gate.expected == {"Deployment": 42, "Service": 0, "VirtualService": 1}


def test_count_cluster_falls_back_to_quiet_periods_when_a_count_fails():
    client = FakeClient({"/apis/apps/v1/deployments?limit=1": ApiFailure(403, "Forbidden")})
    state = OperatorState(client)
    asyncio.run(state.index.count_cluster([("apps", "v1", "deployments")]))
    assert state.index.gate.expected is None
    paged_without_count = FakeClient({"/api/v1/pods?limit=1": {"kind": "PodList", "items": [{}],
                                                                "metadata": {"continue": "x"}}})
    state = OperatorState(paged_without_count)
    asyncio.run(state.index.count_cluster([("", "v1", "pods")]))
    assert state.index.gate.expected is None


def test_objects_listed_before_the_gate_opens_are_only_inventoried():
    state = OperatorState(None)
    state.index.gate.counted({"Deployment": 1})
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "ml"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}}
    state.observe(body)
    state.listed("Deployment")
    assert not state.warm and ("ml", "Deployment", "a") in state.engine.inventory.workloads

    async def run():
        await asyncio.wait_for(state.index.gate_loop(poll=0.01), timeout=5)

    asyncio.run(run())
    assert state.warm and state.engine.graph is not None
