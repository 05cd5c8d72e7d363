"""One descriptor per GPU signal: where it is read, what it holds, how the fake plays it, how it is judged, what
it exports.

A ``Signal`` is one reading of one GPU as NVML gives it (``temperature``, ``ecc``, ``nvlink`` ...). Its
descriptor drives every place the signal shows up:

- ``gpu.nvml`` makes its ``calls`` (pynvml function names and constant names, never the functions: every pynvml
  call stays in ``gpu.nvml``) or runs its named ``reader`` for what a plain call cannot say (link loops, rates,
  field values, events), and stores the values in the ``GpuReadings`` attributes its ``fields`` name;
- ``GpuReadings.snapshot`` shows the fields that have a ``snapshot`` key in the Node annotation;
- ``gpu.fake`` accepts its ``fake`` keys in a scenario (type and bounds checked by the scenario model), answers
  the pynvml function a key ``answers`` from the scenario value, and makes it NOT_SUPPORTED by name;
- ``gpu.classify`` runs its ``judge`` on every read; its ``rows`` are its lines of the classification table
  (state, recommended action, sources); ``position`` orders the reasons of a report; its ``thresholds`` are
  settings of the health config (``--health-config``);
- ``gpu.gpu_metrics`` exports its ``metrics``, one series per GPU (labels node, gpu, uuid);
- ``gpu.health_docs`` lists it in docs/gpu-health.md (``doc``).

A new signal is one more ``Signal`` in ``SIGNALS``, in the order NVML is called (a GPU lost in the middle of a
read keeps what was read before). Its values land in ``GpuReadings.extra`` under the field's name until
``GpuReadings`` gets a typed attribute for it. Plain Python: no pynvml, pydantic or Prometheus import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..model.gpu_health import Action, HealthState
from .readings import GpuReadings, RemappedRows

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY

# NVML's clock event (throttle) reason bits, by the names pynvml gives them.
CLOCK_REASONS = (
    ("GpuIdle", 0x1), ("ApplicationsClocksSetting", 0x2), ("SwPowerCap", 0x4), ("HwSlowdown", 0x8),
    ("SyncBoost", 0x10), ("SwThermalSlowdown", 0x20), ("HwThermalSlowdown", 0x40),
    ("HwPowerBrakeSlowdown", 0x80), ("DisplayClockSetting", 0x100),
)
DEGRADING_CLOCK_REASONS = ("HwSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown")

# NVML_FI_DEV_GET_GPU_RECOVERY_ACTION values: (name, state, action, what the driver asks for)
RECOVERY_ACTIONS: dict[int, tuple[str, HealthState, Action, str]] = {
    0: ("NONE", H, Action.NONE, "nothing"),
    1: ("GPU_RESET", U, Action.RESET_GPU, "a GPU reset"),
    2: ("NODE_REBOOT", U, Action.REBOOT_NODE, "a node reboot"),
    3: ("DRAIN_P2P", U, Action.DRAIN, "peer-to-peer traffic to be drained before it can tell what else"),
    4: ("DRAIN_AND_RESET", D, Action.RESET_GPU, "a reset once drained: it runs at reduced capacity"),
    5: ("RECOVER_IMEX_DOMAIN", D, Action.INVESTIGATE, "the IMEX domain to be recovered"),
    6: ("BUS_RESET", U, Action.RESET_GPU, "a PCIe bus reset"),
    7: ("SYSTEM_REBOOT", U, Action.REBOOT_NODE, "a system reboot"),
}


# ----- the parts of a descriptor ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    """One NVML call on the device handle: the first of ``function`` the library has, with the pynvml constants
    named in ``args``; ``convert(answer, nvml)`` turns the answer into the values of the reading fields ``into``
    (a tuple when ``into`` names more than one)."""

    function: tuple[str, ...]
    into: tuple[str, ...]
    args: tuple[str, ...] = ()
    convert: Callable[[Any, Any], Any] = lambda answer, nvml: answer


@dataclass(frozen=True, slots=True)
class Field:
    """A value the signal holds in ``GpuReadings``: ``attr`` is its attribute (or its key in ``extra``);
    ``snapshot`` its key in the Node annotation's ``readings`` (None: not shown); ``shown`` what is shown
    (None: nothing)."""

    attr: str
    unit: str
    snapshot: str | None = None
    shown: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class FakeKey:
    """A GPU key of the fake's scenario: its ``kind`` (see ``gpu.fake``: number, count, bool, text, reasons,
    ints, rows), its value when a scenario leaves it out, the name ``notSupported`` takes to make it answer
    NOT_SUPPORTED (``tag``, None: it cannot be), and the pynvml function it ``answers`` with ``to_nvml(value)``
    (None: the fake has a function of its own for it)."""

    key: str
    kind: str
    default: Any
    tag: str | None = None
    answers: str | None = None
    to_nvml: Callable[[Any], Any] = lambda value: value


@dataclass(frozen=True, slots=True)
class Threshold:
    """A setting of the health config's ``thresholds`` (its key is ``attr`` in camelCase; never below 0) that the
    signal's judge reads as ``table.thresholds.<attr>``."""

    attr: str
    type: type
    default: float
    description: str


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the classification table. ``position`` orders reasons in a report (lower first) and rows of
    one state in the table."""

    id: str
    signal: str
    condition: str
    state: HealthState
    action: Action
    sources: tuple[str, ...]
    position: int = 0

    def check(self, reason: str, state: HealthState | None = None, action: Action | None = None) -> "Check":
        return Check(state or self.state, reason, action or self.action, self.id)


@dataclass(frozen=True, slots=True)
class Check:
    """What one row says about one GPU (or the node) in one read."""

    state: HealthState
    reason: str
    action: Action
    row: str


@dataclass(frozen=True, slots=True)
class Metric:
    """A Prometheus series per GPU (labels node, gpu, uuid): ``value(readings)``, None when unknown. A counter is
    increased by ``value`` on every read."""

    name: str
    help: str
    value: Callable[[GpuReadings], Any]
    counter: bool = False


Judge = Callable[[GpuReadings, Any], Iterable[Check]]  # (readings, classify.HealthTable) -> checks


@dataclass(frozen=True, slots=True)
class Signal:
    name: str  # as listed in a GPU's `unknown` and `errors`, and accepted by the fake's notSupported
    doc: str
    fields: tuple[Field, ...]
    fake: tuple[FakeKey, ...]
    calls: tuple[Call, ...] = ()
    reader: str | None = None  # a reader of gpu.nvml's for what plain calls cannot say
    nvml: str = ""  # the NVML source, in words, for the docs (default: the calls' functions)
    rows: tuple[Row, ...] = ()
    judge: Judge | None = None
    thresholds: tuple[Threshold, ...] = ()
    metrics: tuple[Metric, ...] = ()
    aliases: tuple[str, ...] = ()  # further notSupported names

    @property
    def source(self) -> str:
        return self.nvml or ", ".join(dict.fromkeys(c.function[0] for c in self.calls))


def get(g: GpuReadings, attr: str) -> Any:
    """A reading field's value: its ``GpuReadings`` attribute, else its entry in ``extra``."""
    return getattr(g, attr) if attr in GpuReadings.__dataclass_fields__ else g.extra.get(attr)


