"""Every list and string of a policy is bounded, in the model and in the CRD; kinds are only those guywire
judges; counts are integers, never booleans; match/exclude globs are compiled once per policy."""
from __future__ import annotations

import fnmatch

import pytest

from guywire.views.aikinds import AI_KINDS
from guywire.kube.crd import KINDS, crd
from guywire.engine.evaluator import policy_matches
from guywire.views.inventory import Inventory
from guywire.model.kinds import JUDGED_KINDS
from guywire.model.policy import MAX_GLOBS, PolicyError, compile_globs, parse_policy
from guywire.views.workload import WORKLOAD_KINDS
from tests.unit.manifests import deployment, view
from tests.unit.test_crd import nodes


def policy(spec: dict, kind: str = "ComplexityPolicy") -> dict:
    return {"apiVersion": "guywire.dev/v1alpha1", "kind": kind, "metadata": {"name": "p", "namespace": "ml"},
            "spec": spec}


def refusal(spec: dict) -> str:
    with pytest.raises(PolicyError) as err:
        parse_policy(policy(spec))
    return str(err.value)


def test_the_judged_kinds_are_the_workload_ai_and_service_kinds():
    assert set(JUDGED_KINDS) == set(WORKLOAD_KINDS) | set(AI_KINDS) | {"Service"}


@pytest.mark.parametrize("field, path", [
    ({"dependencies": {"maxFanOut": True}}, "spec.rules.dependencies.maxFanOut"),
    ({"dependencies": {"maxDepth": False}}, "spec.rules.dependencies.maxDepth"),
    ({"retries": {"maxAttempts": True}}, "spec.rules.retries.maxAttempts"),
    ({"complexity": {"maxScore": "40"}}, "spec.rules.complexity.maxScore"),
])
def test_a_boolean_or_text_where_a_count_belongs_is_refused(field, path):
    assert refusal({"rules": field}).startswith(f"{path}: Input should be a valid integer")


@pytest.mark.parametrize("where", ["match", "exclude"])
def test_a_kind_guywire_does_not_judge_is_refused_with_the_field(where):
    text = refusal({where: {"kinds": ["Deployment", "Deploymnet"]}})
    assert text.startswith(f"spec.{where}.kinds.1: Value error, 'Deploymnet' is not a kind guywire judges; use one of")


def test_forty_thousand_exclude_globs_are_refused():
    text = refusal({"exclude": {"namespaces": [f"team-{i}-*" for i in range(40_000)]}})
    assert text.startswith(f"spec.exclude.namespaces: List should have at most {MAX_GLOBS} items")


@pytest.mark.parametrize("spec, path", [
    ({"match": {"namespaces": ["x" * 254]}}, "spec.match.namespaces.0"),
    ({"exclude": {"names": [""]}}, "spec.exclude.names.0"),
    ({"rules": {"observability": {"requiredLabels": [f"l{i}" for i in range(65)]}}},
     "spec.rules.observability.requiredLabels"),
    ({"match": {"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["v"] * 257}]}}},
     "spec.match.selector.matchExpressions.0.values"),
    ({"match": {"selector": {"matchLabels": {f"k{i}": "v" for i in range(65)}}}}, "spec.match.selector.matchLabels"),
])
def test_long_lists_and_strings_are_refused_with_the_field(spec, path):
    assert refusal(spec).startswith(path + ":")


@pytest.mark.parametrize("selector", ["selector", "namespaceSelector"])
def test_a_match_labels_key_beyond_317_characters_is_refused_with_the_field(selector):
    with pytest.raises(PolicyError) as err:
        parse_policy(policy({"match": {selector: {"matchLabels": {"k" * 400: "v", "k" * 317: "v"}}}},
                            kind="ClusterComplexityPolicy"))
    assert str(err.value) == (f'spec.match.{selector}.matchLabels["{"k" * 39}…"] key (400 characters): '
                              "String should have at most 317 characters.")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_map_key_of_the_spec_is_bounded_in_the_crd(kind):
    spec = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    maps = [(where, node) for where, node in nodes(spec, "spec") if "additionalProperties" in node]
    assert [where for where, _ in maps if where.endswith("matchLabels")]
    for where, node in maps:
        rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        assert "self.all(k, size(k) >= 1 && size(k) <= 317)" in rules, where


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_array_and_string_of_the_spec_is_bounded_in_the_crd(kind):
    spec = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    unbounded = [where for where, node in nodes(spec, "spec")
                 if (node.get("type") == "array" and "maxItems" not in node)
                 or (node.get("type") == "string" and "maxLength" not in node)
                 or (node.get("type") == "object" and "additionalProperties" in node and "maxProperties" not in node)]
    assert unbounded == []


@pytest.mark.parametrize("name", ["team-a", "team-b-x", "kube-system", "a[b", "x", "team-?", "prod"])
def test_compiled_globs_match_as_fnmatch_does(name):
    patterns = ["team-a", "team-b-*", "kube-?ystem", "a[[]b", "prod"]
    assert compile_globs(patterns)(name) == any(fnmatch.fnmatchcase(name, p) for p in patterns)


def test_matching_compiles_each_policys_globs_once(monkeypatch):
    p = parse_policy(policy({"exclude": {"namespaces": [f"team-{i}-*" for i in range(MAX_GLOBS)],
                                         "names": ["skip-*"]}}))
    inventory = Inventory()
    views = [view(deployment(f"w{i}", namespace="ml")) for i in range(50)]
    p.spec.exclude.namespace_matches  # noqa: B018 - compiled here, before matching starts
    p.spec.exclude.name_matches  # noqa: B018

    def no_per_pattern_matching(*_a):
        raise AssertionError("fnmatch called per pattern while matching")

    monkeypatch.setattr(fnmatch, "fnmatchcase", no_per_pattern_matching)
    monkeypatch.setattr(fnmatch, "fnmatch", no_per_pattern_matching)
    assert all(policy_matches(p, v, inventory) for v in views)
