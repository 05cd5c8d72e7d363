"""The annotation contract: what workloads declare about their calls (DESIGN.md).

Parsing never raises: a value that cannot be read becomes an AnnotationError that
quotes it, and everything that could be read is kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..model.messages import clip
from ..model.units import parse_duration

PREFIX = "guywire.dev/"
DEPENDS_ON = PREFIX + "depends-on"
RETRY = PREFIX + "retry"
RETRY_FOR = PREFIX + "retry."
EXEMPT = PREFIX + "exempt"
EXEMPT_REASON = PREFIX + "exempt-reason"
VIOLATIONS = PREFIX + "violations"
COMPLEXITY_SCORE = PREFIX + "complexity-score"
EVALUATED_AT = PREFIX + "evaluated-at"
BLAST_RADIUS = PREFIX + "blast-radius"
GPU_HEALTH = PREFIX + "gpu-health"
#: Annotations guywire writes itself; a change to only these never triggers re-evaluation.
OWN_ANNOTATIONS = frozenset({VIOLATIONS, COMPLEXITY_SCORE, EVALUATED_AT, BLAST_RADIUS})
#: guywire.dev/ keys that are not declarations but are no typo either (written by guywire or kopf).
KNOWN_OTHER = OWN_ANNOTATIONS | {GPU_HEALTH, PREFIX + "last-handled-configuration"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$")
RULE_ID = re.compile(r"^GW-[A-Z]{3}-(\d{3}|\*)$")
BACKOFFS = {"none", "fixed", "linear", "exponential", "jitter", "exponential-jitter", "decorrelated-jitter"}
MAX_DEPENDENCIES = 1000
STARTUP = "startup"
MAX_ATTEMPTS = 1000


def quote(value: str, limit: int = 120) -> str:
    return '"' + clip(value, limit).replace("\n", "\\n") + '"'


def _r(value: str, limit: int = 60) -> str:
    """repr() of part of a value for a message, shortened so an absurd value cannot flood it."""
    return repr(clip(value, limit))


@dataclass(frozen=True, slots=True)
class AnnotationError:
    key: str
    value: str
    message: str

    def render(self) -> str:
        return f"annotation {self.key}={quote(self.value)}: {self.message}"


@dataclass(frozen=True, slots=True)
class DependencyRef:
    """One outbound dependency as written: a Service or workload name, or an external host."""

    raw: str
    name: str
    namespace: str | None = None
    port: int | None = None
    external: bool = False
    startup: bool = False  # ``name;startup``: needed only while the workload starts (a model download)

    def key_in(self, default_ns: str) -> tuple[str, str]:
        return (self.namespace or default_ns, self.name)

    def label(self, default_ns: str) -> str:
        if self.external:
            return f"external:{self.name}"
        ns = self.namespace or default_ns
        return self.name if ns == default_ns else f"{self.name}.{ns}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a caller retries one dependency. ``attempts`` counts every try, the first included."""

    attempts: int = 1
    per_try_timeout: float | None = None
    timeout: float | None = None
    backoff: str | None = None

    @property
    def retries(self) -> bool:
        return self.attempts > 1

    @property
    def has_timeout(self) -> bool:
        return self.per_try_timeout is not None or self.timeout is not None

    @property
    def has_backoff(self) -> bool:
        return self.backoff is not None and self.backoff != "none"

    def worst_case(self) -> float | None:
        """Longest this caller can wait on the hop: attempts x per-try timeout, capped by the overall timeout."""
        per_try = self.attempts * self.per_try_timeout if self.per_try_timeout is not None else None
        if per_try is not None and self.timeout is not None:
            return min(per_try, self.timeout)
        return per_try if per_try is not None else self.timeout


NO_RETRY = RetryPolicy()


