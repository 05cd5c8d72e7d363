"""Istio VirtualService / DestinationRule: read, matched to the hosts a workload calls, and combined with the
application's own retries on each edge (attempts multiply, the innermost per-try timeout decides)."""
from __future__ import annotations

import pytest

from guywire.views.annotations import RetryPolicy
from guywire.engine.evaluator import Engine
from guywire.graph.dependency_graph import Graph
from guywire.views.inventory import ParseError, view_of
from guywire.graph.mesh import MeshIndex, classify_host, effective_retry
from guywire.model.policy import baseline_policy
from guywire.views.workload import MeshRetry, MeshRoute

from .manifests import deployment, inventory, service, view


def vs(name: str = "llm", ns: str = "ml", *, hosts: list[str] | None = None, http: list[dict] | None = None,
       api: str = "networking.istio.io/v1", gateways: list[str] | None = None,
       export_to: list[str] | None = None) -> dict:
    spec: dict = {"hosts": hosts or [name], "http": http if http is not None else [
        {"route": [{"destination": {"host": name}}], "retries": {"attempts": 2, "perTryTimeout": "5s"},
         "timeout": "20s"}]}
    if gateways is not None:
        spec["gateways"] = gateways
    if export_to is not None:
        spec["exportTo"] = export_to
    return {"apiVersion": api, "kind": "VirtualService", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def edge_to(g: Graph, source: str, dep: str, ns: str = "ml"):
    (edge,) = [e for e in g.out[(ns, "Deployment", source)] if e.dep.name == dep]
    return edge


# ----- reading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["networking.istio.io/v1", "networking.istio.io/v1beta1",
                                 "networking.istio.io/v1alpha3"])
def test_virtual_service_is_read_in_every_served_version(api):
    route = view(vs(api=api))
    assert isinstance(route, MeshRoute) and route.key == ("ml", "VirtualService", "llm")
    assert route.retry == MeshRetry(source="VirtualService ml/llm http route 1", attempts=3, per_try_timeout=5.0,
                                    timeout=20.0), "attempts counts the first try: Istio's attempts: 2 is 3 tries"


def test_a_virtual_service_of_another_group_is_not_istio():
    assert view_of({**vs(), "apiVersion": "example.com/v1"}) is None


@pytest.mark.parametrize("http, attempts, per_try, timeout", [
    ([{"route": []}], 1, None, None),  # no retries block: Istio's connection-failure default is not counted
    ([{"retries": {"attempts": 0}}], 1, None, None),  # attempts 0 turns retries off
    ([{"retries": {"attempts": 3}, "timeout": "0s"}], 4, None, None),  # 0s is no timeout
    ([{"retries": {"attempts": 1, "perTryTimeout": "1.5s"}, "timeout": "1m"}], 2, 1.5, 60.0),
    # several routes: the one that tries most (a match guywire cannot see may send every call there)
    ([{"name": "cheap", "retries": {"attempts": 1}}, {"name": "hot", "retries": {"attempts": 4}}], 5, None, None),
])
def test_route_retries_and_timeouts(http, attempts, per_try, timeout):
    r = view(vs(http=http)).retry
    assert (r.attempts, r.per_try_timeout, r.timeout) == (attempts, per_try, timeout)


def test_the_chosen_route_is_named_in_messages():
    r = view(vs(http=[{"name": "cheap", "retries": {"attempts": 1}},
                      {"name": "hot", "retries": {"attempts": 4}}])).retry
    assert r.source == 'VirtualService ml/llm http route "hot"'


def test_virtual_service_without_http_routes_sets_no_retry():
    assert view(vs(http=[])).retry is None


@pytest.mark.parametrize("http, fragment", [
    ([{"timeout": "ten seconds"}], "VirtualService ml/llm: spec.http[0].timeout is 'ten seconds', not a duration"),
    ([{"retries": {"perTryTimeout": "2 s", "attempts": 1}}], "spec.http[0].retries.perTryTimeout is '2 s'"),
    ([{}, {"retries": {"attempts": "three"}}], "spec.http[1].retries.attempts is 'three', not a whole number"),
    ([{"retries": {"attempts": -1}}], "spec.http[0].retries.attempts is '-1'"),
])
def test_bad_fields_are_parse_errors_that_name_them(http, fragment):
    with pytest.raises(ParseError) as exc:
        view_of(vs(http=http))
    assert fragment in str(exc.value)