def put(g: GpuReadings, attr: str, value: Any) -> None:
    if attr in GpuReadings.__dataclass_fields__:
        setattr(g, attr, value)
    else:
        g.extra[attr] = value


# ----- conversions ---------------------------------------------------------------------------------------------
def text(value: Any, nvml: Any = None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _float(value: Any, nvml: Any) -> float:
    return float(value)


def _int(value: Any, nvml: Any) -> int:
    return int(value)


def _milli(value: Any, nvml: Any) -> float:
    return value / 1000.0


def _clock_reasons(mask: Any, nvml: Any) -> tuple[int, list[str]]:
    return int(mask), [name for name, bit in CLOCK_REASONS if int(mask) & bit]


def _rows(rows: Any, nvml: Any) -> RemappedRows:
    corr, unc, pend, fail = rows
    return RemappedRows(int(corr), int(unc), bool(pend), bool(fail))


def _num(v: float) -> str:
    return f"{v:g}"


def _rounded(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def _mib(value: float | None) -> float | None:
    return value * 2**20 if value is not None else None


# ----- judges: what one read of a signal says (unknown readings say nothing) ------------------------------------
def _judge_temperature(g: GpuReadings, table: Any) -> Iterable[Check]:
    temp, margin = g.temperature_c, table.thresholds.temperature_margin_c
    if temp is None:
        return
    if g.shutdown_temperature_c is not None and temp >= g.shutdown_temperature_c - margin:
        yield _TEMP_SHUTDOWN.check(f"temperature {_num(temp)} °C is at or above the shutdown threshold "
                                   f"{_num(g.shutdown_temperature_c)} °C.")
    elif g.slowdown_temperature_c is not None and temp >= g.slowdown_temperature_c - margin:
        yield _TEMP_SLOWDOWN.check(f"temperature {_num(temp)} °C is at or above the slowdown threshold "
                                   f"{_num(g.slowdown_temperature_c)} °C, so clocks are reduced.")


def _judge_ecc(g: GpuReadings, table: Any) -> Iterable[Check]:
    limit = table.thresholds.ecc_uncorrected_volatile
    if g.ecc_uncorrected_volatile is not None and g.ecc_uncorrected_volatile > limit:
        yield _ECC.check(f"{g.ecc_uncorrected_volatile} uncorrected ECC error(s) since the last reset "
                         f"(limit {limit}).")


def _judge_retired_pages(g: GpuReadings, table: Any) -> Iterable[Check]:
    if g.retired_pages_pending:
        yield _PAGES_PENDING.check("retired memory pages are pending; a GPU reset retires them.")


def _judge_remapped_rows(g: GpuReadings, table: Any) -> Iterable[Check]:
    rows = g.remapped_rows
    if rows is None:
        return
    if rows.failure:
        yield _REMAP_FAILURE.check(f"row remapping failed ({rows.uncorrectable} row(s) remapped for uncorrectable "
                                   "errors): the GPU has no spare memory rows left.")
    elif rows.pending:
        yield _REMAP_PENDING.check("a row remap is pending; a GPU reset applies it.")


def _judge_clocks(g: GpuReadings, table: Any) -> Iterable[Check]:
    slow = [r for r in (g.clocks_event_reasons or []) if r in table.degraded_clock_reasons]
    if slow:
        yield _THROTTLE.check(f"clocks are held down by {', '.join(slow)}.")


def _judge_nvlink(g: GpuReadings, table: Any) -> Iterable[Check]:
    if g.nvlink_down:
        links = ", ".join(str(x) for x in g.nvlink_down)
        yield _NVLINK_DOWN.check(f"NVLink link(s) {links} down while {len(g.nvlink_active or [])} other(s) are up.")


def _judge_pcie(g: GpuReadings, table: Any) -> Iterable[Check]:
    rate, limit = g.pcie_replays_per_minute, table.thresholds.pcie_replays_per_minute
    if rate is not None and rate > limit:
        yield _PCIE.check(f"{_num(round(rate, 1))} PCIe replays per minute (limit {_num(limit)}); "
                          "check the PCIe link, riser and seating.")


def _judge_recovery_action(g: GpuReadings, table: Any) -> Iterable[Check]:
    if g.recovery_action:
        name, state, action, asks = RECOVERY_ACTIONS.get(
            g.recovery_action, (str(g.recovery_action), D, Action.INVESTIGATE, "an action guywire does not know"))
        row = _RECOVERY if state is U else _RECOVERY_DRAIN
        yield row.check(f"the driver asks for {asks} (recovery action {g.recovery_action}, {name}).", state, action)


# ----- the rows --------------------------------------------------------------------------------------------------
_ECC = Row("ecc-uncorrected", "nvmlDeviceGetTotalEccErrors (uncorrected, volatile)",
           "above thresholds.eccUncorrectedVolatile (default 0)", U, Action.RESET_GPU, ("dcgm", "memory"), 10)
_REMAP_FAILURE = Row("row-remap-failure", "nvmlDeviceGetRemappedRows", "failure flag set: no spare rows left", U,
                     Action.REPLACE_GPU, ("memory", "dcgm"), 20)
_NVLINK_DOWN = Row("nvlink-down", "nvmlDeviceGetNvLinkState", "a link inactive while other links of the GPU are "
                   "active", U, Action.RESET_GPU, ("dcgm", "xid-catalog"), 30)
_TEMP_SHUTDOWN = Row("temperature-shutdown", "nvmlDeviceGetTemperature", "at or above the shutdown threshold "
                     "(nvmlDeviceGetTemperatureThreshold SHUTDOWN) minus thresholds.temperatureMarginC", U,
                     Action.INVESTIGATE, ("nvml", "dcgm"), 40)
_TEMP_SLOWDOWN = Row("temperature-slowdown", "nvmlDeviceGetTemperature", "at or above the slowdown threshold minus "
                     "thresholds.temperatureMarginC", D, Action.INVESTIGATE, ("nvml", "dcgm"), 40)
_RECOVERY = Row("recovery-action", "field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", "asks for a GPU reset, bus reset, "
                "node or system reboot, or a P2P drain (see the recovery action table)", U, Action.RESET_GPU,
                ("nvml", "dcgm"), 50)
_RECOVERY_DRAIN = Row("recovery-action-drain", "field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", "DRAIN_AND_RESET "
                      "(reduced capacity) or RECOVER_IMEX_DOMAIN", D, Action.RESET_GPU, ("nvml",), 50)
_REMAP_PENDING = Row("row-remap-pending", "nvmlDeviceGetRemappedRows", "pending flag set: a reset applies the "
                     "remap", D, Action.RESET_GPU, ("memory", "dcgm"), 60)
_PAGES_PENDING = Row("retired-pages-pending", "nvmlDeviceGetRetiredPagesPendingStatus", "pages pending retirement",
                     D, Action.RESET_GPU, ("page-retirement", "dcgm"), 70)
_THROTTLE = Row("hw-throttle", "nvmlDeviceGetCurrentClocksEventReasons", "a reason in degradedClockReasons (default "
                "HwSlowdown, HwThermalSlowdown, HwPowerBrakeSlowdown)", D, Action.INVESTIGATE, ("nvml", "dcgm"), 80)
_PCIE = Row("pcie-replays", "nvmlDeviceGetPcieReplayCounter", "more than thresholds.pcieReplaysPerMinute (default 8, "
            "DCGM's limit) between two reads at least 10 s apart", D, Action.INVESTIGATE, ("dcgm-limits", "dcgm"), 90)
# XIDs are events: gpu.classify's tracker latches them and judges the latches (no judge here).
XID_CRITICAL = Row("xid-critical", "XID events (nvmlEventTypeXidCriticalError)", "an XID whose catalog action is "
                   "RESET_GPU, RESTART_BM, RESTART_VM or WORKFLOW_* (see the XID table); latched", U,
                   Action.RESET_GPU, ("xid-catalog", "device-plugin"), 200)
XID_DEGRADED = Row("xid-degraded", "XID events", "an XID that is not in the table (unknownXid, default Degraded) or "
                   "whose catalog action is CHECK_MECHANICALS / UPDATE_SWFW; latched", D, Action.INVESTIGATE,
                   ("xid-catalog",), 200)
XID_APPLICATION = Row("xid-application", "XID events", "an application XID (13, 31, 43, 45, 68 and the catalog's "
                      "RESTART_APP / IGNORE ones): reported in recentXids, changes nothing", H, Action.NONE,
                      ("device-plugin", "xid-catalog"), 200)


def _gauge(name: str, help: str, attr: str) -> Metric:
    return Metric(name, help, lambda g: get(g, attr))


def _bool(value: Any) -> int:
    return 1 if value else 0


# ----- the signals, in the order NVML is called -----------------------------------------------------------------
SIGNALS: tuple[Signal, ...] = (
    Signal("name", "the GPU's product name", fields=(Field("name", "text"),),
           calls=(Call(("nvmlDeviceGetName",), ("name",), convert=text),),
           fake=(FakeKey("name", "text", "NVIDIA H100 80GB HBM3", "name", "nvmlDeviceGetName", str),)),
    Signal("uuid", "the GPU's UUID: it names the GPU in the report, across restarts", fields=(Field("uuid", "text"),),
           calls=(Call(("nvmlDeviceGetUUID",), ("uuid",), convert=text),),
           fake=(FakeKey("uuid", "text", None, "uuid", "nvmlDeviceGetUUID", str),)),
    Signal("xidEvents", "XID events, waited on in an event set; unknown when the GPU cannot deliver them",
           fields=(Field("xids", "events"),), reader="xid_events",
           nvml="nvmlDeviceRegisterEvents (nvmlEventTypeXidCriticalError), nvmlEventSetWait_v2",
           fake=(FakeKey("xids", "ints", [], "events"),), aliases=("xids", "events"),
           rows=(XID_CRITICAL, XID_DEGRADED, XID_APPLICATION),
           metrics=(Metric("guywire_gpu_xid_events", "XID events seen.", lambda g: len(g.xids) or None, True),)),
    Signal("temperature", "GPU core temperature", fields=(Field("temperature_c", "°C", "temperatureC"),),
           calls=(Call(("nvmlDeviceGetTemperature",), ("temperature_c",), ("NVML_TEMPERATURE_GPU",), _float),),
           fake=(FakeKey("temperature", "number", 40, "temperature", "nvmlDeviceGetTemperature", int),),
           rows=(_TEMP_SHUTDOWN, _TEMP_SLOWDOWN), judge=_judge_temperature,
           thresholds=(Threshold("temperature_margin_c", float, 0.0, "Degrees below NVML's thresholds that count."),),
           metrics=(_gauge("guywire_gpu_temperature_celsius", "GPU temperature.", "temperature_c"),)),
    Signal("temperatureThresholds", "the temperatures at which the GPU slows down and shuts down",
           fields=(Field("slowdown_temperature_c", "°C", "slowdownTemperatureC"),
                   Field("shutdown_temperature_c", "°C", "shutdownTemperatureC")),
           calls=(Call(("nvmlDeviceGetTemperatureThreshold",), ("slowdown_temperature_c",),
                       ("NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",), _float),
                  Call(("nvmlDeviceGetTemperatureThreshold",), ("shutdown_temperature_c",),
                       ("NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",), _float)),
           fake=(FakeKey("slowdownTemperature", "number", 87, "slowdown"),
                 FakeKey("shutdownTemperature", "number", 92, "shutdown")),
           metrics=(_gauge("guywire_gpu_slowdown_temperature_celsius", "Temperature at which the GPU slows down.",
                           "slowdown_temperature_c"),
                    _gauge("guywire_gpu_shutdown_temperature_celsius", "Temperature at which the GPU shuts down.",
                           "shutdown_temperature_c"))),
    Signal("power", "power draw", fields=(Field("power_w", "W", "powerW"),),
           calls=(Call(("nvmlDeviceGetPowerUsage",), ("power_w",), convert=_milli),),
           fake=(FakeKey("powerUsage", "number", 100.0, "power", "nvmlDeviceGetPowerUsage",
                         lambda w: int(round(float(w) * 1000))),),
           metrics=(_gauge("guywire_gpu_power_watts", "Power draw.", "power_w"),)),
    Signal("powerLimit", "the enforced power limit", fields=(Field("power_limit_w", "W", "powerLimitW"),),
           calls=(Call(("nvmlDeviceGetEnforcedPowerLimit",), ("power_limit_w",), convert=_milli),),
           fake=(FakeKey("powerLimit", "number", 700, "powerLimit", "nvmlDeviceGetEnforcedPowerLimit",
                         lambda w: int(round(float(w) * 1000))),),
           metrics=(_gauge("guywire_gpu_power_limit_watts", "Enforced power limit.", "power_limit_w"),)),
    Signal("ecc", "uncorrected ECC errors, since the last reset (volatile) and over the GPU's life (aggregate)",
           fields=(Field("ecc_uncorrected_volatile", "errors", "eccUncorrectedVolatile"),
                   Field("ecc_uncorrected_aggregate", "errors", "eccUncorrectedAggregate")),
           calls=(Call(("nvmlDeviceGetTotalEccErrors",), ("ecc_uncorrected_volatile",),
                       ("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_VOLATILE_ECC"), _int),
                  Call(("nvmlDeviceGetTotalEccErrors",), ("ecc_uncorrected_aggregate",),
                       ("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_AGGREGATE_ECC"), _int)),
           fake=(FakeKey("eccUncorrectedVolatile", "number", 0, "eccVolatile"),
                 FakeKey("eccUncorrectedAggregate", "number", 0, "eccAggregate")),
           rows=(_ECC,), judge=_judge_ecc,
           thresholds=(Threshold("ecc_uncorrected_volatile", int, 0, "Uncorrected volatile ECC errors tolerated."),),
           metrics=(_gauge("guywire_gpu_ecc_uncorrected_volatile_errors", "Uncorrected ECC errors since the last "
                           "reset.", "ecc_uncorrected_volatile"),
                    _gauge("guywire_gpu_ecc_uncorrected_aggregate_errors", "Uncorrected ECC errors over the GPU's "
                           "life.", "ecc_uncorrected_aggregate"))),
    Signal("retiredPages", "whether memory pages wait for a reset to be retired",
           fields=(Field("retired_pages_pending", "yes/no", "retiredPagesPending"),),
           calls=(Call(("nvmlDeviceGetRetiredPagesPendingStatus",), ("retired_pages_pending",),
                       convert=lambda v, nvml: bool(v == nvml.NVML_FEATURE_ENABLED)),),
           fake=(FakeKey("retiredPagesPending", "bool", False, "retiredPages",
                         "nvmlDeviceGetRetiredPagesPendingStatus", _bool),),
           rows=(_PAGES_PENDING,), judge=_judge_retired_pages,
           metrics=(_gauge("guywire_gpu_retired_pages_pending", "1 when page retirements are pending.",
                           "retired_pages_pending"),)),
    Signal("remappedRows", "memory rows remapped (correctable, uncorrectable) and whether a remap is pending or "
           "failed", fields=(Field("remapped_rows", "rows", "remappedRows",
                                   lambda r: {"correctable": r.correctable, "uncorrectable": r.uncorrectable,
                                              "pending": r.pending, "failure": r.failure}),),
           calls=(Call(("nvmlDeviceGetRemappedRows",), ("remapped_rows",), convert=_rows),),
           fake=(FakeKey("remappedRows", "rows",
                         {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}, "remappedRows"),),
           rows=(_REMAP_FAILURE, _REMAP_PENDING), judge=_judge_remapped_rows,
           metrics=tuple(Metric(f"guywire_gpu_remapped_rows_{part}", help,
                                lambda g, part=part: getattr(g.remapped_rows, part) if g.remapped_rows else None)
                         for part, help in (("correctable", "Rows remapped for correctable errors."),
                                            ("uncorrectable", "Rows remapped for uncorrectable errors."),
                                            ("pending", "1 when a row remap waits for a GPU reset."),
                                            ("failure", "1 when row remapping failed.")))),
    Signal("clocksEventReasons", "why clocks are held down (NVML's clock event, formerly throttle, reasons)",
           fields=(Field("clocks_event_mask", "bitmask"), Field("clocks_event_reasons", "names", "clocksEventReasons")),
           calls=(Call(("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
                       ("clocks_event_mask", "clocks_event_reasons"), convert=_clock_reasons),),
           fake=(FakeKey("clocksEventReasons", "reasons", [], "clocks"),), aliases=("throttleReasons",),
           rows=(_THROTTLE,), judge=_judge_clocks,
           metrics=(_gauge("guywire_gpu_clocks_event_reasons", "NVML clock event (throttle) reason bitmask.",
                           "clocks_event_mask"),)),
    Signal("utilization", "GPU and memory utilisation",
           fields=(Field("utilization_gpu_pct", "%", "utilizationPct"), Field("utilization_memory_pct", "%")),
           calls=(Call(("nvmlDeviceGetUtilizationRates",), ("utilization_gpu_pct", "utilization_memory_pct"),
                       convert=lambda u, nvml: (float(u.gpu), float(u.memory))),),
           fake=(FakeKey("utilization", "number", 0, "utilization"), FakeKey("memoryUtilization", "number", 0)),
           metrics=(Metric("guywire_gpu_utilization_ratio", "GPU utilisation, 0 to 1.",
                           lambda g: g.utilization_gpu_pct / 100 if g.utilization_gpu_pct is not None else None),)),
    Signal("memory", "framebuffer memory used and in all",
           fields=(Field("memory_used_mib", "MiB", "memoryUsedMiB"), Field("memory_total_mib", "MiB", "memoryTotalMiB")),
           calls=(Call(("nvmlDeviceGetMemoryInfo",), ("memory_used_mib", "memory_total_mib"),
                       convert=lambda m, nvml: (m.used / 2**20, m.total / 2**20)),),
           fake=(FakeKey("memoryUsed", "number", 0, "memory"), FakeKey("memoryTotal", "number", 81559, "memory")),
           metrics=(Metric("guywire_gpu_memory_used_bytes", "Framebuffer memory used.",
                           lambda g: _mib(g.memory_used_mib)),
                    Metric("guywire_gpu_memory_total_bytes", "Framebuffer memory.",
                           lambda g: _mib(g.memory_total_mib)))),
    Signal("nvlink", "NVLink links down while other links of the GPU are up",
           fields=(Field("nvlink_active", "links"), Field("nvlink_down", "links", "nvlinkDown", lambda v: v or None)),
           reader="nvlink", nvml="nvmlDeviceGetNvLinkState (each link)",
           fake=(FakeKey("nvlinkDown", "ints", [], "nvlink"), FakeKey("nvlinkLinks", "count", 18)),
           rows=(_NVLINK_DOWN,), judge=_judge_nvlink,
           metrics=(Metric("guywire_gpu_nvlink_down_links", "NVLink links down while others are up.",
                           lambda g: len(g.nvlink_down) if g.nvlink_down is not None else None),)),
    Signal("pcieReplays", "PCIe replays per minute, from two counter samples at least 10 s apart",
           fields=(Field("pcie_replay_counter", "replays"),
                   Field("pcie_replays_per_minute", "per minute", "pcieReplaysPerMinute")),
           reader="pcie", nvml="nvmlDeviceGetPcieReplayCounter",
           fake=(FakeKey("pcieReplaysPerMinute", "number", 0, "pcie"),),
           rows=(_PCIE,), judge=_judge_pcie,
           thresholds=(Threshold("pcie_replays_per_minute", float, 8.0, "DCGM_LIMIT_MAX_PCIREPLAY_RATE."),),
           metrics=(_gauge("guywire_gpu_pcie_replays_per_minute", "PCIe replays per minute.",
                           "pcie_replays_per_minute"),)),
    Signal("recoveryAction", "what the driver asks to recover the GPU (see the recovery action table)",
           fields=(Field("recovery_action", "value", "recoveryAction"),),
           reader="recovery_action", nvml="nvmlDeviceGetFieldValues (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)",
           fake=(FakeKey("recoveryAction", "count", 0, "recoveryAction"),),
           rows=(_RECOVERY, _RECOVERY_DRAIN), judge=_judge_recovery_action,
           metrics=(_gauge("guywire_gpu_recovery_action", "The driver's recovery action "
                           "(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION).", "recovery_action"),)),
)


def snapshot(g: GpuReadings, signals: tuple[Signal, ...] = SIGNALS) -> dict:
    """The readings worth showing in the Node annotation (known values only): plain values, then structured ones."""
    plain: dict = {}
    nested: dict = {}
    for signal in signals:
        for f in signal.fields:
            if f.snapshot is None:
                continue
            value = get(g, f.attr)
            if value is not None and f.shown is not None:
                value = f.shown(value)
            if value is not None:
                (nested if isinstance(value, dict) else plain)[f.snapshot] = _rounded(value)
    return {**plain, **nested}


def not_supported_names(signals: tuple[Signal, ...] = SIGNALS) -> dict[str, set[str]]:
    """The fake's notSupported names -> the tags of the fake keys that then answer NOT_SUPPORTED: a signal's
    name and aliases stand for all its keys; a key's name for itself."""
    out: dict[str, set[str]] = {}
    for signal in signals:
        tags = {k.tag for k in signal.fake if k.tag}
        if not tags:
            continue
        out.setdefault(signal.name, set()).update(tags)
        for k in signal.fake:
            if k.tag:
                out.setdefault(k.key, set()).add(k.tag)
        for alias in signal.aliases:
            out.setdefault(alias, set()).update(tags)
    return out


def rows_of(signals: tuple[Signal, ...] = SIGNALS) -> tuple[Row, ...]:
    return tuple(r for s in signals for r in s.rows)


__all__ = ["CLOCK_REASONS", "Call", "Check", "DEGRADING_CLOCK_REASONS", "FakeKey", "Field", "Metric",
           "RECOVERY_ACTIONS", "Row", "SIGNALS", "Signal", "Threshold", "get", "not_supported_names", "put", "rows_of", "snapshot",
           "text"]
