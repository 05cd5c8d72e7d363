"""Whole-graph figures: each workload's blast radius (its annotation) and the graph's shape as gauges,
worked out at most every ``insights_interval``, not per event."""
from __future__ import annotations

import logging
import time  # perf_counter only: durations for the log, never the time of day

from ..clock import SYSTEM, Clock
from ..engine.evaluator import Engine
from .metrics import OperatorMetrics
from ..engine.insights import complexity_report

log = logging.getLogger("guywire.operator")
WKey = tuple[str, str, str]


class GraphFigures:
    def __init__(self, metrics: OperatorMetrics, interval: float, clock: Clock = SYSTEM):
        self.metrics, self.interval, self.clock = metrics, interval, clock
        self.blast: dict[WKey, str] = {}  # guywire.dev/blast-radius values, from the last pass
        self.dirty = True
        self.last = -float("inf")  # never

    def due(self) -> bool:
        return self.dirty and self.clock.monotonic() - self.last >= self.interval

    def update(self, engine: Engine) -> set[WKey]:
        """Work the figures out again; returns the workloads whose blast radius changed."""
        self.dirty = False
        self.last = self.clock.monotonic()
        started = time.perf_counter()
        report = complexity_report(engine)
        blast = {k: br.annotation() for k, br in report.blast_radius.items()}
        changed = {k for k in set(blast) | set(self.blast) if blast.get(k) != self.blast.get(k)}
        self.blast = blast
        m = self.metrics
        m.complexity.clear()
        m.findings_by_category.clear()
        for ns, figures in [("", report.cluster), *report.namespaces.items()]:
            for figure, value in figures.gauges().items():
                m.complexity.labels(figure, ns).set(value)
            for category, count in figures.findings_by_category.items():
                m.findings_by_category.labels(category, ns).set(count)
        log.info("Insights: %d workloads, longest chain %d, worst amplification %dx (%.0f ms).",
                 report.cluster.workloads, report.cluster.longest_chain, report.cluster.worst_amplification,
                 1000 * (time.perf_counter() - started))
        return changed
