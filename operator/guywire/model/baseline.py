"""The built-in baseline policy, without pydantic.

``guywire check`` with no ``--policy`` runs every rule at its default. Building that
policy from the pydantic models would import pydantic and build every model class,
which was most of the command's start-up (about 0.1 s of 0.37 s on the corpus in
bench/). So the defaults are also written here as plain data, read-only attribute
objects with the same field names as the models, and ``test_policy_model`` fails
when they drift from what ``PolicySpec()`` gives.

Policies a user writes are still parsed and validated by ``model.policy``.
"""
from __future__ import annotations

import fnmatch
from enum import Enum
from typing import Any, Sequence

BASELINE_NAME = "guywire-baseline"


class Enforcement(str, Enum):
    AUDIT = "Audit"
    WARN = "Warn"
    ENFORCE = "Enforce"


def override_for(overrides: Sequence[Any], rule_id: str) -> Any | None:
    """The last override naming ``rule_id`` exactly, else the last matching category glob (``GW-OBS-*``)."""
    exact = [o for o in overrides if o.rule == rule_id]
    if exact:
        return exact[-1]
    globbed = [o for o in overrides if fnmatch.fnmatchcase(rule_id, o.rule)]
    return globbed[-1] if globbed else None


# Image tags that move to a new build under the same name (GW-OBS-007's default floatingTags): Docker's
# and most projects' "latest", the nightly and branch builds (vllm/vllm-openai:nightly, :main), release
# channels (:edge, :stable) and their suffixed forms (rayproject/ray:latest-gpu, axolotl:main-latest).
FLOATING_TAGS = ("latest", "latest-*", "*-latest", "nightly", "nightly-*", "main", "master", "edge", "dev", "stable")

# What PolicySpec() holds, field by field (python names, as the models' attributes).
SPEC_DEFAULTS: dict[str, Any] = {
    "enforcement": Enforcement.AUDIT,
    "match": {"kinds": [], "namespaces": [], "namespace_selector": None, "selector": None, "gpu_only": False},
    "exclude": {"kinds": [], "namespaces": [], "names": [], "selector": None},
    "rules": {
        "dependencies": {"max_fan_out": 6, "max_depth": 4, "forbid_cycles": True, "require_resolvable": True,
                         "require_declared": True, "allow_cross_namespace": ["*"]},
        "retries": {"max_attempts": 3, "max_amplification": 10, "require_timeout": True, "require_backoff": True,
                    "forbid_timeout_inversion": True, "mesh_defaults": True},
        "observability": {"readiness_probe": True, "liveness_probe": True, "metrics": True, "resources": True,
                          "gpu_resources": True, "required_labels": ["app.kubernetes.io/name"],
                          "mutable_image_tags": False, "floating_tags": list(FLOATING_TAGS)},
        "gpu": {"block_unhealthy_nodes": True, "warn_degraded_nodes": True, "report_max_age": 300.0},
        "complexity": {"max_score": 40},
        "simplify": {"enabled": False},
    },
    "overrides": [],
}


class Fields:
    """Read-only attributes over a dict, nested dicts becoming Fields too; lists are copied."""

    def __init__(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            object.__setattr__(self, key, _frozen(value))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def as_dict(self) -> dict[str, Any]:
        return {k: v.as_dict() if isinstance(v, Fields) else list(v) if isinstance(v, list) else v
                for k, v in vars(self).items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fields) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return Fields(value)
    if isinstance(value, list):
        return list(value)
    return value


class BaselineSpec(Fields):
    def override_for(self, rule_id: str) -> Any | None:
        return override_for(self.overrides, rule_id)  # type: ignore[attr-defined]


class BaselinePolicy:
    """Quacks like ``model.policy.Policy`` for the engine, rules and renderers."""

    kind = "ClusterComplexityPolicy"
    name = BASELINE_NAME
    namespace = None
    generation = None
    ref = f"ClusterComplexityPolicy/{BASELINE_NAME}"

    def __init__(self) -> None:
        self.spec = BaselineSpec(SPEC_DEFAULTS)

    def __repr__(self) -> str:
        return f"BaselinePolicy(name={self.name!r})"


def baseline_policy() -> BaselinePolicy:
    """The built-in policy used when none is given: every rule at its default, Audit."""
    return BaselinePolicy()
