"""What is one cluster, and judging every definition of an object, not only the last one read.

``guywire check`` reads files that may come from several clusters: a repository with one folder
per environment, a folder of unrelated examples. ``--cluster-per`` says which objects share a
graph (Services, callers, policies): ``input`` (all of them, the default), ``dir`` (the files of
one directory) or ``file``.

Within one cluster an object defined twice (same kind, namespace and name) is one object, as in
a real cluster: the definition read last is the one in the graph. Every earlier definition is
judged too, on its own: in a copy of the cluster where it takes the place of the one kept (a
*shadow layer*), so its own labels, ports and annotations decide, and its findings point at its
own file. Pure: plain views in, engines out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from ..engine.evaluator import Engine, PolicyResult, Result, merge_findings
from ..model.evaluation import unique_errors
from ..views.inventory import Inventory
from ..views.workload import Service, Workload

if TYPE_CHECKING:
    from ..model.policy import Policy

CLUSTER_PER = ("input", "dir", "file")


def cluster_of(file: str, per: str) -> str:
    """The name of the cluster a file's objects belong to: "" (the whole input), its directory, or itself."""
    if per == "input":
        return ""
    if per == "dir":
        return os.path.dirname(file) or "."
    if per == "file":
        return file
    raise ValueError(f"--cluster-per {per!r} is not one of {', '.join(CLUSTER_PER)}.")


@dataclass(slots=True)
class Cluster:
    """The objects of one cluster: the inventory the graph is built from, the policies found in its files,
    and the shadow layers (each a list of earlier definitions, at most one per object)."""

    name: str
    inventory: Inventory = field(default_factory=Inventory)
    policies: list[Policy] = field(default_factory=list)
    shadows: list[list[Any]] = field(default_factory=list)

    def add(self, view: Any) -> tuple[bool, Any]:
        """Hold ``view`` as :meth:`Inventory.add` does. When it redefines an object already held, the
        earlier definition moves to the first shadow layer without that object and is returned second."""
        earlier = None
        if isinstance(view, Workload) and view.owner is None:
            earlier = self.inventory.workloads.get(view.key)
        elif isinstance(view, Service):
            earlier = self.inventory.services.get(view.key)
            if earlier is not None and earlier.backend is not None:
                earlier = None  # a Service a controller would make, replaced by the real one
        if earlier is not None:
            self._shadow(earlier)
        return self.inventory.add(view), earlier

    def _shadow(self, view: Any) -> None:
        kind = type(view)
        for layer in self.shadows:
            if not any(type(v) is kind and v.key == view.key for v in layer):
                layer.append(view)
                return
        self.shadows.append([view])


def shadow_inventory(base: Inventory, layer: Iterable[Any]) -> Inventory:
    """``base`` with the definitions of ``layer`` in place of the ones it holds (``base`` is not changed)."""
    inv = Inventory(workloads=dict(base.workloads), services=dict(base.services), monitors=base.monitors,
                    namespaces=base.namespaces, nodes=base.nodes, meshes=base.meshes)
    for view in layer:
        inv.add(view)
    return inv


@dataclass(slots=True)
class Judged:
    """The engines of a run: one per cluster (``primary``), then one per shadow layer, which judges only the
    earlier definitions it holds. Renderers read the primary engines for the graph and all of them for findings."""

    engines: list[Engine]
    names: list[str]  # the cluster each engine belongs to
    primary: list[bool]

    @property
    def first(self) -> Engine:
        return self.engines[0]

    def clusters(self) -> list[tuple[str, Engine]]:
        return [(n, e) for n, e, p in zip(self.names, self.engines, self.primary) if p]

    def evaluate_all(self) -> Result:
        return combine([e.result() for e in self.engines], [p for p in self.primary])


def combine(results: list[Result], primary: list[bool]) -> Result:
    """One Result from the results of several engines (findings of equal objects from different
    definitions stay apart: a finding's source is part of its identity)."""
    if len(results) == 1:
        return results[0]
    policies: list[PolicyResult] = []
    for r, p in zip(results, primary):
        if p:
            policies += r.policies
    return Result(findings=merge_findings(r.findings for r in results), policies=policies,
                  evaluated=sum(r.evaluated for r in results), skipped=sum(r.skipped for r in results),
                  errors=unique_errors(e for r in results for e in r.errors),
                  exempted=merge_findings(r.exempted for r in results))


def judge(clusters: list[Cluster], extra_policies: list[Policy], default: list[Policy], *,
          now: datetime | None = None, keep_exempted: bool = False) -> Judged:
    """An evaluated engine per cluster (its own policies plus ``extra_policies``, else ``default``), and one per
    shadow layer that judges the earlier definitions only."""
    engines: list[Engine] = []
    names: list[str] = []
    primary: list[bool] = []
    for c in clusters or [Cluster("")]:
        policies = (c.policies + extra_policies) or default
        engine = Engine(policies, c.inventory, now=now, keep_exempted=keep_exempted)
        engine.evaluate_all()
        engines.append(engine)
        names.append(c.name)
        primary.append(True)
        for layer in c.shadows:
            shadow = Engine(policies, shadow_inventory(c.inventory, layer), now=now, keep_exempted=keep_exempted)
            shadow.evaluate_only([v.key for v in layer if isinstance(v, Workload)],
                                 [v.key for v in layer if isinstance(v, Service)])
            engines.append(shadow)
            names.append(c.name)
            primary.append(False)
    return Judged(engines, names, primary)


__all__ = ["CLUSTER_PER", "Cluster", "Judged", "cluster_of", "combine", "judge", "shadow_inventory"]
