"""The complexity score: one number per workload for how much a person must hold in mind to change it safely."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

from ..model.severity import Severity
from ..views.workload import Workload
from .base import Context, Issue, measured, rule

if TYPE_CHECKING:
    from ..model.policy import ComplexityRules
    from ..graph.dependency_graph import Graph

#: The weights of the score, documented in GW-CPX-001 and in docs/rules.md.
WEIGHTS = {
    "dependencies": 2,     # per direct dependency (fan-out)
    "depth": 3,            # per hop of the longest downstream chain
    "amplification": 2,    # per doubling of the worst retry amplification (ceil(log2))
    "cycle": 10,           # once, when on a dependency cycle
    "undeclared": 3,       # per call found in env but not declared
    "crossNamespace": 1,   # per dependency in another namespace
    "external": 1,         # per dependency outside the cluster
    "containers": 1,       # per container beyond the first, init containers and sidecars included
    "annotationErrors": 2,  # per guywire annotation that could not be read
}


def score_parts(w: Workload, graph: "Graph") -> dict[str, int]:
    edges = graph.out.get(w.key, ())
    a = graph.analysis.get(w.key)
    amp = a.amplification if a else 1
    counts = {
        "dependencies": len(edges),
        "depth": a.depth if a else 0,
        "amplification": math.ceil(math.log2(amp)) if amp > 1 else 0,
        "cycle": 1 if (a and a.scc in graph.sccs) else 0,
        "undeclared": sum(1 for e in edges if not e.declared),
        "crossNamespace": sum(1 for e in edges if not e.external and e.namespace != w.namespace),
        "external": sum(1 for e in edges if e.external),
        "containers": max(0, len(w.containers) - 1),
        "annotationErrors": len(w.decl.errors),
    }
    return {k: WEIGHTS[k] * v for k, v in counts.items() if v}


def complexity_score(w: Workload, graph: "Graph") -> int:
    return sum(score_parts(w, graph).values())


@rule(id="GW-CPX-001", name="complexity-score", severity=Severity.MEDIUM, section="complexity", unit="points",
      limit_from="rules.complexity.maxScore",
      summary="The workload's complexity score is above maxScore.",
      remediation="Reduce the largest parts named in the message (dependencies, depth, retries, cycles), or raise "
                  "rules.complexity.maxScore.")
def complexity_score_rule(w: Workload, params: ComplexityRules, ctx: Context) -> Iterator[Issue]:
    """The score adds up what makes a workload hard to change safely:

    | part | points |
    |---|---|
    | direct dependency (fan-out) | 2 each |
    | hop of the longest downstream chain (depth) | 3 each |
    | doubling of the worst retry amplification, ceil(log2) | 2 each |
    | on a dependency cycle | 10 |
    | call found in env but not declared | 3 each |
    | dependency in another namespace | 1 each |
    | dependency outside the cluster | 1 each |
    | container beyond the first (init and sidecars included) | 1 each |
    | guywire annotation that could not be read | 2 each |

    Example: a gateway with 2 dependencies, a 4-hop chain below it and 27x amplification scores
    2x2 + 4x3 + 5x2 = 26. The score is written on every evaluated workload as
    guywire.dev/complexity-score, whether or not it is above the limit."""
    parts = score_parts(w, ctx.graph)
    total = sum(parts.values())
    if total > params.max_score:
        top = sorted(parts.items(), key=lambda kv: -kv[1])[:4]
        yield measured("has complexity score {observed}, above the limit of {limit} ({parts}). Reduce the largest part.",
                       observed=total, limit=params.max_score, unit="points",
                       parts=", ".join(f"{k} {v}" for k, v in top))
