"""GPU and node health from NVML readings: Healthy, Degraded or Unhealthy, with reasons and an action.

Pure: readings in, a ``NodeGpuHealth`` report out. The tables below and each signal's rows and
judge (``gpu.signals``) are the policy (see docs/gpu-health.md, generated from them by
``guywire.gpu.health_docs``); a YAML file can
change the XID table and the thresholds (``load_health_config``).

``HealthTracker`` adds the memory one read cannot have: XIDs latch (an XID is an
event, not a state: the GPU stays Unhealthy after the event passed) and clear on a
re-check that finds nothing Unhealthy after evidence that the GPU was reset or the
node rebooted (its boot ID changed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.alias_generators import to_camel

from ..clock import rfc3339
from ..model.gpu_report import Action, GpuHealth, HealthState, LatchedXid, NodeGpuHealth, XidEvent
from .readings import GpuReadings, NodeReadings, XidSeen
from .signals import (
    DEGRADING_CLOCK_REASONS, RECOVERY_ACTIONS, SIGNALS, Check, Row, Signal, rows_of, snapshot,
)

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY

# ----- sources ---------------------------------------------------------------------------------
SOURCES = {
    "xid-catalog": ("NVIDIA Xid catalog (resolution buckets)",
                    "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"),
    "device-plugin": ("NVIDIA k8s-device-plugin health checks (ignored application XIDs)",
                      "https://github.com/NVIDIA/k8s-device-plugin/blob/main/internal/rm/health.go"),
    "dcgm": ("DCGM health watches (memory, PCIe, NVLink, thermal, power, driver)",
             "https://docs.nvidia.com/datacenter/dcgm/latest/user-guide/feature-overview.html"),
    "dcgm-limits": ("DCGM hardware limits: 8 PCIe replays per minute",
                    "https://github.com/NVIDIA/DCGM/blob/master/dcgmlib/src/dcgm_gpu_hardware_limits.h"),
    "nvml": ("NVML API reference (errors, thresholds, clock event reasons, field values)",
             "https://docs.nvidia.com/deploy/nvml-api/"),
    "memory": ("NVIDIA GPU memory error management (row remapping)",
               "https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/index.html"),
    "page-retirement": ("NVIDIA dynamic page retirement",
                        "https://docs.nvidia.com/deploy/dynamic-page-retirement/index.html"),
    "gpud": ("GPUd health components", "https://github.com/leptonai/gpud"),
}


# Rows no single signal owns: the GPU as a whole, the node, and unknown readings. The signals' rows are in
# ``gpu.signals``; the table lists each state's rows by position.
DEVICE_ROWS: tuple[Row, ...] = (
    Row("gpu-lost", "any NVML call", "answers NVML_ERROR_GPU_IS_LOST (the GPU fell off the bus or stopped "
        "responding)", U, Action.REBOOT_NODE, ("nvml", "xid-catalog", "dcgm"), 1),
    Row("reset-required", "any NVML call", "answers NVML_ERROR_RESET_REQUIRED", U, Action.RESET_GPU, ("nvml",), 2),
    Row("inaccessible", "nvmlDeviceGetHandleByIndex", "fails with another error", U, Action.INVESTIGATE,
        ("dcgm",), 3),
    Row("missing-gpus", "nvmlDeviceGetCount", "fewer GPUs than the Node advertises (label nvidia.com/gpu.count, "
        "else capacity or allocatable nvidia.com/gpu)", U, Action.REBOOT_NODE, ("device-plugin", "gpud"), 4),
    Row("nvml-error", "nvmlDeviceGetCount", "fails", U, Action.INVESTIGATE, ("nvml",), 5),
    Row("not-supported", "any reading", "answers NVML_ERROR_NOT_SUPPORTED (consumer GPUs, MIG, old drivers): the "
        "reading is unknown and listed in `unknown`, never a failure", H, Action.NONE, ("nvml", "dcgm"), 300),
)


def table_rows(signals: tuple[Signal, ...] = SIGNALS) -> tuple[Row, ...]:
    """The classification table: Unhealthy rows first, then Degraded, then Healthy; each state's by position."""
    return tuple(sorted(DEVICE_ROWS + rows_of(signals), key=lambda r: (-r.state.rank, r.position)))


ROWS: tuple[Row, ...] = table_rows()
ROW = {r.id: r for r in ROWS}

