"""Admission decisions: one AdmissionReview in, one AdmissionReview out, judged by the engine.

Pure apart from the engine it is given: no kopf, no HTTP. A request is judged on a
preview of the engine's graph (Graph.preview: copy-on-write overlays of its maps) with
the requested object in it, so graph rules see the cluster as it would be after the
request; the engine's inventory, graph, indexes and stored results are only read.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..views.aikinds import ai_kind_of
from .evaluator import Engine, policy_matches, worst_first
from ..views.inventory import POLICY_KINDS, fingerprint, view_of
from ..model.evaluation import EvaluationError, unique_errors
from ..model.finding import Finding
from ..model.messages import clip
from ..model.policy import Enforcement, PolicyError, parse_policy
from ..views.workload import WORKLOAD_GROUPS, WORKLOAD_KINDS, ParseError, Workload

API_VERSION = "admission.k8s.io/v1"
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 256
MAX_MESSAGE_CHARS = 4000


class BadReview(ValueError):
    """A body that is not an AdmissionReview this server can answer; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Decision:
    uid: str
    allowed: bool = True
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    outcome: str = "allowed"  # allowed | warned | denied | error | skipped
    policies: list[str] = field(default_factory=list)
    dry_run: bool = False
    errors: list[EvaluationError] = field(default_factory=list)  # rules that raised: warned, never denied

    def review(self) -> dict:
        resp: dict[str, Any] = {"uid": self.uid, "allowed": self.allowed}
        if not self.allowed:
            resp["status"] = {"code": 403, "reason": "Forbidden", "message": self.message}
        if self.warnings:
            resp["warnings"] = self.warnings
        return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": resp}


def parse_review(raw: bytes | str) -> dict:
    try:
        review = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadReview(f"the body is not JSON: {exc}.") from None
    if not isinstance(review, dict):
        raise BadReview("the body is not an AdmissionReview object.")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind is {review.get('kind')!r}, not AdmissionReview.")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion is {review.get('apiVersion')!r}; only {API_VERSION} is served.")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object.")
    if request.get("uid") is not None and not isinstance(request["uid"], str):
        raise BadReview("request.uid must be a string.")
    if not request.get("uid"):
        raise BadReview("request.uid is missing.")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not all(isinstance(kind.get(k, ""), str) for k in ("group", "version", "kind")):
        raise BadReview("request.kind must be an object {group, version, kind} of strings.")
    for name, want in (("object", dict), ("oldObject", dict), ("namespace", str), ("operation", str),
                       ("userInfo", dict), ("dryRun", bool)):
        if request.get(name) is not None and not isinstance(request[name], want):
            shown = {dict: "an object", str: "a string", bool: "a boolean"}[want]
            raise BadReview(f"request.{name} must be {shown}.")
    for name in ("object", "oldObject"):
        meta = (request.get(name) or {}).get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise BadReview(f"request.{name}.metadata must be an object.")
    return request


def served_by_known_group(kind: str, group: str) -> bool:
    """Whether ``kind`` from API group ``group`` is one guywire judges (``evil.io/Deployment`` is not)."""
    if kind in WORKLOAD_KINDS:
        return WORKLOAD_GROUPS[kind] == group
    return ai_kind_of({"kind": kind, "apiVersion": f"{group}/v" if group else "v1"}) is not None


HIDDEN = "\u2026"
_ARROW_RUN = re.compile(HIDDEN + r"(?:\s*-(?:\([^)]*\))?->\s*" + HIDDEN + ")+")
_ALLOW_LIST = re.compile(r"\(allowed: [^)]*\)")


def told(f: Finding) -> str:
    """What a review's answer may say about a finding: the requesting object and its own edges only.

    The requester may not be allowed to read other namespaces, so a path beyond the object's own next
    hop (a retry chain, a cycle, a deep call chain) shows as ``…`` and the policy's namespace allow-list
    is not quoted. Events, status and the CLI keep the whole message (``Finding.render``)."""
    text = f.render()
    me = f.workload.short
    own = {me} | {f.path[i + 1] for i in range(len(f.path) - 1) if f.path[i] == me}
    hidden = {p for p in f.path if p not in own}
    for name in sorted(hidden, key=len, reverse=True):
        text = re.sub(r"(?<![\w./-])" + re.escape(name) + r"(?![\w/-]|\.\w)", HIDDEN, text)
    text = _ARROW_RUN.sub(lambda m: f"{HIDDEN} ({m.group(0).count(HIDDEN)} workloads not shown)", text)
    return _ALLOW_LIST.sub("(not a namespace the policy allows)", text) if f.rule == "GW-DEP-005" else text


