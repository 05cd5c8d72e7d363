"""The operator's write decisions, with a recording client in place of the API (the kopf side is
covered by tests/integration/test_operator.py against a real HTTP API)."""
from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import yaml

from guywire.views.annotations import COMPLEXITY_SCORE, VIOLATIONS
from guywire.kube.client import ApiFailure
from guywire.clock import ManualClock
from guywire.operator.event_writer import TokenBucket
from guywire.operator.settings import Settings
from guywire.operator.state import OperatorState
from tests.examples import example_objects

ROOT = Path(__file__).resolve().parents[2]


class RecordingClient:
    def __init__(self, clock=None):
        self.clock = clock  # when given, each Event records the clock's monotonic time as it is posted
        self.patches: list[tuple[str, dict]] = []
        self.events: list[dict] = []
        self.fail_next: int = 0
        self.event_names: set[str] = set()
        self.served: dict[str, dict] = {}  # GET path -> answer (discovery, lists); anything else is a 404
        self.requests: list[tuple[str, str]] = []  # (method, path) of request() calls: POST, DELETE

    async def get(self, path):
        if path not in self.served:
            raise ApiFailure(404, "Not Found")
        return copy.deepcopy(self.served[path])

    async def request(self, method, path, body=None, *_, **__):
        self.requests.append((method, path))
        return {}

    async def merge_patch(self, path, body):
        if self.fail_next:
            self.fail_next -= 1
            raise ApiFailure(500, "injected")
        self.patches.append((path, body))
        return {}

    async def post_event(self, *, involved, reason, message, type_, key, instance="x"):
        exists = key in self.event_names
        self.event_names.add(key)
        self.events.append({"reason": reason, "type": type_, "message": message, "name": involved["name"],
                            "key": key, "at": self.clock.monotonic() if self.clock else None})
        return "exists" if exists else "created"


def example_bodies() -> list[dict]:
    out = []
    for doc in example_objects():
        doc.setdefault("metadata", {}).setdefault("uid", f"uid-{doc['kind']}-{doc['metadata']['name']}")
        doc["metadata"].setdefault("generation", 1)
        out.append(doc)
    return out


def started(client=None) -> OperatorState:
    state = OperatorState(client or RecordingClient(), Settings(status_interval=0, events_per_second=1000,
                                                                events_burst=1000))
    for body in example_bodies():
        state.observe(body)
    state.warm_up()
    return state


async def drain(state: OperatorState) -> None:
    await state.flush()
    while state.event_writer.queue:
        ident, ev = state.event_writer.queue.popitem(last=False)
        await state.event_writer.post(ident, ev)


def annotation_patches(client) -> dict[str, dict]:
    return {path: body["metadata"]["annotations"] for path, body in client.patches
            if "/status" not in path and "wgpolicyk8s.io" not in path}


def test_first_pass_annotates_violating_workloads_and_posts_one_event_per_rule():
    state = started()
    asyncio.run(drain(state))
    patches = annotation_patches(state.client)
    gw = patches["/apis/apps/v1/namespaces/ml/deployments/gateway"]
    assert gw[VIOLATIONS].split(",")[0] == "GW-RTY-002"
    assert int(gw[COMPLEXITY_SCORE]) > 0
    reasons = [(e["name"], e["reason"]) for e in state.client.events]
    assert ("gateway", "GW-RTY-002") in reasons
    assert len(reasons) == len(set(reasons)), "one event per workload x rule"
    assert all(e["type"] == "Warning" for e in state.client.events)


def test_a_second_pass_with_nothing_changed_writes_nothing():
    state = started()
    asyncio.run(drain(state))
    writes = [p for p, _ in state.client.patches]
    n_events = len(state.client.events)
    state.full_audit()
    state.figures.last = 0.0
    asyncio.run(drain(state))
    assert [p for p, _ in state.client.patches] == writes, "annotations, status and reports are all unchanged"
    assert len(state.client.events) == n_events


def test_own_annotation_changes_are_ignored():
    state = started()
    asyncio.run(drain(state))
    body = next(b for b in example_bodies() if b["metadata"]["name"] == "gateway")
    body["metadata"]["annotations"][VIOLATIONS] = "GW-RTY-002"
    body["metadata"]["annotations"]["guywire.dev/evaluated-at"] = "2026-11-24T00:00:00Z"
    state.annotation_writer.dirty.clear()
    state.observe(body)
    assert not state.annotation_writer.dirty