# ----- the XID table: NVIDIA's catalog, resolution bucket "Immediate Action" --------------------
# (code, description, bucket). "Unused" codes and codes without a bucket are left out: they fall to unknownXid.
XID_CATALOG: tuple[tuple[int, str, str], ...] = (
    (8, "GPU stopped processing", "RESTART_APP"),
    (11, "Invalid or corrupted push buffer stream", "RESTART_APP"),
    (13, "Graphics Engine Exception", "RESTART_APP"),
    (25, "Invalid or illegal push buffer stream", "RESTART_APP"),
    (31, "GPU memory page fault", "RESTART_APP"),
    (32, "Invalid or corrupted push buffer stream", "RESTART_APP"),
    (37, "Driver firmware error", "IGNORE"),
    (38, "Driver firmware error", "IGNORE"),
    (39, "Copy Engine Exception", "RESTART_APP"),
    (40, "Copy Engine Exception", "RESTART_APP"),
    (41, "Copy Engine Exception", "RESTART_APP"),
    (43, "GPU stopped processing", "IGNORE"),
    (44, "Graphics Engine fault during context switch", "IGNORE"),
    (45, "Preemptive cleanup, due to previous errors", "WORKFLOW_XID_45"),
    (46, "GPU stopped processing", "RESET_GPU"),
    (48, "Double Bit ECC Error", "WORKFLOW_XID_48"),
    (54, "Auxiliary power is not connected to the GPU board", "CHECK_MECHANICALS"),
    (60, "Video processor exception", "RESTART_APP"),
    (62, "Internal micro-controller halt", "RESET_GPU"),
    (63, "GPU memory remapping event", "IGNORE"),
    (64, "GPU memory remapping failure", "RESET_GPU"),
    (66, "Illegal access by driver", "IGNORE"),
    (67, "Illegal access by driver", "IGNORE"),
    (68, "NVDEC0 Exception", "RESTART_APP"),
    (69, "Graphics Engine class error", "RESTART_APP"),
    *((c, f"CE{c - 67}: Unknown Error", "RESTART_APP") for c in (70, 71, 72)),
    (74, "NVLINK Error", "WORKFLOW_NVLINK_ERR"),
    *((c, f"CE{c - 69}: Unknown Error", "RESTART_APP") for c in (75, 76, 77)),
    (78, "vGPU Start Error", "UPDATE_SWFW"),
    (79, "GPU has fallen off the bus", "RESTART_BM"),
    (80, "Corrupted data sent to GPU", "RESTART_APP"),
    (82, "NVJPG0 Error", "RESTART_APP"),
    (83, "NVDEC1 Error", "RESTART_APP"),
    (84, "NVDEC2 Error", "RESTART_APP"),
    (85, "CE9: Unknown Error", "RESTART_APP"),
    (86, "OFA Exception", "RESTART_APP"),
    (88, "NVDEC3 Error", "RESTART_APP"),
    (89, "NVDEC4 Error", "RESTART_APP"),
    (92, "High single-bit ECC error rate", "IGNORE"),
    (93, "Non-fatal violation of provisioned InfoROM wear limit", "IGNORE"),
    (94, "Contained memory error", "RESTART_APP"),
    (95, "Uncontained memory error", "RESET_GPU"),
    *((c, f"NVDEC{c - 91} Error", "RESTART_APP") for c in (96, 97, 98)),
    *((c, f"NVJPG{c - 98} Error", "RESTART_APP") for c in (99, 100, 101, 102, 103, 104, 105)),
    (106, "SMBPBI Test Message", "IGNORE"),
    (107, "SMBPBI Test Message Silent", "IGNORE"),
    (109, "Context Switch Timeout Error", "RESET_GPU"),
    (110, "Security Fault Error", "RESET_GPU"),
    (119, "GSP RPC Timeout", "RESET_GPU"),
    (120, "GSP Error", "RESET_GPU"),
    (121, "C2C Error", "IGNORE"),
    *((c, f"CE{c - 116}: Unknown Error", "RESTART_APP") for c in range(126, 136)),
    (136, "Link Training Failed", "RESET_GPU"),
    (137, "NVLink Privilege Error", "IGNORE"),
    (139, "OFA1 Error", "RESTART_APP"),
    (140, "ECC Unrecovered Error", "RESET_GPU"),
    (141, "CUDA Fast Path Error", "IGNORE"),
    (143, "GPU Initialization Error", "RESET_GPU"),
    (144, "NVLINK: SAW Error", "WORKFLOW_NVLINK5_ERR"),
    (145, "NVLINK: RLW Error", "WORKFLOW_NVLINK5_ERR"),
    (146, "NVLINK: TLW Error", "WORKFLOW_NVLINK5_ERR"),
    (147, "NVLINK: TREX Error", "WORKFLOW_NVLINK5_ERR"),
    (148, "NVLINK: NVLPW_CTRL Error", "WORKFLOW_NVLINK5_ERR"),
    (149, "NVLINK: NETIR Error", "WORKFLOW_NVLINK5_ERR"),
    (150, "NVLINK: MSE Error", "WORKFLOW_NVLINK5_ERR"),
    (151, "Key rotation Error", "RESTART_VM"),
    (152, "DLA SMMU Error", "IGNORE"),
    (153, "DLA timeout Error", "IGNORE"),
    (154, "GPU Recovery Action Changed (the recovery action field says what to do)", "XID_154"),
    (155, "NVLINK: SW Defined Error", "RESET_GPU"),
    (156, "Resource Retirement Event", "RESET_GPU"),
    (157, "Resource Retirement Failure", "IGNORE"),
    (158, "GPU Fatal Timeout", "RESET_GPU"),
    (159, "CHI Non-Data Error", "CHECK_UVM"),
    (160, "Channel Retirement Event", "IGNORE"),
    (161, "Channel Retirement Failure", "IGNORE"),
)
# Where guywire departs from the catalog bucket, and why.
XID_OVERRIDES: dict[int, tuple[HealthState, Action, str]] = {
    45: (H, Action.NONE, "the device plugin ignores it: a cleanup after another XID, which is judged on its own"),
}
XID_NOTES = {
    109: "the device plugin ignores it as an application error; the catalog says RESET_GPU, which guywire follows",
    64: "repeats after a reset call for field diagnostics and replacement (catalog: CONTACT_SUPPORT)",
}