def test_destination_rule_is_read():
    dr = view({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "llm", "namespace": "ml"},
               "spec": {"host": "llm.ml.svc.cluster.local", "trafficPolicy": {
                   "connectionPool": {"http": {"maxRetries": 3}},
                   "outlierDetection": {"consecutive5xxErrors": 5}}}})
    assert (dr.kind, dr.hosts, dr.max_retries, dr.outlier_detection, dr.retry) == \
        ("DestinationRule", ["llm.ml.svc.cluster.local"], 3, True, None)


# ----- which route covers a call ---------------------------------------------------------------------------


@pytest.mark.parametrize("host, own, expected", [
    ("llm", "ml", [("svc", ("ml", "llm"))]),  # short names are the VirtualService's own namespace
    ("llm.serving", "ml", [("svc", ("serving", "llm")), ("ext", "llm.serving")]),
    ("llm.serving.svc", "ml", [("svc", ("serving", "llm"))]),
    ("LLM.serving.svc.cluster.local.", "ml", [("svc", ("serving", "llm"))]),
    ("*.serving.svc.cluster.local", "ml", [("ns", "serving")]),
    ("*", "ml", [("glob", "*")]),
    ("*.openai.com", "ml", [("glob", "*.openai.com")]),
    ("api.openai.com", "ml", [("ext", "api.openai.com")]),
    ("", "ml", []),
])
def test_classify_host(host, own, expected):
    assert classify_host(host, own) == expected


def route(name, ns, hosts, **kw) -> MeshRoute:
    return MeshRoute(kind="VirtualService", namespace=ns, name=name, hosts=hosts,
                     retry=MeshRetry(source=name, attempts=2), **kw)


def test_exact_host_before_namespace_wildcard_before_glob():
    idx = MeshIndex([route("glob", "ml", ["*"]), route("nswild", "ml", ["*.ml.svc.cluster.local"]),
                     route("exact", "ml", ["llm"])])
    assert idx.route_for("ml", "llm", False, "ml").name == "exact"
    assert idx.route_for("ml", "other", False, "ml").name == "nswild"
    assert idx.route_for("data", "db", False, "ml").name == "glob"
    idx.remove(("ml", "VirtualService", "exact"))
    assert idx.route_for("ml", "llm", False, "ml").name == "nswild"


def test_among_equal_hosts_the_callers_namespace_wins_then_the_callees():
    idx = MeshIndex([route("a", "other", ["llm.ml.svc.cluster.local"]), route("b", "ml", ["llm"]),
                     route("c", "web", ["llm.ml"])])
    assert idx.route_for("ml", "llm", False, "web").name == "c"
    assert idx.route_for("ml", "llm", False, "jobs").name == "b"


def test_export_to_and_gateways_limit_who_the_route_applies_to():
    idx = MeshIndex([route("private", "ml", ["llm"], export_to=["."]),
                     route("ingress", "ml", ["chat"], sidecars=False)])
    assert idx.route_for("ml", "llm", False, "ml").name == "private"
    assert idx.route_for("ml", "llm", False, "web") is None
    assert idx.route_for("ml", "chat", False, "ml") is None, "a gateway-only route shapes ingress traffic only"


def test_gateways_including_mesh_apply_to_sidecars():
    assert view(vs(gateways=["istio-system/public", "mesh"])).sidecars
    assert not view(vs(gateways=["istio-system/public"])).sidecars


# ----- the effective policy on an edge ---------------------------------------------------------------------


@pytest.mark.parametrize("app, mesh, expected", [
    # only the mesh retries: its tries, its per-try timeout, Envoy's jittered backoff
    (RetryPolicy(), MeshRetry("vs", 3, 5.0, 20.0), RetryPolicy(3, 5.0, 15.0, "exponential-jitter")),
    # both retry: attempts multiply; each app try waits for the whole mesh sequence (3 x 5s) within its 10s
    (RetryPolicy(3, 10.0, 30.0, "exponential"), MeshRetry("vs", 3, 5.0, 20.0),
     RetryPolicy(9, 5.0, 30.0, "exponential")),
    # the route timeout bounds every app try when the app sets none
    (RetryPolicy(2, None, None, "exponential"), MeshRetry("vs", 1, None, 30.0),
     RetryPolicy(2, 30.0, 60.0, "exponential")),
    # no per-try timeout anywhere: unbounded
    (RetryPolicy(2, None, None, None), MeshRetry("vs", 4, None, None), RetryPolicy(8, None, None, None)),
    # a route without retries or timeouts changes nothing
    (RetryPolicy(2, 1.0, None, "fixed"), MeshRetry("vs", 1, None, None), RetryPolicy(2, 1.0, None, "fixed")),
])
def test_effective_retry(app, mesh, expected):
    got = effective_retry(app, mesh)
    assert got == expected
    if got is not app and got.worst_case() is not None:
        assert got.worst_case() == got.timeout, "the caller's worst case on the hop is the combined one"


