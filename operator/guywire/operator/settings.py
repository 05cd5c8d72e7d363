"""The operator's settings (from ``guywire run``'s flags, see main.settings_from)."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Settings:
    own_namespace: str = "guywire"
    audit_interval: float = 600.0
    flush_interval: float = 0.5
    status_interval: float = 2.0
    events_per_second: float = 5.0
    events_burst: int = 50
    event_queue_max: int = 10_000
    findings_cap: int = 50
    write_concurrency: int = 8
    instance: str = field(default_factory=socket.gethostname)
    own_users: frozenset[str] = frozenset()
    node_recheck_interval: float = 30.0
    insights_interval: float = 30.0  # blast radius annotations and complexity gauges, at most this often
    policy_reports: bool = True  # write PolicyReports / OpenReports Reports (Policy Reporter reads them)
    reports_api: str = "auto"  # wgpolicyk8s | openreports | auto: openreports.io when the cluster serves it
    policy_report_max_results: int = 500
    taint_unhealthy_gpu_nodes: bool = False
    taint_max_fraction: float = 0.5