def parse_host(text: str, key: str, raw: str) -> tuple[DependencyRef | None, str | None]:
    """Parse ``name[.ns[.svc[.cluster.local]]][:port]`` or ``external:host[:port]``."""
    item = text.strip()
    external = False
    if item.lower().startswith("external:"):
        external = True
        item = item[len("external:"):].strip()
    port = None
    if ":" in item:
        host, _, port_text = item.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None, f"{quote(text)} has port {_r(port_text)}; a port is a number from 1 to 65535."
        port, item = int(port_text), host
    if external:
        if not item or not HOSTNAME.match(item):
            return None, f"{quote(text)} is not a host name."
        return DependencyRef(raw=text.strip(), name=item.lower(), port=port, external=True), None
    parts = item.lower().split(".")
    namespace = None
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        name, namespace = parts
    elif len(parts) >= 3 and parts[2] == "svc":
        name, namespace = parts[0], parts[1]
    else:
        return None, (f"{quote(text)} is not a Service or workload name (name, name.namespace or "
                      f"name.namespace.svc.cluster.local); write external:{quote(item, 60)[1:-1]} for a host outside the cluster.")
    for label in (name, namespace):
        if label is not None and not DNS_LABEL.match(label):
            return None, f"{quote(text)}: {_r(label)} is not a valid Kubernetes name."
    return DependencyRef(raw=text.strip(), name=name, namespace=namespace, port=port), None


