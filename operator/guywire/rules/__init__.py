"""The rule registry. Importing this package registers every rule."""
from . import annotation_checks, complexity, dependencies, gpu_nodes, observability, retries, simplify  # noqa: F401  (registration)
from .base import REGISTRY, Context, Issue, Rule, rule

__all__ = ["REGISTRY", "Context", "Issue", "Rule", "rule", "all_rules"]


def all_rules() -> list[Rule]:
    return [REGISTRY[k] for k in sorted(REGISTRY)]
