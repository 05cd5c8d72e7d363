"""The PolicyReports / OpenReports writer: the reports of the namespaces whose results changed, written
only when their digest did; chunks no longer needed (here or from an earlier run) deleted."""
from __future__ import annotations

import logging

from ..clock import SYSTEM, Clock
from ..kube.client import REPORT_KINDS, ApiFailure, KubeClient
from .metrics import OperatorMetrics
from ..render.policy_reports import DIGEST_ANNOTATION, REPORT_APIS, policy_reports
from .index import Index
from .settings import Settings

log = logging.getLogger("guywire.operator")
MANAGED_BY_SELECTOR = "app.kubernetes.io%2Fmanaged-by%3Dguywire"


class ReportWriter:
    def __init__(self, client: KubeClient | None, index: Index, settings: Settings, metrics: OperatorMetrics,
                 clock: Clock = SYSTEM):
        self.client, self.index, self.settings, self.metrics, self.clock = client, index, settings, metrics, clock
        self.ns_dirty: set[str] | None = None  # namespaces to write again; None: every namespace
        self.written: dict[tuple, str] = {}  # (kind, namespace, name) -> results digest
        self.names: dict[str | None, set[str]] = {}  # namespace -> report names written there
        self.unavailable = False
        self.api: str | None = None  # the report API chosen (settings.reports_api, or discovered)
        self.retry = False  # a write failed: the next status pass writes again

    def mark(self, namespaces) -> None:
        if self.ns_dirty is not None:
            self.ns_dirty.update(namespaces)

    def mark_all(self) -> None:
        """Every namespace again; the report CRDs may have been installed since they were found missing."""
        self.ns_dirty = None
        if self.unavailable:
            self.api = None
        self.unavailable = False

    async def choose_api(self) -> str:
        """The report API to write: ``settings.reports_api``, or with ``auto`` openreports.io/v1alpha1 when the
        cluster serves its Report kind (discovery), else wgpolicyk8s.io. Then the reports an earlier run
        wrote with it are adopted, so chunks it no longer needs are deleted and unchanged ones not rewritten."""
        choice = self.settings.reports_api
        if choice == "auto":
            choice = "openreports" if await self._serves("/apis/openreports.io/v1alpha1", "reports") \
                else "wgpolicyk8s"
            log.info("Writing %s reports (reports API %s).", REPORT_APIS[choice][1],
                     "discovered" if self.settings.reports_api == "auto" else "set")
        self.api = choice
        await self._adopt(choice)
        return choice

    async def _serves(self, group_version: str, plural: str) -> bool:
        try:
            found = await self.client.get(group_version)
        except ApiFailure:
            return False
        return any(r.get("name") == plural for r in (found or {}).get("resources", ()) if isinstance(r, dict))

    async def _adopt(self, api: str) -> None:
        """Names and digests of the reports guywire wrote before (label app.kubernetes.io/managed-by=guywire)."""
        for kind_name in REPORT_APIS[api][1:]:
            kind = REPORT_KINDS[kind_name]
            try:
                listed = await self.client.get(kind.path(None) + "?labelSelector=" + MANAGED_BY_SELECTOR)
            except ApiFailure as exc:
                if exc.status != 404:
                    log.warning("Cannot list earlier %s objects: %s; stale ones are left.", kind_name, exc)
                continue
            for item in (listed or {}).get("items", ()):
                meta = item.get("metadata") or {}
                ns = meta.get("namespace") if kind.namespaced else None
                self.names.setdefault(ns, set()).add(meta.get("name"))
                digest = (meta.get("annotations") or {}).get(DIGEST_ANNOTATION)
                if digest:
                    self.written[(kind_name, ns, meta.get("name"))] = digest

    async def write(self) -> None:
        self.retry = False
        if self.unavailable:
            return
        api = self.api or await self.choose_api()
        _, ns_kind, cluster_kind = REPORT_APIS[api]
        dirty, self.ns_dirty = self.ns_dirty, set()
        reports = policy_reports(self.index.engine, self.clock.now(), namespaces=dirty,
                                 max_results=self.settings.policy_report_max_results, api=api)
        by_ns: dict[str | None, set[str]] = {}
        for report in reports:
            meta = report["metadata"]
            ns = meta.get("namespace")
            by_ns.setdefault(ns, set()).add(meta["name"])
            ident = (report["kind"], ns, meta["name"])
            digest = meta["annotations"][DIGEST_ANNOTATION]
            if self.written.get(ident) == digest:
                continue
            kind = REPORT_KINDS[report["kind"]]
            try:
                try:
                    await self.client.merge_patch(kind.path(ns, meta["name"]), report)
                except ApiFailure as exc:
                    if exc.status != 404:
                        raise
                    await self.client.request("POST", kind.path(ns), report, retry_conflicts=False)
            except ApiFailure as exc:
                self.metrics.policy_reports.labels("error").inc()
                if exc.status == 404:
                    log.warning("%s is not served (no %s CRDs); not writing reports until the next full audit.",
                                report["kind"], kind.group)
                    self.unavailable = True
                    return
                log.warning("Cannot write %s %s: %s; will retry.", report["kind"], meta["name"], exc)
                self._requeue(dirty, ns)
                continue
            self.metrics.policy_reports.labels("written").inc()
            self.written[ident] = digest
        namespaces = set(self.names) | set(by_ns)
        if dirty is not None:
            namespaces &= set(dirty) | set(by_ns)
        for ns in namespaces:
            kept = by_ns.get(ns, set())
            for name in sorted(self.names.get(ns, set()) - kept):
                kind = REPORT_KINDS[ns_kind if ns is not None else cluster_kind]
                try:
                    await self.client.request("DELETE", kind.path(ns, name))
                except ApiFailure as exc:
                    if exc.status != 404:
                        log.warning("Cannot delete stale report %s: %s.", name, exc)
                        continue
                self.metrics.policy_reports.labels("deleted").inc()
                self.written.pop((kind.kind, ns, name), None)
            self.names[ns] = kept

    def _requeue(self, dirty: set[str] | None, ns: str | None) -> None:
        if self.ns_dirty is not None:
            if dirty is None:
                self.ns_dirty = None
            elif ns is not None:
                self.ns_dirty.add(ns)
        self.retry = True