def test_mesh_retries_feed_the_edge_and_keep_the_annotation_apart():
    g = Graph(inventory(deployment("chat", depends_on="llm", retry="attempts=2, perTryTimeout=30s"),
                        deployment("llm"), service("llm"), vs()))
    e = edge_to(g, "chat", "llm")
    assert e.app_retry == RetryPolicy(2, 30.0)
    assert e.mesh.attempts == 3 and e.retry.attempts == 6
    assert g.analysis[("ml", "Deployment", "chat")].amplification == 6


def test_mesh_retries_apply_to_outside_hosts_and_env_inferred_calls():
    g = Graph(inventory(
        deployment("chat", depends_on="external:api.openai.com", env={"LLM_URL": "http://llm.ml.svc.cluster.local:80"}),
        deployment("llm"), service("llm"), vs(),
        vs("openai", hosts=["api.openai.com"], http=[{"retries": {"attempts": 1, "perTryTimeout": "30s"}}])))
    assert edge_to(g, "chat", "api.openai.com").retry.attempts == 2
    inferred = edge_to(g, "chat", "llm")
    assert not inferred.declared and inferred.retry.attempts == 3


def test_check_reports_the_conflict_and_the_combined_attempts():
    engine = Engine([baseline_policy()], inventory(
        deployment("chat", depends_on="llm", retry="attempts=3, perTryTimeout=10s, backoff=exponential"),
        deployment("llm"), service("llm"), vs()))
    found = {f.rule: f.render() for f in engine.evaluate_all().findings if f.workload.name == "chat"}
    assert "tries ml/llm 9 times (3 in the application x 3 in VirtualService ml/llm http route 1)" \
        in found["GW-RTY-001"]
    assert "GW-RTY-006" in found


def test_graph_json_shows_the_mesh_part_of_an_edge():
    import json

    from guywire.render.graph_formats import render_graph_json
    engine = Engine([baseline_policy()], inventory(deployment("chat", depends_on="llm", retry="attempts=2"),
                                                   deployment("llm"), service("llm"), vs()))
    engine.evaluate_all()
    (edge,) = json.loads(render_graph_json(engine))["edges"]
    assert edge["attempts"] == 6
    assert edge["mesh"] == {"source": "VirtualService ml/llm http route 1", "attempts": 3, "perTryTimeout": 5.0,
                            "timeout": 20.0, "applicationAttempts": 2}


# ----- implicit mesh retries, retry budgets, Gateway API and Linkerd (issue 15 part 4) -------------------------

