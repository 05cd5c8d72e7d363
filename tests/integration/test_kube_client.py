"""guywire's Kubernetes client against the loopback API server: Event times come from the clock it is handed."""
from __future__ import annotations

import asyncio

from guywire.clock import ManualClock
from guywire.kube.client import KubeClient, load_config


def test_an_event_is_stamped_and_refreshed_by_the_client_s_clock(kube_api):
    kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "clocked"}})
    clock = ManualClock("2031-03-04T05:06:07Z")
    client = KubeClient(load_config(str(kube_api.kubeconfig_path), None), clock=clock)
    involved = {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "clocked", "name": "llm", "uid": "u1"}
    event = dict(involved=involved, reason="GW-OBS-001", message="m.", type_="Warning", key="u1|GW-OBS-001|m")
    try:
        assert asyncio.run(client.post_event(**event)) == "created"
        clock.advance(90)
        assert asyncio.run(client.post_event(**event)) == "exists"
    finally:
        client.close()
    (stored,) = kube_api.events_for("Deployment", "clocked", "llm")
    assert stored["firstTimestamp"] == "2031-03-04T05:06:07Z"
    assert stored["lastTimestamp"] == "2031-03-04T05:07:37Z"


def test_the_probe_passes_a_server_that_answers(kube_api):
    from guywire.kube.client import load_reachable_config

    assert load_reachable_config(str(kube_api.kubeconfig_path), None, timeout=5.0).host == kube_api.url.rstrip("/")