class Admission:
    def __init__(self, engine: Engine, *, own_namespace: str = "guywire", own_users: frozenset[str] = frozenset(),
                 ready: bool = True):
        self.engine = engine
        self.own_namespace = own_namespace
        self.own_users = own_users
        self.ready = ready

    def decide(self, request: dict) -> Decision:
        uid = request["uid"]
        d = Decision(uid=uid, dry_run=bool(request.get("dryRun")))
        try:
            self._decide(request, d)
        except Exception as exc:  # errors are not failures: allow and say so
            d.allowed, d.outcome = True, "error"
            d.warnings = [clip(f"guywire could not evaluate this request ({type(exc).__name__}: {exc}); allowed.",
                               MAX_WARNING_CHARS)]
        return d

    def _decide(self, request: dict, d: Decision) -> None:
        operation = request.get("operation")
        obj = request.get("object")
        kind = (request.get("kind") or {}).get("kind") or (obj or {}).get("kind")
        namespace = request.get("namespace") or ((obj or {}).get("metadata") or {}).get("namespace")
        if operation not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
            d.outcome = "skipped"
            return
        if namespace in ("kube-system", self.own_namespace):
            d.outcome = "skipped"
            return
        if ((request.get("userInfo") or {}).get("username")) in self.own_users:
            d.outcome = "skipped"
            return
        if kind in POLICY_KINDS:
            try:
                parse_policy({**obj, "kind": kind})
            except PolicyError as exc:
                d.allowed, d.outcome = False, "denied"
                d.message = clip(f"guywire: {kind} {obj.get('metadata', {}).get('name', '?')} cannot be used: {exc}",
                                 MAX_MESSAGE_CHARS)
            return
        group = (request.get("kind") or {}).get("group")
        if group is None:  # only the API server's request.kind says where the object is served from
            group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        if not served_by_known_group(kind, group):
            d.outcome = "skipped"
            return
        old = request.get("oldObject")
        if operation == "UPDATE" and isinstance(old, dict) and fingerprint(old) == fingerprint(obj):
            d.outcome = "skipped"  # nothing the engine reads changed (e.g. only guywire's own annotations)
            return
        if not self.ready:
            d.outcome = "error"
            d.warnings = ["guywire is still reading the cluster; this request was not evaluated."]
            return
        obj = {**obj, "kind": kind}
        if namespace and not (obj.get("metadata") or {}).get("namespace"):
            obj["metadata"] = {**(obj.get("metadata") or {}), "namespace": namespace}
        try:
            view = view_of(obj)
        except ParseError as exc:
            d.outcome = "error"
            d.warnings = [clip(f"guywire could not read this {kind}: {exc} Allowed without evaluation.",
                               MAX_WARNING_CHARS)]
            return
        if not isinstance(view, Workload) or view.owner is not None:
            d.outcome = "skipped"
            return
        errors: dict[str, list[EvaluationError]] = {}
        per = self.judge_hypothetically(view, errors)
        self._verdict(view, per, d, errors)

    def judge_hypothetically(self, view: Workload, errors: dict[str, list[EvaluationError]]
                             ) -> dict[str, list[Finding]]:
        """Findings per policy for ``view`` as if it were stored, judged on a preview of the graph: the
        object's edges, the Services its controller makes, the analysis of it and its callers exist in
        the preview only, and only the request is judged. The engine is read, never written. Rules that
        raise go to ``errors`` (policy ref -> errors), never to the findings."""
        engine = self.engine
        if engine.skipped(view):
            return {}
        preview = engine.graph.preview()
        preview.upsert_workload(view)
        out: dict[str, list[Finding]] = {}
        for p in engine.policies:
            if policy_matches(p, view, preview.inv):
                sink: list[EvaluationError] = []
                out[p.ref] = engine.judge(view, p, engine.context(p, preview), errors=sink)
                if sink:
                    errors[p.ref] = sink
        return out

    def _verdict(self, view: Workload, per: dict[str, list[Finding]], d: Decision,
                 errors: dict[str, list[EvaluationError]] | None = None) -> None:
        """Enforce policies' findings deny, Warn policies' findings warn. A rule that raised (under Warn or
        Enforce) is a warning that names it and its error: it never denies, and counts as no finding."""
        policies = {p.ref: p for p in self.engine.policies}
        d.errors = unique_errors(e for ref, errs in (errors or {}).items()
                                 if ref in policies and policies[ref].spec.enforcement is not Enforcement.AUDIT
                                 for e in errs)
        d.policies += [ref for ref in (errors or {}) if ref in policies
                       and policies[ref].spec.enforcement is not Enforcement.AUDIT and not per.get(ref)]
        enforce: dict[str, list[Finding]] = {}
        warn: list[Finding] = []
        for ref, found in per.items():
            p = policies.get(ref)
            if p is None or not found or p.spec.enforcement is Enforcement.AUDIT:
                continue
            d.policies.append(ref)
            if p.spec.enforcement is Enforcement.ENFORCE:
                enforce[ref] = worst_first(found)
            else:
                warn.extend(found)
        if enforce:
            d.allowed, d.outcome = False, "denied"
            lines: list[str] = []
            for ref, found in enforce.items():
                lines.append(f"guywire: {ref} (Enforce) denies {view.ref}: {len(found)} violation(s).")
                lines += [told(f) for f in found]
            text = ""
            for i, line in enumerate(lines):
                if len(text) + len(line) + 1 > MAX_MESSAGE_CHARS - 40:
                    text += f"… and {len(lines) - i} more line(s)."
                    break
                text += line + "\n"
            d.message = text.rstrip("\n")
        seen: set[tuple] = set()
        unique = []
        for f in worst_first(warn):
            k = (f.rule, f.location, f.message)
            if k not in seen:
                seen.add(k)
                unique.append(f)
        d.warnings = [clip(f"guywire could not evaluate rule {e.rule} {e.name} on {e.object} ({e.cause}); "
                           "allowed for that rule.", MAX_WARNING_CHARS) for e in d.errors[:MAX_WARNINGS]]
        if len(d.errors) > MAX_WARNINGS:
            d.warnings.append(f"… and {len(d.errors) - MAX_WARNINGS} more rule(s) guywire could not evaluate.")
        if unique:
            room = max(1, MAX_WARNINGS - len(d.warnings))
            d.warnings += [clip(told(f), MAX_WARNING_CHARS) for f in unique[:room]]
            if len(unique) > room:
                d.warnings.append(f"… and {len(unique) - room} more guywire finding(s); see "
                                  "kubectl describe after apply.")
            if d.allowed:
                d.outcome = "warned"
        if d.errors and d.allowed:
            d.outcome = "error"