def bucket_effect(bucket: str) -> tuple[HealthState, Action]:
    if bucket == "RESTART_BM" or bucket == "RESTART_VM":
        return U, Action.REBOOT_NODE
    if bucket == "RESET_GPU" or bucket.startswith("WORKFLOW"):
        return U, Action.RESET_GPU
    if bucket in ("CHECK_MECHANICALS", "UPDATE_SWFW", "CONTACT_SUPPORT"):
        return D, Action.INVESTIGATE
    return H, Action.NONE  # RESTART_APP, IGNORE, CHECK_UVM, XID_154: the application's, or informational


@dataclass(frozen=True, slots=True)
class XidRule:
    code: int
    description: str
    bucket: str  # the catalog's immediate action, or "configured"
    state: HealthState
    action: Action
    note: str = ""


# ----- configuration -----------------------------------------------------------------------------
class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class XidSetting(_Config):
    state: HealthState
    action: Action | None = None


def thresholds_model(signals: tuple[Signal, ...] = SIGNALS) -> type[_Config]:
    """``thresholds`` of a health config: each signal's ``thresholds``, in camelCase, none below 0."""
    return create_model("Thresholds", __base__=_Config, **{
        t.attr: (t.type, Field(default=t.default, ge=0, description=t.description))
        for s in signals for t in s.thresholds})


Thresholds = thresholds_model()


