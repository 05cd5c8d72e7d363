"""Prometheus metrics of the operator and the webhook, with bounded labels only.

One ``OperatorMetrics`` per operator: its own registry and the metric objects in it, created with the
operator and handed to whatever counts (the state's index and writers, the webhook) through kopf's memo,
never module globals, so two operators in one process (tests) count apart.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    """The registry served on ``--metrics-port`` and every metric in it."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.findings = Gauge("guywire_findings", "Current findings by rule, severity and namespace.",
                              ["rule", "severity", "namespace"], registry=r)
        self.evaluation_seconds = Histogram(
            "guywire_evaluation_duration_seconds", "Time to evaluate workloads.", ["scope"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.workloads_indexed = Gauge("guywire_workloads_indexed", "Workloads held in the operator's index.",
                                       registry=r)
        self.services_indexed = Gauge("guywire_services_indexed", "Services held in the operator's index.",
                                      registry=r)
        self.policies = Gauge("guywire_policies", "Policies known, by readiness.", ["ready"], registry=r)
        self.events = Counter("guywire_events_total", "Kubernetes Events posted, by type.", ["type"], registry=r)
        self.events_dropped = Counter("guywire_events_dropped_total", "Events not posted: the queue or the "
                                      "retries were full, or the API refused the Event as invalid.", registry=r)
        self.patches = Counter("guywire_patches_total", "Writes to the API, by target and outcome.",
                               ["target", "outcome"], registry=r)
        self.api_errors = Counter("guywire_api_errors_total", "API calls that failed after retries, by operation.",
                                  ["operation"], registry=r)
        self.admission_requests = Counter("guywire_admission_requests_total",
                                          "Admission decisions, by outcome and policy.", ["outcome", "policy"],
                                          registry=r)
        self.admission_seconds = Histogram(
            "guywire_admission_duration_seconds", "Server-side admission latency.", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
        self.admission_errors = Counter("guywire_admission_errors_total",
                                        "Requests the engine could not evaluate (allowed).", registry=r)
        self.admission_shed = Counter("guywire_admission_shed_total", "Reviews answered 503 at once, not judged, "
                                      "because a large review was being judged (the webhook's failurePolicy "
                                      "applies).", registry=r)
        self.webhook_connections = Gauge("guywire_webhook_connections", "Open connections to the admission "
                                         "webhook.", registry=r)
        self.webhook_connections_closed = Counter("guywire_webhook_connections_closed_total", "Webhook connections "
                                                  "closed by guywire, by reason: cap (every connection being answered), "
                                                  "evicted (its place taken at the cap), headers, body, idle.",
                                                  ["reason"], registry=r)
        self.admission_rule_errors = Counter("guywire_admission_rule_errors_total", "Admission requests on which a "
                                             "rule raised, by rule: the request was allowed for that rule (never "
                                             "denied by it).", ["rule"], registry=r)
        self.evaluation_errors = Gauge("guywire_evaluation_errors", "Current evaluation errors (a rule that raised "
                                       "on an object; not findings), by rule and namespace (\"\" for Nodes).",
                                       ["rule", "namespace"], registry=r)
        self.taints = Gauge("guywire_gpu_nodes_tainted", "GPU nodes tainted by guywire.", registry=r)
        self.complexity = Gauge("guywire_complexity", "The dependency graph's shape per namespace (namespace=\"\" "
                                "for the cluster): workloads, dependency_edges, longest_chain, cycles, "
                                "worst_retry_amplification, complexity_score_mean/max, undeclared_calls, "
                                "entry_points, largest_blast_radius.", ["figure", "namespace"], registry=r)
        self.findings_by_category = Gauge("guywire_findings_by_category", "Current findings by rule category and "
                                          "namespace (namespace=\"\" for the cluster).", ["category", "namespace"],
                                          registry=r)
        self.policy_reports = Counter("guywire_policy_reports_written_total",
                                      "PolicyReports written or deleted, by outcome.", ["outcome"], registry=r)

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet)."""
        return self.registry.get_sample_value(name, labels) or 0.0
