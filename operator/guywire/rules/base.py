"""What a rule is: metadata plus one pure function (STYLE.md rule 2)."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..model.severity import Severity
from ..model.units import UNITS, render_figure

if TYPE_CHECKING:
    from ..model.policy import Policy
    from pydantic import BaseModel
    from ..graph.dependency_graph import Graph
    from ..views.inventory import Inventory

RULE_ID = re.compile(r"^GW-[A-Z]{3}-\d{3}$")
RULE_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
CATEGORIES = {
    "DEP": "dependencies", "RTY": "retries", "OBS": "observability", "GPU": "gpu", "CPX": "complexity",
    "ANN": "annotations", "SMP": "simplify",
}


@dataclass(slots=True)
class Issue:
    """What a check yields: the message body, and where inside the object; for a measuring rule, the
    figures it compared (build those with :func:`measured`, which renders the message from them)."""

    message: str
    location: str | None = None
    path: list[str] = field(default_factory=list)
    severity: Severity | None = None
    observed: float | None = None
    limit: float | None = None
    unit: str | None = None


def measured(template: str, *, observed: float, limit: float | None, unit: str, location: str | None = None,
             path: list[str] | None = None, **words: str) -> Issue:
    """An Issue whose numbers are data: ``{observed}`` and ``{limit}`` in ``template`` are rendered from
    ``observed`` and ``limit`` (``model.units.render_figure``), every other ``{name}`` from ``words``.
    Names and other values a user wrote go in ``words``, never into the template, so their braces are text."""
    text = template.format(observed=render_figure(observed, unit),
                           limit=render_figure(limit, unit) if limit is not None else "", **words)
    return Issue(text, location, path if path is not None else [], observed=observed, limit=limit, unit=unit)


@dataclass(slots=True)
class Context:
    """Everything a rule may read besides the workload. Rules never read clocks, env or network."""

    inventory: "Inventory"
    graph: "Graph"
    policy: Policy
    now: datetime | None = None
    node_health: dict[str, Any] = field(default_factory=dict)  # node name -> GPU health report
    gpu_pods: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)  # workload key -> nodes
    memo: dict = field(default_factory=dict)  # lookups shared by the checks of one evaluation pass

    def monitors_in(self, namespace: str) -> list:
        """The ServiceMonitors / PodMonitors that cover ``namespace`` (computed once per pass)."""
        key = ("monitors", namespace)
        found = self.memo.get(key)
        if found is None:
            found = [m for m in self.inventory.monitors.values() if m.covers_namespace(namespace)]
            self.memo[key] = found
        return found


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    category: str
    severity: Severity
    summary: str
    remediation: str
    section: str | None  # the policy's rules.<section> model that holds this rule's params
    switch: str | None  # a bool param that turns the rule on or off
    target: str  # "workload", "node" or "service"
    check: Callable[..., Iterator[Issue]]
    doc: str
    needs_edges: bool = False  # finds nothing on a workload without outbound dependencies
    unit: str | None = None  # what its findings' observed (and limit) count; None: it measures nothing
    limit_from: str | None = None  # where its limit comes from (a policy field), None: it has no limit

    def params(self, policy: Policy) -> BaseModel | None:
        return getattr(policy.spec.rules, self.section) if self.section else None

    def enabled_in(self, policy: Policy) -> bool:
        params = self.params(policy)
        if self.switch and params is not None and not getattr(params, self.switch):
            return False
        ov = policy.spec.override_for(self.id)
        return not (ov and ov.disabled)

    def severity_in(self, policy: Policy) -> Severity:
        ov = policy.spec.override_for(self.id)
        return ov.severity if ov and ov.severity else self.severity


REGISTRY: dict[str, Rule] = {}


def rule(*, id: str, name: str, severity: Severity, summary: str, remediation: str,
         section: str | None = None, switch: str | None = None, target: str = "workload",
         needs_edges: bool = False, unit: str | None = None, limit_from: str | None = None):
    """Register ``check(obj, params, ctx) -> Iterator[Issue]`` as a rule. Duplicate ids are refused.

    A rule that measures names its ``unit`` (and ``limit_from``, the policy field its limit comes from,
    when it has one): its findings then carry ``observed`` (and ``limit``), built with :func:`measured`."""

    def wrap(fn: Callable[..., Iterator[Issue]]) -> Callable[..., Iterator[Issue]]:
        if not RULE_ID.match(id):
            raise ValueError(f"rule id {id!r} is not of the form GW-XXX-000.")
        if id in REGISTRY:
            raise ValueError(f"rule id {id} is registered twice.")
        if not RULE_NAME.match(name):
            raise ValueError(f"rule name {name!r} is not kebab-case.")
        if not remediation.strip():
            raise ValueError(f"rule {id} has no remediation.")
        if unit is not None and unit not in UNITS:
            raise ValueError(f"rule {id} measures in {unit!r}, which is not one of {', '.join(UNITS)}.")
        if limit_from is not None and unit is None:
            raise ValueError(f"rule {id} names a limit but no unit.")
        category = CATEGORIES[id.split("-")[1]]
        REGISTRY[id] = Rule(id=id, name=name, category=category, severity=severity, summary=summary,
                            remediation=remediation, section=section, switch=switch, target=target, check=fn,
                            doc=inspect.cleandoc(fn.__doc__ or ""), needs_edges=needs_edges, unit=unit,
                            limit_from=limit_from)
        return fn

    return wrap
