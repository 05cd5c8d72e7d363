"""Objects deleted while a watch was broken never get a DELETED event: after kopf lists the kind again,
the state lists it too and forgets what the API server no longer has, with its findings and edges."""
from __future__ import annotations

import asyncio
import copy

from guywire.clock import ManualClock
from guywire.kube.client import ApiFailure
from guywire.operator.index import RELIST_QUIET_S
from guywire.operator.settings import Settings
from guywire.operator.state import OperatorState
from tests.unit.test_operator_state import RecordingClient, example_bodies


class ListingClient(RecordingClient):
    """Answers lists from the bodies it holds, two per page, as the API server pages them."""

    def __init__(self, bodies: list[dict]):
        super().__init__()
        self.bodies = bodies
        self.lists: list[str] = []
        self.fail = False

    async def get(self, path: str):
        self.lists.append(path)
        if self.fail:
            raise ApiFailure(503, "injected")
        plural = path.split("?")[0].rsplit("/", 1)[-1]
        items = [b for b in self.bodies if b["kind"].lower() + "s" == plural]
        start = int(path.split("continue=")[1]) if "continue=" in path else 0
        more = start + 2 < len(items)
        return {"items": items[start:start + 2], "metadata": {"continue": str(start + 2) if more else ""}}


def setup():
    bodies = example_bodies()
    clock = ManualClock()
    client = ListingClient(bodies)
    state = OperatorState(client, Settings(status_interval=0, events_per_second=1000, events_burst=1000),
                          clock=clock)
    for body in bodies:
        state.observe(body)
    state.warm_up()
    return state, client, clock, bodies


def deployments(bodies):
    return [b for b in bodies if b["kind"] == "Deployment"]


def test_a_deployment_deleted_while_the_watch_was_broken_is_forgotten_after_the_relisting():
    state, client, clock, bodies = setup()
    gone = deployments(bodies)[0]
    key = (gone["metadata"]["namespace"], "Deployment", gone["metadata"]["name"])
    assert key in state.engine.inventory.workloads and key in state.engine.results
    client.bodies = [b for b in bodies if b is not gone]  # deleted; no DELETED event comes
    for body in deployments(client.bodies):  # kopf lists again after the watch broke
        state.observe(copy.deepcopy(body))
        state.listed("Deployment", "apps/v1", "deployments")
    asyncio.run(state.index.sweep_relisted())
    assert key in state.engine.inventory.workloads, "not before the re-listing has gone quiet"
    clock.advance(RELIST_QUIET_S)
    asyncio.run(state.index.sweep_relisted())
    assert key not in state.engine.inventory.workloads and key not in state.engine.results
    assert ("Deployment", key[0], key[2]) not in state.index.fingerprints
    assert key not in state.engine.graph.out and key not in state.engine.graph.callers
    assert any(p.startswith("/apis/apps/v1/deployments?limit=") for p in client.lists)
    assert len(client.lists) >= 2, "the listing is paged"
    kept = deployments(client.bodies)
    assert all((b["metadata"]["namespace"], "Deployment", b["metadata"]["name"]) in state.engine.inventory.workloads
               for b in kept)


def test_a_failed_listing_is_tried_again():
    state, client, clock, bodies = setup()
    client.bodies = [b for b in bodies if b is not deployments(bodies)[0]]
    client.fail = True
    state.listed("Deployment", "apps/v1", "deployments")
    clock.advance(RELIST_QUIET_S)
    asyncio.run(state.index.sweep_relisted())
    assert "Deployment" in state.index.relists
    client.fail = False
    clock.advance(RELIST_QUIET_S)
    asyncio.run(state.index.sweep_relisted())
    assert "Deployment" not in state.index.relists
    gone = deployments(bodies)[0]["metadata"]
    assert (gone["namespace"], "Deployment", gone["name"]) not in state.engine.inventory.workloads


def test_the_initial_listing_triggers_no_sweep():
    bodies = example_bodies()
    state = OperatorState(ListingClient(bodies), Settings(), clock=ManualClock())
    for body in bodies:
        state.observe(body)
        state.listed(body["kind"], body.get("apiVersion"), body["kind"].lower() + "s")
    assert state.index.relists == {}
