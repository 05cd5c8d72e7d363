"""The one label matcher: label selectors (``matchLabels`` and ``matchExpressions``), the plain label sets
of a Service's selector and a ``nodeSelector``, and the match expressions of required node affinity.

Manifests are read leniently here (a missing or mistyped part matches as if absent), since the views
and rules that call it must not raise on bad input.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def labels_match(wanted: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every wanted label is there with that value (a Service's selector, a nodeSelector, matchLabels)."""
    return all(labels.get(k) == v for k, v in wanted.items())


def requirement_matches(key: str, operator: Any, values: Collection[str], labels: Mapping[str, str], *,
                        node: bool = False) -> bool:
    """One match expression. ``node``: a node selector requirement (required node affinity), which also
    knows ``Gt`` and ``Lt`` (one integer value) and matches nothing with an operator it does not know; a
    label selector's unknown operator, which the API server refuses, is passed over."""
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if not node:
        return True
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, want = int(labels[key]), int(next(iter(values)))
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def expression_matches(expr: Mapping, labels: Mapping[str, str], *, node: bool = False) -> bool:
    """A match expression as a manifest writes it: ``{"key": ..., "operator": ..., "values": [...]}``."""
    values = expr.get("values")
    return requirement_matches(str(expr.get("key", "")), expr.get("operator"),
                               [str(v) for v in values] if isinstance(values, list) else [], labels, node=node)


def selector_matches(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A label selector as a manifest writes it (a ServiceMonitor's or PodMonitor's ``selector``)."""
    wanted = selector.get("matchLabels")
    if isinstance(wanted, dict) and not all(labels.get(str(k)) == str(v) for k, v in wanted.items()):
        return False
    exprs = selector.get("matchExpressions")
    return all(expression_matches(e if isinstance(e, dict) else {}, labels)
               for e in (exprs if isinstance(exprs, list) else []))


def node_affinity_matches(terms: list[list[dict]], labels: Mapping[str, str]) -> bool:
    """Required node affinity: any term whose every expression matches the node's labels."""
    return any(all(expression_matches(e, labels, node=True) for e in term) for term in terms)
