"""The ComplexityPolicy / ClusterComplexityPolicy spec and status.

The CRD schema is generated from these models (``guywire crd``), so every field,
default and limit here is what the API server enforces too.
"""
from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, WithJsonSchema, model_validator,
)
from pydantic.alias_generators import to_camel

from .baseline import BASELINE_NAME, FLOATING_TAGS, Enforcement, baseline_policy, override_for  # noqa: F401
from .kinds import JUDGED_KINDS
from .messages import clip
from .selectors import labels_match, requirement_matches
from .severity import Severity
from .units import DURATION_PATTERN, format_duration, parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]

RULE_ID_PATTERN = r"^GW-[A-Z]{3}-(\d{3}|\*)$"

# Bounds on every list and string of a policy: the API server refuses a policy beyond them (maxItems,
# maxLength in the CRD) and so does the model, so matching costs O(workloads) per policy, not
# O(workloads x a list of any length). docs/limits.md lists them.
MAX_GLOBS = 256  # namespaces / names (or globs) in one match, exclude or allowCrossNamespace list
MAX_NAME = 253  # a DNS subdomain: the longest object or namespace name
MAX_KINDS = len(JUDGED_KINDS)
MAX_LABELS = 64  # labels in requiredLabels, matchLabels, matchExpressions
MAX_VALUES = 256  # values of one matchExpression
MAX_LABEL_KEY = 317  # prefix (253) + "/" + name (63)
MAX_LABEL_VALUE = 63

Glob = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
LabelKey = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_KEY)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE)]


def _known_kind(value: Any) -> Any:
    if isinstance(value, str) and value not in JUDGED_KINDS:
        raise ValueError(f"{value!r} is not a kind guywire judges; use one of {', '.join(JUDGED_KINDS)}")
    return value


KindName = Annotated[str, BeforeValidator(_known_kind),
                     WithJsonSchema({"type": "string", "enum": list(JUDGED_KINDS)})]
Count = Annotated[int, Field(strict=True)]  # `maxFanOut: true` is refused, not read as 1


def compile_globs(patterns: list[str]):
    """One test for a list of names and globs: exact names in a set, the globs in one compiled regex.
    ``fnmatch`` per pattern recompiles once its cache (32768 patterns) overflows."""
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in exact]
    regex = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None

    def matches(name: str) -> bool:
        return name in exact or (regex is not None and regex.match(name) is not None)
    return matches
API_GROUP = "guywire.dev"
API_VERSION = "v1alpha1"


class Strict(BaseModel):
    """Unknown fields are refused, so a typo never silently becomes a default."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class SelectorOperator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Strict):
    key: LabelKey
    operator: SelectorOperator
    values: list[LabelValue] = Field(default_factory=list, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> "LabelSelectorRequirement":
        if self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not self.values:
            raise ValueError(f"operator {self.operator.value} needs values")
        if self.operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and self.values:
            raise ValueError(f"operator {self.operator.value} takes no values")
        return self


class LabelSelector(Strict):
    """A Kubernetes label selector; an empty one matches everything."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=MAX_LABELS)

    def matches(self, labels: dict[str, str]) -> bool:
        return labels_match(self.match_labels, labels) and all(
            requirement_matches(r.key, r.operator.value, r.values, labels) for r in self.match_expressions)


class Match(Strict):
    """Which workloads a policy looks at. Empty lists mean all."""

    kinds: list[KindName] = Field(default_factory=list, max_length=MAX_KINDS,
                                  description="Workload kinds, e.g. Deployment. Empty: all kinds.")
    namespaces: list[Glob] = Field(default_factory=list, max_length=MAX_GLOBS,
                                   description="Namespace names or globs. Empty: all.")
    namespace_selector: LabelSelector | None = None
    selector: LabelSelector | None = Field(default=None, description="Selects on the workload's labels.")
    gpu_only: bool = Field(default=False, description="Only workloads that request GPUs.")

    @cached_property
    def namespace_matches(self):
        return compile_globs(self.namespaces)


class Exclude(Strict):
    """Workloads a policy never looks at."""

    kinds: list[KindName] = Field(default_factory=list, max_length=MAX_KINDS)
    namespaces: list[Glob] = Field(default_factory=list, max_length=MAX_GLOBS,
                                   description="Namespace names or globs.")
    names: list[Glob] = Field(default_factory=list, max_length=MAX_GLOBS, description="Workload names or globs.")
    selector: LabelSelector | None = None

    @cached_property
    def namespace_matches(self):
        return compile_globs(self.namespaces)

    @cached_property
    def name_matches(self):
        return compile_globs(self.names)


class DependencyRules(Strict):
    max_fan_out: Count = Field(default=6, ge=0, le=10_000, description="Most direct dependencies one workload may have.")
    max_depth: Count = Field(default=4, ge=0, le=10_000, description="Longest downstream call chain, in hops.")
    forbid_cycles: bool = True
    require_resolvable: bool = True
    require_declared: bool = Field(default=True, description="Calls found in env must also be in depends-on.")
    allow_cross_namespace: list[Glob] = Field(
        default_factory=lambda: ["*"], max_length=MAX_GLOBS,
        description="Namespaces (globs) a workload may depend on besides its own. [] forbids all.",
    )


