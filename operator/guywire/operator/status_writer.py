"""The policy status writer: each policy's status (matched, violating, capped findings, Ready and
EvaluationErrors conditions) patched when it differs from the last one written; the finding gauges."""
from __future__ import annotations

import logging

from ..clock import SYSTEM, Clock, rfc3339
from ..model.messages import clip
from ..kube.client import POLICY_KINDS, ApiFailure, KubeClient
from .metrics import OperatorMetrics
from .index import Index
from .settings import Settings

MESSAGE_MAX = 1024  # characters of a condition or finding message in a policy's status

log = logging.getLogger("guywire.operator")
ERRORS_SHOWN = 3  # evaluation errors named in a policy's EvaluationErrors condition


def evaluation_errors_condition(errors: list, generation) -> dict:
    """The policy's ``EvaluationErrors`` condition: True with the count and the first few rule / object /
    error when a rule raised (those objects have no finding of that rule), False when every rule evaluated."""
    if not errors:
        return {"type": "EvaluationErrors", "status": "False", "reason": "NoErrors",
                "message": "Every rule evaluated.", "observedGeneration": generation}
    shown = "; ".join(f"{e.rule} on {e.object}: {e.cause}" for e in errors[:ERRORS_SHOWN])
    more = f"; and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
    message = (f"{len(errors)} evaluation error(s), not counted as violations: {shown}{more}. A rule raised: "
               "report it to guywire's maintainers with the object.")
    return {"type": "EvaluationErrors", "status": "True", "reason": "RuleRaised", "message": clip(message, MESSAGE_MAX),
            "observedGeneration": generation}


class StatusWriter:
    def __init__(self, client: KubeClient | None, index: Index, settings: Settings, metrics: OperatorMetrics,
                 clock: Clock = SYSTEM):
        self.client, self.index, self.settings, self.metrics, self.clock = client, index, settings, metrics, clock
        self.written: dict[str, dict] = {}  # policy ref -> the status last written (without times)
        self.dirty = True

    def forget(self, ref: str) -> None:
        self.written.pop(ref, None)

    def status_for(self, ref: str) -> dict:
        meta = self.index.policy_meta.get(ref, {})
        gen = meta.get("generation")
        if ref in self.index.policy_errors:
            return {"observedGeneration": gen, "matched": 0, "violating": 0, "findings": [], "truncated": 0,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
                                    "message": clip(self.index.policy_errors[ref], MESSAGE_MAX), "observedGeneration": gen}]}
        policy = self.index.policies[ref]
        pr = self.index.engine.policy_result(policy)
        cap = self.settings.findings_cap
        findings = [{"rule": f.rule, "severity": f.severity.value, "workload": str(f.workload),
                     "message": clip(f.render(), MESSAGE_MAX)} for f in pr.findings[:cap]]
        return {"observedGeneration": gen, "matched": pr.matched, "violating": pr.violating, "findings": findings,
                "truncated": max(0, len(pr.findings) - cap),
                "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated",
                                "message": f"{pr.matched} workload(s) matched, {pr.violating} violating.",
                                "observedGeneration": gen},
                               evaluation_errors_condition(pr.errors, gen)]}

    async def write(self) -> None:
        self.update_finding_metrics()
        for ref in list(self.index.policy_meta):
            status = self.status_for(ref)
            if self.written.get(ref) == status:
                continue
            meta = self.index.policy_meta[ref]
            kind = POLICY_KINDS[meta["kind"]]
            stamp = rfc3339(self.clock.now())
            body = dict(status, lastEvaluated=stamp,
                        conditions=[dict(c, lastTransitionTime=stamp) for c in status["conditions"]])
            try:
                await self.client.merge_patch(kind.path(meta["namespace"], meta["name"], "status"), {"status": body})
            except ApiFailure as exc:
                self.metrics.patches.labels("status", "error").inc()
                if exc.status != 404:
                    log.warning("Cannot write the status of %s: %s; will retry.", ref, exc)
                    self.dirty = True
                continue
            self.metrics.patches.labels("status", "ok").inc()
            self.written[ref] = status
            log.info("Status of %s: %s matched, %s violating.", ref, status["matched"], status["violating"])
            errors = next((c for c in status["conditions"] if c["type"] == "EvaluationErrors"), None)
            if errors is not None and errors["status"] == "True":
                log.warning("Policy %s: %s", ref, errors["message"])

    def update_finding_metrics(self) -> None:
        engine, m = self.index.engine, self.metrics
        counts: dict[tuple[str, str, str], int] = {}
        for key in engine.results:
            for f in engine.findings_for(key):
                k = (f.rule, f.severity.value, key[0])
                counts[k] = counts.get(k, 0) + 1
        m.findings.clear()
        for (rule, sev, ns), n in counts.items():
            m.findings.labels(rule, sev, ns).set(n)
        raised: dict[tuple[str, str], int] = {}
        for e in engine.all_errors():
            k = (e.rule, e.object.namespace or "")
            raised[k] = raised.get(k, 0) + 1
        m.evaluation_errors.clear()
        for (rule, ns), n in raised.items():
            m.evaluation_errors.labels(rule, ns).set(n)
        m.workloads_indexed.set(len(engine.inventory.workloads))
        m.services_indexed.set(len(engine.inventory.services))
        m.policies.labels("true").set(len(self.index.policies))
        m.policies.labels("false").set(len(self.index.policy_errors))
