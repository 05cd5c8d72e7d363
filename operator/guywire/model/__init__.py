"""Pure data: policies, findings, severities, durations."""
from .finding import Finding, ObjectRef, SourceRef
from .policy import (
    API_GROUP, API_VERSION, BASELINE_NAME, Enforcement, LabelSelector, Policy, PolicyError, PolicySpec,
    PolicyStatus, baseline_policy, parse_policy,
)
from .severity import Severity
from .units import Duration, format_duration, parse_duration

__all__ = [
    "API_GROUP", "API_VERSION", "BASELINE_NAME", "Duration", "Enforcement", "Finding", "LabelSelector",
    "ObjectRef", "Policy", "PolicyError", "PolicySpec", "PolicyStatus", "Severity", "SourceRef",
    "baseline_policy", "format_duration", "parse_duration", "parse_policy",
]