def split_list(value: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", value) if p]


def parse_depends_on(value: str) -> tuple[list[DependencyRef], list[AnnotationError]]:
    deps: list[DependencyRef] = []
    errors: list[AnnotationError] = []
    seen: set[tuple] = set()
    items = split_list(re.sub(r"\s*;\s*", ";", value))  # "hf-mirror ; startup" is hf-mirror;startup
    if len(items) > MAX_DEPENDENCIES:
        errors.append(AnnotationError(DEPENDS_ON, value, f"lists {len(items)} dependencies; only the first "
                                      f"{MAX_DEPENDENCIES} are read."))
        items = items[:MAX_DEPENDENCIES]
    for item in items:
        host, sep, flag = item.partition(";")
        if sep and flag.strip().lower() != STARTUP:
            errors.append(AnnotationError(DEPENDS_ON, value, f"{quote(item)}: {_r(flag)} is not a dependency flag; "
                                          f"the one flag is ;{STARTUP}, for a dependency needed only while the "
                                          "workload starts (hf-mirror;startup)."))
            continue
        dep, err = parse_host(host, DEPENDS_ON, value)
        if err:
            errors.append(AnnotationError(DEPENDS_ON, value, err))
            continue
        if sep:
            dep = replace(dep, startup=True)
        ident = (dep.external, dep.name, dep.namespace)
        if ident not in seen:
            seen.add(ident)
            deps.append(dep)
    return deps, errors


_RETRY_KEYS = {
    "attempts": "attempts", "maxattempts": "attempts",
    "pertrytimeout": "per_try_timeout", "per-try-timeout": "per_try_timeout", "pertry": "per_try_timeout",
    "timeout": "timeout",
    "backoff": "backoff",
}


def parse_retry(key: str, value: str) -> tuple[RetryPolicy | None, list[AnnotationError]]:
    """Parse ``attempts=3, perTryTimeout=2s, timeout=7s, backoff=exponential``."""
    fields: dict = {}
    errors: list[AnnotationError] = []

    def bad(msg: str) -> None:
        errors.append(AnnotationError(key, value, msg))

    items = [p.strip() for p in re.split(r"[,;\n]+", value) if p.strip()]
    if not items:
        bad("is empty; write for example attempts=3, perTryTimeout=2s, timeout=7s, backoff=exponential.")
    for item in items:
        if "=" not in item:
            bad(f"{quote(item)} is not key=value; known keys are attempts, perTryTimeout, timeout, backoff.")
            continue
        name, _, raw = (s.strip() for s in item.partition("="))
        field_name = _RETRY_KEYS.get(name.lower())
        if field_name is None:
            bad(f"unknown key {_r(name)}; known keys are attempts, perTryTimeout, timeout, backoff.")
            continue
        if field_name == "attempts":
            try:
                attempts = int(raw)
            except ValueError:
                bad(f"attempts={_r(raw)} is not a whole number.")
                continue
            if attempts < 1 or attempts > MAX_ATTEMPTS:
                bad(f"attempts={attempts if len(raw) <= 20 else _r(raw)} is out of range; attempts counts every try, the first included, "
                    f"from 1 (no retry) to {MAX_ATTEMPTS}.")
                continue
            fields["attempts"] = attempts
        elif field_name == "backoff":
            b = raw.lower()
            if b in BACKOFFS:
                fields["backoff"] = b
            else:
                try:
                    parse_duration(raw)
                    fields["backoff"] = "fixed"
                except ValueError:
                    bad(f"backoff={_r(raw)} is unknown; use none, fixed, linear, exponential or a delay such as 100ms.")
        else:
            try:
                seconds = parse_duration(raw)
            except ValueError:
                bad(f"{name}={_r(raw)}: {_r(raw)} is not a duration: use a number with ms, s, m or h, "
                    "such as 2s, 500ms or 5m.")
                continue
            if seconds <= 0:
                bad(f"{name}={_r(raw)} must be longer than zero.")
                continue
            fields[field_name] = seconds
    if not fields:
        return None, errors
    return RetryPolicy(**fields), errors


def parse_exempt(value: str) -> tuple[frozenset[str], list[AnnotationError]]:
    rules: set[str] = set()
    errors: list[AnnotationError] = []
    for item in split_list(value):
        rid = item.upper()
        if RULE_ID.match(rid):
            rules.add(rid)
        else:
            errors.append(AnnotationError(EXEMPT, value, f"{quote(item)} is not a rule id such as GW-OBS-002 or GW-OBS-*."))
    return frozenset(rules), errors


@dataclass(slots=True)
class Declarations:
    """Everything a workload declares through guywire.dev/ annotations, parsed."""

    depends_on: list[DependencyRef] = field(default_factory=list)
    retry: RetryPolicy | None = None
    retry_for: dict[str, RetryPolicy] = field(default_factory=dict)
    exempt: frozenset[str] = frozenset()
    exempt_reason: str = ""
    errors: list[AnnotationError] = field(default_factory=list)

    def retry_policy(self, dep: DependencyRef, namespace: str) -> RetryPolicy:
        """The retry policy for calls to ``dep``: its own override, else the default, else no retry."""
        if self.retry_for:
            for key in (dep.raw.lower(), dep.name, dep.label(namespace), f"{dep.name}.{dep.namespace or namespace}"):
                pol = self.retry_for.get(key)
                if pol is not None:
                    return pol
        return self.retry or NO_RETRY


def parse_declarations(annotations: dict[str, str]) -> Declarations:
    decl = Declarations()
    if not annotations:
        return decl
    for key, value in annotations.items():
        if not key.startswith(PREFIX):
            continue
        if not isinstance(value, str):
            decl.errors.append(AnnotationError(key, str(value), "must be a string."))
            continue
        if key == DEPENDS_ON:
            deps, errs = parse_depends_on(value)
            decl.depends_on, decl.errors = deps, decl.errors + errs
        elif key == RETRY:
            decl.retry, errs = parse_retry(key, value)
            decl.errors.extend(errs)
        elif key.startswith(RETRY_FOR):
            target = key[len(RETRY_FOR):].strip().lower()
            pol, errs = parse_retry(key, value)
            decl.errors.extend(errs)
            if not target:
                decl.errors.append(AnnotationError(key, value, "names no dependency after 'retry.'."))
            elif pol is not None:
                decl.retry_for[target] = pol
        elif key == EXEMPT:
            decl.exempt, errs = parse_exempt(value)
            decl.errors.extend(errs)
        elif key == EXEMPT_REASON:
            decl.exempt_reason = value.strip()
        elif key not in KNOWN_OTHER:
            decl.errors.append(AnnotationError(key, value, f"{key} is not a guywire annotation; known ones are "
                                               f"{DEPENDS_ON}, {RETRY}, {RETRY_FOR}<dependency>, {EXEMPT} and "
                                               f"{EXEMPT_REASON}."))
    return decl
