"""What a check run produced, as one value every renderer reads."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..engine.evaluator import Engine, Result
from ..inputs.loader import Diagnostic
from ..model.evaluation import EvaluationError
from ..model.finding import Finding
from ..model.severity import Severity


@dataclass(slots=True)
class Report:
    engine: Engine
    result: Result
    diagnostics: list[Diagnostic]
    files: int
    skipped_kinds: Counter = field(default_factory=Counter)
    fail_on: Severity | None = None
    baseline: Any = None  # a report.Comparison when --baseline was given: findings are then the new or worse ones
    baseline_source: str | None = None
    judged: Any = None  # a clusters.Judged when the run has several clusters or definitions read twice

    @property
    def engines(self) -> list[Engine]:
        """Every engine whose results are in the report: the clusters', then the shadow layers'."""
        return self.judged.engines if self.judged is not None else [self.engine]

    @property
    def cluster_engines(self) -> list[Engine]:
        """One engine per cluster (the graph of each)."""
        return [e for _, e in self.judged.clusters()] if self.judged is not None else [self.engine]

    @property
    def findings(self) -> list[Finding]:
        return self.result.findings

    @property
    def exempted(self) -> list[Finding]:
        """Findings a workload's ``guywire.dev/exempt`` (with a reason) keeps out of ``findings``."""
        return self.result.exempted

    def exempt_reason(self, f: Finding) -> str:
        w = self.engine.inventory.workloads.get((f.workload.namespace, f.workload.kind, f.workload.name))
        return w.decl.exempt_reason if w is not None else ""

    @property
    def errors(self) -> list[Diagnostic]:
        """Input that could not be read."""
        return [d for d in self.diagnostics if d.error]

    @property
    def evaluation_errors(self) -> list[EvaluationError]:
        """Rules that raised on an object: apart from the findings, and the run is not clean."""
        return self.result.errors

    @property
    def failed(self) -> bool:
        """Whether guywire could not evaluate everything (exit 2)."""
        return bool(self.errors or self.result.errors)

    def summary(self) -> dict:
        by_sev = Counter(f.severity.value for f in self.findings)
        by_rule = Counter(f.rule for f in self.findings)
        violating = {f.workload for f in self.findings}
        stats = combined_stats([e.graph.stats() for e in self.cluster_engines])
        return {
            "files": self.files,
            "workloads": self.result.evaluated,
            "skippedWorkloads": self.result.skipped,
            "services": sum(len(e.inventory.services) for e in self.cluster_engines),
            "violatingObjects": len(violating),
            "findings": len(self.findings),
            "exempted": len(self.exempted),
            "bySeverity": {s.value: by_sev.get(s.value, 0) for s in reversed(list(Severity))},
            "byRule": dict(sorted(by_rule.items())),
            "policies": list(dict.fromkeys(p.ref for e in self.cluster_engines for p in e.policies)),
            "skippedKinds": dict(sorted(self.skipped_kinds.items())),
            "graph": stats,
            "blastRadius": self.blast_radius(),
            **({"baseline": {"source": self.baseline_source, **self.baseline.to_dict()}}
               if self.baseline is not None else {}),
            "errors": len(self.errors) + len(self.result.errors),
            "evaluationErrors": len(self.result.errors),
        }

    def blast_radius(self, n: int = 5) -> list[dict]:
        """The workloads whose failure breaks the most, largest first (see guywire.graph.simulate.blast_radius)."""
        from ..graph.dependency_graph import wlabel
        from ..graph.simulate import blast_radius, top_blast_radii

        radii = {}
        for engine in self.cluster_engines:
            radii.update(top_blast_radii(blast_radius(engine), n))
        return [{"workload": wlabel(k), "kind": k[1], "entryPoints": r.entry_points, "workloads": r.workloads,
                 "entries": [wlabel(e) for e in r.entries]}
                for k, r in top_blast_radii(radii, n)]


def combined_stats(stats: list[dict]) -> dict:
    """Graph figures of several clusters: counts added, maxima the largest."""
    if len(stats) == 1:
        return stats[0]
    return {k: (max if k.startswith("max") else sum)(s[k] for s in stats) for k in stats[0]}