def _ns(name: str = "ml", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _chain() -> list[dict]:
    return [deployment("a", depends_on="b"), service("b", selector={"app": "b"}),
            deployment("b", depends_on="c"), service("c", selector={"app": "c"}), deployment("c")]


def test_a_namespace_that_joins_the_mesh_gets_implicit_retries_incrementally_as_a_full_build_does():
    engine = Engine([baseline_policy()], inventory(_ns(), *_chain()))
    engine.evaluate_all()
    assert engine.graph.analysis[("ml", "Deployment", "a")].amplification == 1
    engine.upsert(view(_ns(**{"istio-injection": "enabled"})))
    assert engine.graph.analysis[("ml", "Deployment", "a")].amplification == 9
    full = Engine([baseline_policy()], inventory(_ns(**{"istio-injection": "enabled"}), *_chain()))
    assert full.graph.analysis[("ml", "Deployment", "a")].amplification == 9
    engine.upsert(view(_ns(**{"istio-injection": "disabled"})))
    assert engine.graph.analysis[("ml", "Deployment", "a")].amplification == 1
    engine.upsert(view(_ns(**{"istio.io/rev": "canary"})))
    assert edge_to(engine.graph, "a", "b").implicit is not None
    engine.remove("Namespace", None, "ml")
    assert edge_to(engine.graph, "a", "b").implicit is None


def test_a_policy_set_without_mesh_defaults_rebuilds_the_graph_without_them():
    from guywire.model.policy import parse_policy

    engine = Engine([baseline_policy()], inventory(_ns(**{"istio-injection": "enabled"}), *_chain()))
    engine.evaluate_all()
    off = parse_policy({"apiVersion": "guywire.dev/v1alpha1", "kind": "ClusterComplexityPolicy",
                        "metadata": {"name": "off"}, "spec": {"rules": {"retries": {"meshDefaults": False}}}})
    engine.set_policies([off])
    assert engine.graph.analysis[("ml", "Deployment", "a")].amplification == 1


@pytest.mark.parametrize("annotations, fragment", [
    ({"retry.linkerd.io/http": "5xx", "retry.linkerd.io/limit": "lots"}, "retry.linkerd.io/limit is 'lots'"),
    ({"retry.linkerd.io/http": "5xx", "retry.linkerd.io/limit": "-1"}, "retry.linkerd.io/limit is '-1'"),
    ({"retry.linkerd.io/grpc": "unavailable", "retry.linkerd.io/timeout": "soon"}, "retry.linkerd.io/timeout is"),
])
def test_bad_linkerd_annotations_are_parse_errors_that_name_them(annotations, fragment):
    obj = service("b", selector={"app": "b"})
    obj["metadata"]["annotations"] = annotations
    with pytest.raises(ParseError, match=fragment.replace(".", r"\.").replace("*", r"\*")):
        view_of(obj)


def test_linkerd_annotations_set_tries_and_their_timeout():
    obj = service("b", selector={"app": "b"})
    obj["metadata"]["annotations"] = {"retry.linkerd.io/http": "5xx", "retry.linkerd.io/timeout": "300ms"}
    retry = view_of(obj).mesh_retry
    assert (retry.attempts, retry.per_try_timeout) == (2, 0.3)
    obj["metadata"]["annotations"] = {"retry.linkerd.io/limit": "3"}  # a limit alone turns nothing on
    assert view_of(obj).mesh_retry is None


@pytest.mark.parametrize("budget, ratio", [({"percent": 25}, 0.25), ({"percent": {"value": 10}}, 0.1),
                                           ({"minRetryConcurrency": 5}, 0.2)])
def test_destination_rule_retry_budget_is_a_ratio(budget, ratio):
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "b", "namespace": "ml"},
          "spec": {"host": "b", "trafficPolicy": {"connectionPool": {"http": {"retryBudget": budget}}}}}
    assert view_of(dr).retry_budget == ratio
    dr["spec"]["trafficPolicy"]["connectionPool"]["http"]["retryBudget"] = {"percent": 150}
    with pytest.raises(ParseError, match=r"retryBudget\.percent is '150', not a percentage"):
        view_of(dr)


def test_http_route_reads_gep_1731_retry_and_timeouts_and_a_bad_count_names_the_field():
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "b", "namespace": "ml"},
             "spec": {"parentRefs": [{"kind": "Service", "name": "b"}],
                      "rules": [{"retry": {"attempts": 2, "backoff": "100ms"},
                                 "timeouts": {"request": "10s", "backendRequest": "2s"}}]}}
    r = view_of(route)
    assert r.hosts == ["b.ml.svc.cluster.local"] and r.sidecars
    assert (r.retry.attempts, r.retry.per_try_timeout, r.retry.timeout) == (3, 2.0, 10.0)
    route["spec"]["rules"][0]["retry"]["attempts"] = "many"
    with pytest.raises(ParseError, match=r"spec\.rules\[0\]\.retry\.attempts is 'many'"):
        view_of(route)


def test_a_service_profile_without_retryable_routes_sets_no_retry_and_a_bad_ratio_names_the_field():
    sp = {"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
          "metadata": {"name": "b.ml.svc.cluster.local", "namespace": "ml"},
          "spec": {"routes": [{"name": "GET /", "condition": {"method": "GET"}}]}}
    assert view_of(sp).retry is None
    sp["spec"]["routes"][0]["isRetryable"] = True
    assert (view_of(sp).retry.attempts, view_of(sp).retry_budget) == (2, 0.2)
    sp["spec"]["retryBudget"] = {"retryRatio": "lots"}
    with pytest.raises(ParseError, match=r"spec\.retryBudget\.retryRatio is 'lots'"):
        view_of(sp)