class HealthConfig(_Config):
    """What a ``--health-config`` YAML file may set."""

    thresholds: Thresholds = Field(default_factory=Thresholds)  # type: ignore[valid-type]
    xids: dict[int, XidSetting] = Field(default_factory=dict)
    unknown_xid: HealthState = D
    degraded_clock_reasons: list[str] = Field(default_factory=lambda: list(DEGRADING_CLOCK_REASONS))

    @field_validator("xids", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"state": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


def health_config_model(signals: tuple[Signal, ...] = SIGNALS) -> type[HealthConfig]:
    """The health config for another set of signals (their thresholds)."""
    if signals is SIGNALS:
        return HealthConfig
    thresholds = thresholds_model(signals)
    return create_model("HealthConfig", __base__=HealthConfig,
                        thresholds=(thresholds, Field(default_factory=thresholds)))


class HealthConfigError(ValueError):
    """A health config that cannot be used; the message names the field."""


@dataclass(slots=True)
class HealthTable:
    thresholds: Any  # a Thresholds model (``thresholds_model``): the judges read the signals' thresholds by name
    xids: dict[int, XidRule]
    unknown_xid: HealthState
    degraded_clock_reasons: tuple[str, ...]

    @classmethod
    def build(cls, config: HealthConfig | None = None) -> "HealthTable":
        config = config or HealthConfig()
        xids: dict[int, XidRule] = {}
        for code, desc, bucket in XID_CATALOG:
            state, action = bucket_effect(bucket)
            note = XID_NOTES.get(code, "")
            if code in XID_OVERRIDES:
                state, action, note = XID_OVERRIDES[code]
            if code == 79:
                action = Action.REBOOT_NODE
            xids[code] = XidRule(code, desc, bucket, state, action, note)
        for code, setting in config.xids.items():
            base = xids.get(code)
            action = setting.action or (base.action if base and base.state == setting.state else
                                        {H: Action.NONE, D: Action.INVESTIGATE, U: Action.RESET_GPU}[setting.state])
            xids[code] = XidRule(code, base.description if base else f"XID {code}",
                                 base.bucket if base else "", setting.state, action, "configured")
        return cls(thresholds=config.thresholds, xids=xids, unknown_xid=config.unknown_xid,
                   degraded_clock_reasons=tuple(config.degraded_clock_reasons))

    def xid(self, code: int) -> XidRule:
        found = self.xids.get(code)
        if found is not None:
            return found
        action = Action.INVESTIGATE if self.unknown_xid is not H else Action.NONE
        if self.unknown_xid is U:
            action = Action.RESET_GPU
        return XidRule(code, "not in guywire's XID table", "", self.unknown_xid, action,
                       "unknownXid")


def load_health_config(path: str | Path, signals: tuple[Signal, ...] = SIGNALS) -> HealthTable:
    """Read a YAML health config; raise HealthConfigError naming the field."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HealthConfigError(f"{path}: cannot be read ({exc}).") from None
    try:
        return HealthTable.build(health_config_model(signals).model_validate(data))
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise HealthConfigError(f"{path}: {loc}: {e['msg'].rstrip('.')}.") from None


DEFAULT_TABLE = HealthTable.build()


# ----- one GPU, one read ---------------------------------------------------------------------------
def classify_gpu(g: GpuReadings, table: HealthTable = DEFAULT_TABLE,
                 signals: tuple[Signal, ...] = SIGNALS) -> list[Check]:
    """What this read says about the GPU, XID events aside: the GPU as a whole, then each signal's judge, in the
    rows' positions. Unknown readings say nothing."""
    out: list[Check] = []
    if g.lost:
        where = f" while reading {g.lost_during}" if g.lost_during and g.lost_during != "handle" else ""
        out.append(ROW["gpu-lost"].check(f"NVML reports the GPU lost (NVML_ERROR_GPU_IS_LOST{where}): it fell off "
                                         "the bus or stopped responding."))
    if g.reset_required:
        out.append(ROW["reset-required"].check("NVML reports that the GPU needs a reset (NVML_ERROR_RESET_REQUIRED)."))
    if g.inaccessible:
        out.append(ROW["inaccessible"].check(f"NVML cannot open the GPU ({g.inaccessible.rstrip('.')})."))
    for signal in signals:
        if signal.judge is not None:
            out += signal.judge(g, table)
    position = {r.id: r.position for r in DEVICE_ROWS + rows_of(signals)}
    return sorted(out, key=lambda c: position[c.row])


def xid_event(seen: XidSeen, table: HealthTable = DEFAULT_TABLE) -> XidEvent:
    rule = table.xid(seen.xid)
    return XidEvent(xid=seen.xid, name=rule.description, effect=rule.state, action=rule.action, at=seen.at)


def _latch_check(latch: LatchedXid) -> Check:
    row = "xid-critical" if latch.effect is U else "xid-degraded"
    when = f" at {rfc3339(latch.at)}" if latch.at else ""
    return Check(latch.effect, f"XID {latch.xid} ({latch.name}){when}; it holds until the GPU is reset or the "
                               "node reboots.", latch.action, row)


# ----- memory across reads ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Seen:
    """What the previous read showed of a GPU: a reset shows as these going away."""

    recovery_action: int | None = None
    lost: bool = False
    reset_required: bool = False
    ecc_volatile: int | None = None
    remap_pending: bool | None = None
    pages_pending: bool | None = None
    reset_at: datetime | None = None  # when evidence of a reset was last seen


def _reset_evidence(prev: _Seen, g: GpuReadings) -> str | None:
    if prev.lost and not g.lost and not g.inaccessible:
        return "it answers again after being lost"
    if prev.reset_required and not g.reset_required and not g.lost:
        return "it no longer needs a reset"
    if prev.recovery_action and g.recovery_action == 0:
        return "the driver's recovery action went back to NONE"
    if prev.ecc_volatile and g.ecc_uncorrected_volatile is not None and g.ecc_uncorrected_volatile < prev.ecc_volatile:
        return "its volatile ECC counters were cleared"
    if prev.remap_pending and g.remapped_rows is not None and not g.remapped_rows.pending:
        return "its pending row remap was applied"
    if prev.pages_pending and g.retired_pages_pending is False:
        return "its pending page retirements were applied"
    return None


@dataclass
class HealthTracker:
    """Judges successive reads of one node, remembering latched XIDs and signs of GPU resets."""

    table: HealthTable = field(default_factory=lambda: DEFAULT_TABLE)
    boot_id: str | None = None
    latched: dict[str, list[LatchedXid]] = field(default_factory=dict)  # GPU uuid (or "node") -> latches
    recent: dict[str, list[XidEvent]] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)
    uuid_at: dict[int, str] = field(default_factory=dict)
    recent_limit: int = 10
    signals: tuple[Signal, ...] = SIGNALS

    def restore(self, report: NodeGpuHealth | None) -> None:
        """Carry latches over from the report a previous agent wrote (it restarted, or this is --once)."""
        if report is None:
            return
        self.boot_id = self.boot_id or report.boot_id
        for gpu in report.gpus:
            key = gpu.uuid or f"index-{gpu.index}"
            if gpu.uuid:
                self.uuid_at.setdefault(gpu.index, gpu.uuid)
            if gpu.latched:
                self.latched.setdefault(key, [l.model_copy() for l in gpu.latched])
            if gpu.recent_xids:
                self.recent.setdefault(key, [x.model_copy() for x in gpu.recent_xids])
            r = gpu.readings
            rows = r.get("remappedRows") if isinstance(r.get("remappedRows"), dict) else {}
            self.seen.setdefault(key, _Seen(recovery_action=r.get("recoveryAction"),
                                            lost=any("NVML_ERROR_GPU_IS_LOST" in x for x in gpu.reasons),
                                            ecc_volatile=r.get("eccUncorrectedVolatile"),
                                            remap_pending=rows.get("pending"),
                                            pages_pending=r.get("retiredPagesPending")))

    def _key(self, g: GpuReadings) -> str:
        if g.uuid:
            self.uuid_at[g.index] = g.uuid
            return g.uuid
        return self.uuid_at.get(g.index, f"index-{g.index}")

    def assess(self, readings: NodeReadings, now: datetime, *, boot_id: str | None = None,
               expected_gpus: int | None = None, gpu_node: bool = False,
               agent_version: str | None = None) -> NodeGpuHealth:
        """``gpu_node``: the Node says it has GPUs (labels or capacity), so seeing none is a fault even when
        no expected count is known."""
        rebooted = bool(boot_id and self.boot_id and boot_id != self.boot_id)
        if boot_id:
            self.boot_id = boot_id
        if rebooted:  # a reboot resets every GPU: latches clear on the first healthy re-check from now on
            for seen in self.seen.values():
                seen.reset_at = now
        gpus: list[GpuHealth] = []
        node_checks: list[Check] = []
        for g in readings.gpus:
            gpus.append(self._assess_gpu(g, now, rebooted))
        # node level
        count = readings.gpu_count
        for err in readings.errors:
            if err.startswith("NVML cannot count"):
                node_checks.append(Check(U, err, ROW["nvml-error"].action, "nvml-error"))
        if expected_gpus is not None and count is not None and count < expected_gpus:
            node_checks.append(Check(U, f"NVML sees {count} GPU(s) but the node advertises {expected_gpus}: "
                                        f"{expected_gpus - count} GPU(s) fell off the bus or failed to initialise.",
                                     ROW["missing-gpus"].action, "missing-gpus"))
        elif count == 0 and (gpu_node or expected_gpus):
            node_checks.append(Check(U, "NVML sees no GPU but the Node is a GPU node (label nvidia.com/gpu.present, "
                                        "nvidia.com/gpu.count or nvidia.com/gpu capacity): every GPU fell off the "
                                        "bus or failed to initialise.", ROW["missing-gpus"].action, "missing-gpus"))
        node_latches = self.latched.setdefault("node", [])
        for seen in readings.unattributed_xids:
            ev = xid_event(seen, self.table)
            if ev.effect is not H:
                node_latches[:] = [l for l in node_latches if l.xid != ev.xid]
                node_latches.append(LatchedXid(**ev.model_dump(), boot_id=boot_id))
        if rebooted:
            node_latches.clear()
        for latch in node_latches:
            c = _latch_check(latch)
            node_checks.append(Check(c.state, "a GPU NVML cannot name raised " + c.reason, c.action, c.row))
        reasons = [c.reason for c in node_checks]
        for gpu in gpus:
            if gpu.state is not H:
                reasons += [f"GPU {gpu.index}: {r}" for r in gpu.reasons]
        states = [c.state for c in node_checks] + [g.state for g in gpus]
        actions = [c.action for c in node_checks] + [g.action for g in gpus]
        return NodeGpuHealth(state=HealthState.worst(states), reported_at=now, reasons=reasons,
                             action=Action.strongest(actions), gpus=gpus, gpu_count=count,
                             expected_gpus=expected_gpus, driver_version=readings.driver_version,
                             boot_id=boot_id or self.boot_id, agent_version=agent_version)

    def _assess_gpu(self, g: GpuReadings, now: datetime, rebooted: bool) -> GpuHealth:
        key = self._key(g)
        prev = self.seen.get(key) or _Seen()
        if _reset_evidence(prev, g) or rebooted:
            prev.reset_at = now
        checks = classify_gpu(g, self.table, self.signals)
        current = HealthState.worst([c.state for c in checks])
        latches = self.latched.setdefault(key, [])
        recent = self.recent.setdefault(key, [])
        raised_now: set[int] = set()
        for seen_xid in g.xids:
            ev = xid_event(seen_xid, self.table)
            recent.append(ev)
            if ev.effect is not H:
                raised_now.add(ev.xid)
                latches[:] = [l for l in latches if l.xid != ev.xid]
                latches.append(LatchedXid(**ev.model_dump(), boot_id=self.boot_id))
        del recent[:-self.recent_limit]
        if current is not U:  # a healthy re-check: latches clear after a reset or a reboot
            kept = []
            for latch in latches:
                reset_after = prev.reset_at is not None and (latch.at is None or prev.reset_at > latch.at)
                other_boot = bool(latch.boot_id and self.boot_id and latch.boot_id != self.boot_id)
                if latch.xid not in raised_now and (reset_after or other_boot):
                    continue
                kept.append(latch)
            latches[:] = kept
        checks += [_latch_check(l) for l in latches]
        self.seen[key] = _Seen(recovery_action=g.recovery_action, lost=g.lost, reset_required=g.reset_required,
                               ecc_volatile=g.ecc_uncorrected_volatile,
                               remap_pending=g.remapped_rows.pending if g.remapped_rows else None,
                               pages_pending=g.retired_pages_pending, reset_at=prev.reset_at)
        state = HealthState.worst([c.state for c in checks])
        return GpuHealth(index=g.index, uuid=g.uuid or (key if not key.startswith("index-") else None), name=g.name,
                         state=state, reasons=[c.reason for c in checks],
                         action=Action.strongest([c.action for c in checks]), latched=list(latches),
                         recent_xids=list(recent), unknown=sorted(set(g.unknown)), readings=snapshot(g, self.signals))


def classify(readings: NodeReadings, now: datetime, *, expected_gpus: int | None = None,
             table: HealthTable = DEFAULT_TABLE, boot_id: str | None = None) -> NodeGpuHealth:
    """One read, no memory: what a single ``--once`` pass reports."""
    return HealthTracker(table=table).assess(readings, now, boot_id=boot_id, expected_gpus=expected_gpus)
