"""One label matcher (guywire.model.selectors): label selectors as policies and manifests write them, the
label sets of Service selectors and nodeSelectors, and required node affinity, with Kubernetes' meaning."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from guywire.model.policy import LabelSelector
from guywire.model.selectors import (expression_matches, labels_match, node_affinity_matches,
                                     requirement_matches, selector_matches)

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "guywire"
LABELS = {"app": "llm", "tier": "gpu", "zone": "a"}

# (selector as a manifest writes it, matches LABELS?)
CASES = [
    ({}, True),
    ({"matchLabels": {"app": "llm"}}, True),
    ({"matchLabels": {"app": "llm", "tier": "cpu"}}, False),
    ({"matchLabels": {"missing": "x"}}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu", "tpu"]}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["cpu"]}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["cpu"]}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
    ({"matchLabels": {"app": "llm"}, "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}, False),
    ({"matchLabels": {"app": "llm"}, "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                                          {"key": "gpu", "operator": "DoesNotExist"}]}, True),
]


@pytest.mark.parametrize(("selector", "expected"), CASES)
def test_a_manifest_selector_and_a_policy_selector_match_as_kubernetes_does(selector, expected):
    assert selector_matches(selector, LABELS) is expected
    assert LabelSelector.model_validate(selector).matches(LABELS) is expected


def test_a_label_set_matches_when_every_pair_is_there():
    assert labels_match({}, LABELS)
    assert labels_match({"app": "llm", "zone": "a"}, LABELS)
    assert not labels_match({"app": "llm", "zone": "b"}, LABELS)
    assert not labels_match({"gpu": "true"}, LABELS)


def test_values_and_keys_written_as_numbers_match_their_text():
    assert selector_matches({"matchLabels": {"replicas": 3}}, {"replicas": "3"})
    assert selector_matches({"matchExpressions": [{"key": "port", "operator": "In", "values": [80, 443]}]},
                            {"port": "443"})


@pytest.mark.parametrize("selector", [
    {"matchLabels": "app=llm"},
    {"matchExpressions": "app in (llm)"},
    {"matchExpressions": [1, None, {"key": 5, "operator": "Exists"}]},
    {"matchExpressions": [{"operator": "In", "values": "llm"}]},
])
def test_a_malformed_selector_is_read_leniently_and_never_raises(selector):
    assert selector_matches(selector, LABELS) in (True, False)


def test_a_label_selector_passes_over_an_operator_it_does_not_know():
    """The API server refuses such a selector, so it cannot select anything in a cluster; read from a file,
    the requirement is left out rather than failing the whole selector."""
    assert selector_matches({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["1"]}]}, LABELS)
    assert requirement_matches("zone", "Sometimes", ["a"], LABELS)


# (node selector requirement, node labels, matches?)
NODE_CASES = [
    ({"key": "gpus", "operator": "Gt", "values": ["4"]}, {"gpus": "8"}, True),
    ({"key": "gpus", "operator": "Gt", "values": ["8"]}, {"gpus": "8"}, False),
    ({"key": "gpus", "operator": "Lt", "values": ["8"]}, {"gpus": "4"}, True),
    ({"key": "gpus", "operator": "Lt", "values": ["4"]}, {"gpus": "4"}, False),
    ({"key": "gpus", "operator": "Gt", "values": ["4"]}, {}, False),
    ({"key": "gpus", "operator": "Gt", "values": ["4"]}, {"gpus": "many"}, False),
    ({"key": "gpus", "operator": "Gt", "values": ["4", "5"]}, {"gpus": "8"}, False),
    ({"key": "gpus", "operator": "Sometimes", "values": ["4"]}, {"gpus": "8"}, False),
    ({"key": "pool", "operator": "In", "values": ["h100"]}, {"pool": "h100"}, True),
    ({"key": "pool", "operator": "NotIn", "values": ["h100"]}, {"pool": "h100"}, False),
    ({"key": "pool", "operator": "Exists"}, {}, False),
    ({"key": "pool", "operator": "DoesNotExist"}, {}, True),
]


@pytest.mark.parametrize(("expr", "labels", "expected"), NODE_CASES)
def test_a_node_selector_requirement_knows_gt_and_lt_and_fails_an_unknown_operator(expr, labels, expected):
    assert expression_matches(expr, labels, node=True) is expected


def test_required_node_affinity_matches_when_any_term_matches_whole():
    h100 = {"key": "pool", "operator": "In", "values": ["h100"]}
    big = {"key": "gpus", "operator": "Gt", "values": ["4"]}
    assert node_affinity_matches([[h100, big]], {"pool": "h100", "gpus": "8"})
    assert not node_affinity_matches([[h100, big]], {"pool": "h100", "gpus": "2"})
    assert node_affinity_matches([[h100, big], [{"key": "pool", "operator": "In", "values": ["a100"]}]],
                                 {"pool": "a100"})
    assert not node_affinity_matches([], {"pool": "h100"})


def test_no_other_module_compares_with_a_selector_operator():
    """Selector operators are judged in guywire.model.selectors only (the policy model names them in its
    enum and validation, which compare nothing to a label)."""
    operators = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "selectors.py" and path.parent.name == "model":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and c.value in operators for c in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, f"match selector operators through guywire.model.selectors: {found}"