def test_fixing_a_workload_clears_its_annotation_and_posts_a_normal_event():
    state = started()
    asyncio.run(drain(state))
    body = next(b for b in example_bodies() if b["metadata"]["name"] == "embedder")
    body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"memory": "2Gi"}
    state.observe(body)
    asyncio.run(drain(state))
    patch = annotation_patches(state.client)["/apis/apps/v1/namespaces/ml/deployments/embedder"]
    assert patch[VIOLATIONS] is None  # merge patch null removes the annotation
    normal = [e for e in state.client.events if e["type"] == "Normal" and e["name"] == "embedder"]
    assert [e["reason"] for e in normal] == ["GW-OBS-004"]


def test_a_restarted_operator_reads_what_was_announced_from_the_annotations():
    first = started()
    asyncio.run(drain(first))
    written = annotation_patches(first.client)
    bodies = example_bodies()
    for b in bodies:
        path_kind = {"Deployment": "deployments", "StatefulSet": "statefulsets", "Job": "jobs"}.get(b["kind"])
        if not path_kind:
            continue
        ann = written.get(f"/apis/{'apps' if b['kind'] != 'Job' else 'batch'}/v1/namespaces/"
                          f"{b['metadata']['namespace']}/{path_kind}/{b['metadata']['name']}")
        if ann:
            b["metadata"]["annotations"] = {**b["metadata"].get("annotations", {}),
                                            **{k: v for k, v in ann.items() if v is not None}}
    second = OperatorState(RecordingClient(), first.settings)
    for b in bodies:
        second.observe(b)
    second.warm_up()
    asyncio.run(drain(second))
    assert second.client.events == []
    assert annotation_patches(second.client) == {}


def test_a_bad_policy_is_not_ready_and_the_others_keep_working():
    state = started()
    bad = {"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
           "metadata": {"name": "broken", "generation": 2}, "spec": {"enforcement": "Sometimes"}}
    state.observe(bad)
    status = state.status_writer.status_for("ClusterComplexityPolicy/broken")
    assert status["conditions"][0]["status"] == "False"
    assert "spec.enforcement" in status["conditions"][0]["message"]
    assert status["observedGeneration"] == 2
    good = state.status_writer.status_for("ClusterComplexityPolicy/ai-baseline")
    assert good["conditions"][0]["status"] == "True" and good["matched"] > 0 and good["violating"] > 0


def test_status_findings_are_capped_worst_first_with_a_truncated_count():
    state = started()
    state.settings.findings_cap = 3
    status = state.status_writer.status_for("ClusterComplexityPolicy/ai-baseline")
    assert len(status["findings"]) == 3 and status["truncated"] > 0
    ranks = {"Critical": 4, "High": 3, "Medium": 2, "Low": 1}
    sev = [ranks[f["severity"]] for f in status["findings"]]
    assert sev == sorted(sev, reverse=True)


def test_a_failed_patch_is_retried_on_the_next_pass():
    client = RecordingClient()
    state = started(client)
    client.fail_next = 1
    asyncio.run(state.flush())
    assert state.annotation_writer.dirty, "the failed workload stays pending"
    asyncio.run(state.flush())
    assert not state.annotation_writer.dirty


def test_the_event_bucket_refills_with_the_clock():
    clock = ManualClock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert [bucket.wait_time(), bucket.wait_time(), bucket.wait_time()] == [0.0, 0.0, 0.5]
    clock.advance(0.25)
    assert bucket.wait_time() == 0.25
    clock.advance(0.25)
    assert bucket.wait_time() == 0.0
    clock.advance(3600)
    assert [bucket.wait_time(), bucket.wait_time(), bucket.wait_time()] == [0.0, 0.0, 0.5], "burst is a cap"


def test_events_are_rate_limited_not_dropped():
    clock = ManualClock()
    client = RecordingClient(clock)
    state = OperatorState(client, Settings(events_per_second=4, events_burst=2), clock=clock)
    for body in example_bodies():
        state.observe(body)
    state.warm_up()
    asyncio.run(state.flush())
    queued = len(state.event_writer.queue)
    assert queued > 5
    start = clock.monotonic()

    async def post_while_the_clock_moves() -> None:
        task = asyncio.ensure_future(state.event_writer.run())
        try:
            await until(lambda: len(client.events) == 2)  # the burst, at once
            for n in (3, 4, 5):  # then one per quarter second of the operator's clock
                clock.advance(0.25)
                await until(lambda: len(client.events) == n)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(post_while_the_clock_moves())
    assert [e["at"] - start for e in client.events] == [0.0, 0.0, 0.25, 0.5, 0.75]
    assert len(state.event_writer.queue) == queued - len(client.events), "the rest wait in the queue"


