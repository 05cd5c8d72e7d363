"""Prometheus metrics of the operator and the webhook, in one registry, with bounded labels only."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FINDINGS = Gauge("guywire_findings", "Current findings by rule, severity and namespace.",
                 ["rule", "severity", "namespace"], registry=REGISTRY)
EVALUATION_SECONDS = Histogram("guywire_evaluation_duration_seconds", "Time to evaluate workloads.",
                               ["scope"], registry=REGISTRY,
                               buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WORKLOADS_INDEXED = Gauge("guywire_workloads_indexed", "Workloads held in the operator's index.", registry=REGISTRY)
SERVICES_INDEXED = Gauge("guywire_services_indexed", "Services held in the operator's index.", registry=REGISTRY)
POLICIES = Gauge("guywire_policies", "Policies known, by readiness.", ["ready"], registry=REGISTRY)
EVENTS = Counter("guywire_events_total", "Kubernetes Events posted, by type.", ["type"], registry=REGISTRY)
EVENTS_DROPPED = Counter("guywire_events_dropped_total", "Events not posted: the queue or the retries were full, or the API refused the Event as invalid.",
                         registry=REGISTRY)
PATCHES = Counter("guywire_patches_total", "Writes to the API, by target and outcome.", ["target", "outcome"],
                  registry=REGISTRY)
API_ERRORS = Counter("guywire_api_errors_total", "API calls that failed after retries, by operation.",
                     ["operation"], registry=REGISTRY)
ADMISSION_REQUESTS = Counter("guywire_admission_requests_total", "Admission decisions, by outcome and policy.",
                             ["outcome", "policy"], registry=REGISTRY)
ADMISSION_SECONDS = Histogram("guywire_admission_duration_seconds", "Server-side admission latency.",
                              registry=REGISTRY,
                              buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
ADMISSION_ERRORS = Counter("guywire_admission_errors_total", "Requests the engine could not evaluate (allowed).",
                           registry=REGISTRY)
ADMISSION_SHED = Counter("guywire_admission_shed_total", "Reviews answered 503 at once, not judged, because a large "
                         "review was being judged (the webhook's failurePolicy applies).", registry=REGISTRY)
WEBHOOK_CONNECTIONS = Gauge("guywire_webhook_connections", "Open connections to the admission webhook.",
                            registry=REGISTRY)
WEBHOOK_CONNECTIONS_CLOSED = Counter("guywire_webhook_connections_closed_total", "Webhook connections closed by "
                                     "guywire, by reason: cap, headers, body, idle.", ["reason"], registry=REGISTRY)
ADMISSION_RULE_ERRORS = Counter("guywire_admission_rule_errors_total", "Admission requests on which a rule "
                                "raised, by rule: the request was allowed for that rule (never denied by it).",
                                ["rule"], registry=REGISTRY)
EVALUATION_ERRORS = Gauge("guywire_evaluation_errors", "Current evaluation errors (a rule that raised on an "
                          "object; not findings), by rule and namespace (\"\" for Nodes).", ["rule", "namespace"],
                          registry=REGISTRY)
TAINTS = Gauge("guywire_gpu_nodes_tainted", "GPU nodes tainted by guywire.", registry=REGISTRY)
COMPLEXITY = Gauge("guywire_complexity", "The dependency graph's shape per namespace (namespace=\"\" for the "
                   "cluster): workloads, dependency_edges, longest_chain, cycles, worst_retry_amplification, "
                   "complexity_score_mean/max, undeclared_calls, entry_points, largest_blast_radius.",
                   ["figure", "namespace"], registry=REGISTRY)
FINDINGS_BY_CATEGORY = Gauge("guywire_findings_by_category", "Current findings by rule category and namespace "
                             "(namespace=\"\" for the cluster).", ["category", "namespace"], registry=REGISTRY)
POLICY_REPORTS = Counter("guywire_policy_reports_written_total", "PolicyReports written or deleted, by outcome.",
                         ["outcome"], registry=REGISTRY)