class RetryRules(Strict):
    max_attempts: Count = Field(default=3, ge=1, le=1000, description="Most attempts on one hop, the first included.")
    max_amplification: Count = Field(default=10, ge=1, le=1_000_000, description="Most calls one request may cause at the end of any path.")
    require_timeout: bool = True
    require_backoff: bool = True
    forbid_timeout_inversion: bool = True
    mesh_defaults: bool = Field(
        default=True, description="Count Istio's default retries (2 retries) on calls from workloads in the mesh "
                                  "that no VirtualService or HTTPRoute gives retries (amplification, inversion). "
                                  "The graph counts them unless every policy turns this off.")


class ObservabilityRules(Strict):
    readiness_probe: bool = True
    liveness_probe: bool = True
    metrics: bool = True
    resources: bool = True
    gpu_resources: bool = True
    required_labels: list[LabelKey] = Field(default_factory=lambda: ["app.kubernetes.io/name"],
                                            max_length=MAX_LABELS)
    mutable_image_tags: bool = Field(default=False, description="Allow :latest, floating or untagged images.")
    floating_tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: list(FLOATING_TAGS), max_length=100,
        description="Tags that move to a new build under the same name (globs, e.g. latest-*); an image with one of "
                    "them is mutable (GW-OBS-007). A digest always pins.")


class GpuRules(Strict):
    block_unhealthy_nodes: bool = True
    warn_degraded_nodes: bool = True
    report_max_age: Duration = Field(default=300.0, description="A GPU node's health report older than this is stale.")


class ComplexityRules(Strict):
    max_score: Count = Field(default=40, ge=0, le=1_000_000)


class SimplifyRules(Strict):
    """Suggestions of what can be removed (GW-SMP). Off unless enabled; ``guywire report`` always lists them."""

    enabled: bool = Field(default=False, description="Report the GW-SMP simplification suggestions.")


class Rules(Strict):
    dependencies: DependencyRules = Field(default_factory=DependencyRules)
    retries: RetryRules = Field(default_factory=RetryRules)
    observability: ObservabilityRules = Field(default_factory=ObservabilityRules)
    gpu: GpuRules = Field(default_factory=GpuRules)
    complexity: ComplexityRules = Field(default_factory=ComplexityRules)
    simplify: SimplifyRules = Field(default_factory=SimplifyRules)


class Override(Strict):
    rule: str = Field(pattern=RULE_ID_PATTERN, max_length=10, description="A rule id, or a category such as GW-OBS-*.")
    severity: Severity | None = None
    disabled: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> "Override":
        if self.severity is None and not self.disabled:
            raise ValueError("an override sets a severity or disables the rule")
        return self


class PolicySpec(Strict):
    enforcement: Enforcement = Enforcement.AUDIT
    match: Match = Field(default_factory=Match)
    exclude: Exclude = Field(default_factory=Exclude)
    rules: Rules = Field(default_factory=Rules)
    overrides: list[Override] = Field(default_factory=list, max_length=200)

    def override_for(self, rule_id: str) -> Override | None:
        """The last override naming ``rule_id`` exactly, else the last matching category glob."""
        return override_for(self.overrides, rule_id)


class Condition(Strict):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class FindingSummary(Strict):
    rule: str
    severity: Severity
    workload: str
    message: str


class PolicyStatus(Strict):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    matched: int = 0
    violating: int = 0
    findings: list[FindingSummary] = Field(default_factory=list)
    truncated: int = 0
    last_evaluated: datetime | None = None


class Policy(BaseModel):
    """A parsed policy object: which kind, where it lives, and its spec."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ComplexityPolicy", "ClusterComplexityPolicy"]
    name: str
    namespace: str | None = None
    generation: int | None = None
    spec: PolicySpec

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}" if not self.namespace else f"{self.kind} {self.namespace}/{self.name}"


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the field."""


def format_validation_error(err: ValidationError, prefix: str = "spec") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join([prefix, *(str(x) for x in e["loc"])]) if e["loc"] else prefix
        if e["loc"][-1:] == ("[key]",):  # a map key: its place, a key too long to show clipped, its length
            key = str(e["loc"][-2])
            shown = json.dumps(clip(key, 40), ensure_ascii=False)
            loc = ".".join([prefix, *(str(x) for x in e["loc"][:-2])]) + f"[{shown}] key ({len(key)} characters)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg.rstrip('.')}")
    return "; ".join(parts) + "."


def parse_policy(obj: Any) -> Policy:
    """Parse a policy object (a dict as the API returns it); raise PolicyError naming the field."""
    if not isinstance(obj, dict):
        raise PolicyError("a policy must be an object.")
    kind = obj.get("kind")
    if kind not in ("ComplexityPolicy", "ClusterComplexityPolicy"):
        raise PolicyError(f"kind: {kind!r} is not ComplexityPolicy or ClusterComplexityPolicy.")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise PolicyError("metadata.name: required.")
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise PolicyError("spec: must be an object.")
    try:
        parsed = PolicySpec.model_validate(spec)
    except ValidationError as err:
        raise PolicyError(format_validation_error(err)) from None
    if kind == "ComplexityPolicy" and parsed.match.namespace_selector is not None:
        raise PolicyError("spec.match.namespaceSelector: a ComplexityPolicy applies to its own namespace only; "
                          "use a ClusterComplexityPolicy to select namespaces.")
    namespace = meta.get("namespace") if kind == "ComplexityPolicy" else None
    if kind == "ComplexityPolicy" and not namespace:
        namespace = "default"
    gen = meta.get("generation")
    return Policy(kind=kind, name=meta["name"], namespace=namespace,
                  generation=gen if isinstance(gen, int) else None, spec=parsed)