async def until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def test_owned_workloads_are_left_to_their_owner():
    state = started()
    rs = copy.deepcopy(next(b for b in example_bodies() if b["metadata"]["name"] == "gateway"))
    rs["kind"] = "ReplicaSet"
    rs["metadata"]["name"] = "gateway-7d4b9c"
    rs["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "gateway", "controller": True}]
    state.observe(rs)
    assert ("ml", "ReplicaSet", "gateway-7d4b9c") not in state.engine.inventory.workloads


def test_every_time_the_operator_writes_comes_from_its_clock():
    """Evaluated-at, status and condition times, PolicyReport timestamps, the "no longer violated" Event key
    and the time rules judge against: all the state's clock, years away from today."""
    clock = ManualClock("2031-03-04T05:06:07Z")
    client = RecordingClient(clock)
    state = OperatorState(client, Settings(status_interval=0, events_per_second=1000, events_burst=1000),
                          clock=clock)
    for body in example_bodies():
        state.observe(body)
    state.warm_up()
    assert state.engine.now == clock.now()
    asyncio.run(drain(state))
    stamps = {a["guywire.dev/evaluated-at"] for a in annotation_patches(client).values() if a.get(VIOLATIONS)}
    assert stamps == {"2031-03-04T05:06:07Z"}
    statuses = [body["status"] for path, body in client.patches if path.endswith("/status")]
    assert statuses and {s["lastEvaluated"] for s in statuses} == {"2031-03-04T05:06:07Z"}
    assert {c["lastTransitionTime"] for s in statuses for c in s["conditions"]} == {"2031-03-04T05:06:07Z"}
    reports = [body for path, body in client.patches if "wgpolicyk8s.io" in path]
    assert reports and {r["results"][0]["timestamp"]["seconds"] for r in reports if r["results"]} == {
        int(clock.now().timestamp())}

    clock.advance(3600)
    body = next(b for b in example_bodies() if b["metadata"]["name"] == "embedder")
    body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"memory": "2Gi"}
    state.observe(body)
    asyncio.run(drain(state))
    (resolved,) = [e for e in client.events if e["type"] == "Normal" and e["name"] == "embedder"]
    assert resolved["key"].endswith("|GW-OBS-004|resolved|2031-03-04T06:06:07Z")
    assert annotation_patches(client)["/apis/apps/v1/namespaces/ml/deployments/embedder"][
        "guywire.dev/evaluated-at"] == "2031-03-04T06:06:07Z"


# ----- which report API, and chunks an earlier run left (issue 15 part 5) ---------------------------------------

OPENREPORTS = "/apis/openreports.io/v1alpha1"


def _report_patches(client, group):
    return {path: body for path, body in client.patches if f"/apis/{group}/" in path}


def test_reports_are_openreports_when_the_cluster_serves_them_and_policy_reports_otherwise():
    client = RecordingClient()
    client.served[OPENREPORTS] = {"resources": [{"name": "reports"}, {"name": "clusterreports"}]}
    state = started(client)
    asyncio.run(drain(state))
    written = _report_patches(client, "openreports.io")
    assert f"{OPENREPORTS}/namespaces/ml/reports/guywire-ml" in written
    assert written[f"{OPENREPORTS}/namespaces/ml/reports/guywire-ml"]["source"] == "guywire"
    assert written[f"{OPENREPORTS}/namespaces/ml/reports/guywire-ml"]["kind"] == "Report"
    assert not _report_patches(client, "wgpolicyk8s.io")

    plain = RecordingClient()  # no openreports.io group served
    state = started(plain)
    asyncio.run(drain(state))
    assert _report_patches(plain, "wgpolicyk8s.io") and not _report_patches(plain, "openreports.io")


def test_the_setting_overrides_discovery():
    client = RecordingClient()
    client.served[OPENREPORTS] = {"resources": [{"name": "reports"}]}
    state = OperatorState(client, Settings(status_interval=0, events_per_second=1000, events_burst=1000,
                                           reports_api="wgpolicyk8s"))
    for body in example_bodies():
        state.observe(body)
    state.warm_up()
    asyncio.run(drain(state))
    assert _report_patches(client, "wgpolicyk8s.io") and not _report_patches(client, "openreports.io")


def test_chunks_an_earlier_run_left_are_deleted_when_fewer_are_needed():
    client = RecordingClient()
    listed = "/apis/wgpolicyk8s.io/v1alpha2/policyreports?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dguywire"
    client.served[listed] = {"items": [
        {"metadata": {"name": name, "namespace": "ml", "annotations": {"guywire.dev/results-digest": "old"}}}
        for name in ("guywire-ml", "guywire-ml-2", "guywire-ml-3")]}
    state = started(client)
    asyncio.run(drain(state))
    deleted = sorted(path for method, path in client.requests if method == "DELETE")
    assert deleted == ["/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml/policyreports/guywire-ml-2",
                       "/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml/policyreports/guywire-ml-3"]
    assert "/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml/policyreports/guywire-ml" in _report_patches(
        client, "wgpolicyk8s.io")  # its digest differed: rewritten, not deleted
