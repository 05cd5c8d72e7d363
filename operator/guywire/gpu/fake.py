"""A stand-in for pynvml driven by a YAML scenario: for tests, and for trying the agent without a GPU.

``FakeNvml`` has the pynvml function names, constants and error classes guywire uses
(``nvmlDeviceGetTemperature``, ``NVML_ERROR_GPU_IS_LOST``, ``NVMLError_NotSupported`` ...),
so ``gpu.nvml`` cannot tell it from the real module. A scenario::

    driverVersion: "550.90.07"
    bootId: 4d1c...                 # optional: what the agent takes for the node's boot ID
    expectedGpus: 8                 # optional: GPUs the node advertises (when no Node is read)
    gpus:
    - uuid: GPU-0e2c...             # index = position in the list (or index: N); one GPU per index
      name: NVIDIA H100 80GB HBM3
      temperature: 64               # Celsius
      slowdownTemperature: 87
      shutdownTemperature: 92
      powerUsage: 310.5             # watts
      powerLimit: 700
      memoryUsed: 1024              # MiB
      memoryTotal: 81559
      utilization: 35               # percent
      eccUncorrectedVolatile: 0
      eccUncorrectedAggregate: 0
      retiredPagesPending: false
      remappedRows: {correctable: 0, uncorrectable: 0, pending: false, failure: false}
      clocksEventReasons: []        # e.g. [HwSlowdown, HwThermalSlowdown, HwPowerBrakeSlowdown, SwThermalSlowdown]
      xids: []                      # XID codes raised as events when this state begins
      nvlinkDown: []                # link numbers that are down (of nvlinkLinks, default 18)
      pcieReplaysPerMinute: 0
      recoveryAction: 0             # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION value
      lost: false                   # every call answers NVML_ERROR_GPU_IS_LOST
      notSupported: []              # readings that answer NOT_SUPPORTED, e.g. [remappedRows, ecc]
    steps:                          # optional: later states; each lasts `reads` reads (default 1)
    - gpus: [{}, {xids: [79], lost: true}]   # partial: entries merge into the GPU at the same position
    - bootId: 9a0e...               # the node rebooted
      gpus: [{}, {lost: false}]

Further GPU keys: ``missing`` (NVML no longer lists the GPU), ``lostAfterCalls`` (in each
read the GPU answers that many calls, then GPU_IS_LOST from then on: lost in the middle of a read), ``resetRequired``,
``reset`` (in a step: the GPU was reset; volatile ECC, pending remaps and pages, the
recovery action and lost clear), ``nvlinkLinks``, ``memoryUtilization``. A top-level
``nvmlInitError`` (e.g. ``LibraryNotFound``) makes nvmlInit fail that way.

The GPU keys are the signals' fake keys (``gpu.signals``) and the device keys below; the file's schema is the
pydantic model ``scenario_model()`` builds from them. A fake key that ``answers`` a pynvml function is answered
here without a function of its own.

Time: a read is one ``nvmlDeviceGetCount`` call (the reader makes one more when it opens,
which does not count). The fake's ``clock`` moves one virtual minute each time it is read,
so a PCIe replay rate is known from the first read on.
"""
from __future__ import annotations

import copy
import string
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from ..clock import SYSTEM, Clock
from ..model.gpu_health import MAX_NODE_GPUS
from ..model.messages import clip
from .signals import CLOCK_REASONS, SIGNALS, FakeKey, Signal, not_supported_names

# ----- constants, as pynvml names them -------------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_NVLINK_MAX_LINKS = 36
NVML_FI_DEV_PCIE_REPLAY_COUNTER = 94
NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = 230
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_GPU_RECOVERY_ACTION_NONE = 0
NVML_GPU_RECOVERY_ACTION_GPU_RESET = 1
NVML_GPU_RECOVERY_ACTION_NODE_REBOOT = 2
NVML_GPU_RECOVERY_ACTION_DRAIN_P2P = 3
NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET = 4
NVML_GPU_RECOVERY_ACTION_RECOVER_IMEX_DOMAIN = 5
NVML_GPU_RECOVERY_ACTION_BUS_RESET = 6
NVML_GPU_RECOVERY_ACTION_SYSTEM_REBOOT = 7

nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypePState = 0x4
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeClock = 0x10
nvmlEventTypeNone = 0x0

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
nvmlClocksEventReasonDisplayClockSetting = 0x100
nvmlClocksEventReasonNone = 0x0
nvmlClocksThrottleReasonGpuIdle = nvmlClocksEventReasonGpuIdle
nvmlClocksThrottleReasonApplicationsClocksSetting = nvmlClocksEventReasonApplicationsClocksSetting
nvmlClocksThrottleReasonSwPowerCap = nvmlClocksEventReasonSwPowerCap
nvmlClocksThrottleReasonHwSlowdown = nvmlClocksEventReasonHwSlowdown
nvmlClocksThrottleReasonSyncBoost = nvmlClocksEventReasonSyncBoost
nvmlClocksThrottleReasonSwThermalSlowdown = nvmlClocksEventReasonSwThermalSlowdown
nvmlClocksThrottleReasonHwThermalSlowdown = nvmlClocksEventReasonHwThermalSlowdown
nvmlClocksThrottleReasonHwPowerBrakeSlowdown = nvmlClocksEventReasonHwPowerBrakeSlowdown
nvmlClocksThrottleReasonDisplayClockSetting = nvmlClocksEventReasonDisplayClockSetting
nvmlClocksThrottleReasonNone = nvmlClocksEventReasonNone

CLOCK_REASON_BITS = dict(CLOCK_REASONS)


# ----- errors, built the way pynvml builds them ----------------------------------------------
class NVMLError(Exception):
    """Same shape as pynvml.NVMLError: ``NVMLError(code)`` is an instance of the code's subclass."""

    _valClassMapping: dict[int, type] = {}
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized", NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized", NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size", NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded", NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue", NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found", NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost", NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory", NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other) -> bool:
        return self.value == getattr(other, "value", None)

    __hash__ = Exception.__hash__


def _error_classes() -> dict[str, type]:
    out = {}
    for name, val in list(globals().items()):
        if not name.startswith("NVML_ERROR_"):
            continue
        cls_name = "NVMLError_" + string.capwords(name.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def gen_new(v):
            def new(typ, *args):
                return NVMLError.__new__(typ, v)
            return new

        cls = type(cls_name, (NVMLError,), {"__new__": gen_new(val)})
        cls.__module__ = __name__
        NVMLError._valClassMapping[val] = cls
        out[cls_name] = cls
    return out


ERROR_CLASSES = _error_classes()
globals().update(ERROR_CLASSES)  # NVMLError_NotSupported, NVMLError_GpuIsLost, NVMLError_Timeout, ...


class FakeScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the key."""


# ----- scenario ----------------------------------------------------------------------------------
# GPU keys that are not a signal's: how the GPU as a whole behaves. (key, kind, default)
DEVICE_KEYS: tuple[tuple[str, str, Any], ...] = (
    ("lost", "bool", False), ("lostAfterCalls", "count", None), ("resetRequired", "bool", False),
    ("missing", "bool", False), ("notSupported", "readings", []), ("reset", "bool", False),
)
MAX_FAKE_GPUS = MAX_NODE_GPUS  # an index beyond it would only allocate
MAX_FAKE_READS = 1_000_000
TOP_KEYS = ("driverVersion", "bootId", "expectedGpus", "gpus", "steps", "reads", "nvmlInitError")
STEP_KEYS = ("driverVersion", "bootId", "expectedGpus", "gpus", "reads")
_TYPE_WORDS = {"number": "a number", "count": "a whole number from 0", "int": "a whole number",
               "bool": "true or false", "text": "a string"}
_ROW_KINDS = {"correctable": "count", "uncorrectable": "count", "pending": "bool", "failure": "bool"}


def gpu_defaults(signals: tuple[Signal, ...] = SIGNALS) -> dict[str, Any]:
    """Every GPU key of a scenario with its value when left out: the signals' keys, then the device's."""
    out = {k.key: copy.deepcopy(k.default) for s in signals for k in s.fake}
    out.update((key, copy.deepcopy(default)) for key, _, default in DEVICE_KEYS)
    return out


GPU_DEFAULTS = gpu_defaults()
NOT_SUPPORTED_NAMES = not_supported_names()  # notSupported names -> the fake's tags that then answer NOT_SUPPORTED


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "number":
        return isinstance(value, (int, float)) and value == value and abs(value) < 1e15
    if kind == "count":
        return isinstance(value, int) and 0 <= value < 2**31
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, {"bool": bool, "text": str}[kind])


def _shown(value: Any) -> str:
    return clip(repr(value), 40, "...")


def _refuse(text: str) -> PydanticCustomError:
    """A scenario error; ``text`` follows the key's path (``: ...`` or ``.subkey: ...``)."""
    return PydanticCustomError("scenario", "{text}", {"text": text})


def _names(value: Any, known: Any, what: str) -> Any:
    if value is None:
        return value
    if not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
        raise _refuse(": must be a list of names.")
    for name in value:
        if name not in known:
            raise _refuse(f": {name!r} is not a {what}; use one of {', '.join(known)}.")
    return value


def _kind_check(kind: str, not_supported: dict[str, set[str]]) -> Callable[[Any], Any]:
    """The check of one kind of GPU key: number, count, bool, text, ints, reasons, readings, rows."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        if kind in _TYPE_WORDS:
            if not _is(value, kind):
                raise _refuse(f": {_shown(value)} is not {_TYPE_WORDS[kind]}.")
        elif kind == "ints":
            if not isinstance(value, list) or not all(isinstance(x, int) for x in value):
                raise _refuse(": must be a list of integers.")
        elif kind == "reasons":
            _names(value, CLOCK_REASON_BITS, "reason")
        elif kind == "readings":
            _names(value, not_supported, "reading")
        elif kind == "rows":
            if not isinstance(value, dict):
                raise _refuse(": must be a mapping (correctable, uncorrectable, pending, failure).")
            for key, sub in value.items():
                if key not in _ROW_KINDS:
                    raise _refuse(f": unknown key {key!r}; known keys: {', '.join(_ROW_KINDS)}.")
                if not _is(sub, _ROW_KINDS[key]):
                    raise _refuse(f".{key}: {_shown(sub)} is not {_TYPE_WORDS[_ROW_KINDS[key]]}.")
        return value

    return check


def _index(value: Any) -> Any:
    if value is not None and (not _is(value, "int") or not 0 <= value < MAX_FAKE_GPUS):
        raise _refuse(f": {_shown(value)} is not a GPU index from 0 to {MAX_FAKE_GPUS - 1}.")
    return value


def _expected_gpus(value: Any) -> Any:
    if value is not None and not (_is(value, "count") and value <= MAX_FAKE_GPUS):
        raise _refuse(f": {_shown(value)} is not a GPU count from 0 to {MAX_FAKE_GPUS}.")
    return value


def _reads(value: Any) -> Any:
    if value is not None and not (_is(value, "count") and 1 <= value <= MAX_FAKE_READS):
        raise _refuse(f": {_shown(value)} is not a number of reads from 1 to {MAX_FAKE_READS}.")
    return value


def _init_error(value: Any) -> Any:
    if value is not None and f"NVMLError_{value}" not in ERROR_CLASSES:
        raise _refuse(f": {value!r} is not an NVML error name such as LibraryNotFound.")
    return value


def _distinct_indexes(gpus: list | None) -> list | None:
    """Two GPUs at one index would leave one of them out unseen: refuse the second, naming the first."""
    first: dict[int, int] = {}
    for pos, gpu in enumerate(gpus or []):
        given = getattr(gpu, "index", None)
        index = pos if given is None else given
        if index in first:
            raise _refuse(f"[{pos}].index: {index} is already used by gpus[{first[index]}]." if given is not None
                          else f"[{pos}]: its place makes it index {index}, already used by gpus[{first[index]}]; "
                               "give it an index of its own.")
        first[index] = pos
    return gpus


def _a_list(value: Any) -> Any:
    if value is not None and not isinstance(value, list):
        raise _refuse(": must be a list.")
    return value


def _mapping_of(keys: tuple[str, ...] | dict, what: str, unknown: Callable[[str], str]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _refuse(f": must be {what}.")
        bad = sorted(set(value) - set(keys))
        if bad:
            raise _refuse(unknown(bad[0]))
        return value

    return check


def _field(check: Callable[[Any], Any]) -> Any:
    return (Annotated[Any, BeforeValidator(check)], None)


_MODEL_CONFIG = ConfigDict(extra="forbid")


def scenario_model(signals: tuple[Signal, ...] = SIGNALS) -> type[BaseModel]:
    """The scenario file's schema as a pydantic model: the GPU keys come from the signals' fake keys."""
    defaults = gpu_defaults(signals)
    not_supported = not_supported_names(signals)
    kinds = {k.key: k.kind for s in signals for k in s.fake}
    kinds.update((key, kind) for key, kind, _ in DEVICE_KEYS)
    known = {**defaults, "index": None}
    gpu = create_model(
        "FakeGpu", __config__=_MODEL_CONFIG,
        __validators__={"shape": model_validator(mode="before")(lambda cls, v: _mapping_of(
            known, "a mapping of GPU readings",
            lambda key: f": unknown key {key!r}; known keys: {', '.join(defaults)}.")(v))},
        index=_field(_index), **{key: _field(_kind_check(kind, not_supported)) for key, kind in kinds.items()})
    gpus = (Annotated[Optional[list[Optional[gpu]]], BeforeValidator(_a_list), AfterValidator(_distinct_indexes)], None)
    common = dict(driverVersion=(Any, None), bootId=(Any, None), expectedGpus=_field(_expected_gpus),
                  gpus=gpus, reads=_field(_reads))
    step = create_model(
        "FakeStep", __config__=_MODEL_CONFIG,
        __validators__={"shape": model_validator(mode="before")(lambda cls, v: _mapping_of(
            STEP_KEYS, "a mapping", lambda key: f": unknown key {key!r}.")(v))}, **common)
    return create_model(
        "FakeScenario", __config__=_MODEL_CONFIG,
        __validators__={"shape": model_validator(mode="before")(lambda cls, v: _mapping_of(
            TOP_KEYS, "a mapping", lambda key: f"unknown top-level key {key!r}; known keys: "
                                               f"{', '.join(sorted(TOP_KEYS))}.")(v))},
        steps=(Annotated[Optional[list[step]], BeforeValidator(_a_list)], None),
        nvmlInitError=_field(_init_error), **common)


SCENARIO_MODEL = scenario_model()


def _where(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def check_scenario(data: Any, model: type[BaseModel] = SCENARIO_MODEL) -> dict:
    """Validate a scenario against the model; FakeScenarioError names the key."""
    if not isinstance(data, dict):
        raise FakeScenarioError("a scenario must be a mapping with at least `gpus`.")
    try:
        model.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = _where(tuple(e["loc"]))
        text = (e.get("ctx") or {}).get("text") if e["type"] == "scenario" else f": {e['msg'].rstrip('.')}."
        raise FakeScenarioError(f"{where}{text}" if where else text.lstrip(": ")) from None
    return data


def load_scenario(source: str | Path | dict, model: type[BaseModel] = SCENARIO_MODEL) -> dict:
    """Read and check a scenario (a path to YAML, YAML text, or a dict)."""
    if isinstance(source, dict):
        data = source
    else:
        text = Path(source).read_text() if isinstance(source, Path) or "\n" not in str(source) and Path(
            str(source)).exists() else str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FakeScenarioError(f"the scenario is not valid YAML: {exc}") from None
    return check_scenario(data, model)


@dataclass
class _Handle:
    """A device handle: the position of the GPU in the scenario (its index while none is missing)."""

    slot: int

    def __hash__(self) -> int:
        return hash(("fake-gpu", self.slot))


class _Struct:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


class _EventSet:
    def __init__(self) -> None:
        self.slots: set[int] = set()


class VirtualClock(Clock):
    """The fake's clock: wall time from the clock it wraps; monotonic time virtual, one minute per read."""

    def __init__(self, fake: "FakeNvml", wall: Clock):
        self.fake = fake
        self.wall = wall

    def now(self) -> datetime:
        return self.wall.now()

    def monotonic(self) -> float:
        return self.fake.tick()


class FakeNvml:
    """The fake module. Thread-safe: the agent's event thread waits while the main thread reads."""

    NVMLError = NVMLError

    def __init__(self, scenario: str | Path | dict, clock: Clock = SYSTEM, signals: tuple[Signal, ...] = SIGNALS):
        self.signals = signals
        self.scenario = load_scenario(scenario, SCENARIO_MODEL if signals is SIGNALS else scenario_model(signals))
        self._defaults = gpu_defaults(signals)
        self._not_supported = not_supported_names(signals)
        self._answers: dict[str, FakeKey] = {k.answers: k for s in signals for k in s.fake if k.answers}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._t = 0.0  # virtual seconds
        self.clock = VirtualClock(self, clock)
        self._initialised = False
        self._setup_count_pending = False
        self._first_read_done = False
        self._reads = 0  # reads counted so far (the opening count excluded)
        self._steps = [{k: v for k, v in self.scenario.items() if k in {"gpus", "reads", "driverVersion", "bootId",
                                                                        "expectedGpus"}}]
        self._steps += list(self.scenario.get("steps") or [])
        self.step = -1
        self._reads_left = 0
        self.gpus: list[dict] = []
        self.driver_version = str(self.scenario.get("driverVersion") or "550.90.07")
        self.boot_id: str | None = self.scenario.get("bootId")
        self.expected_gpus: int | None = self.scenario.get("expectedGpus")
        self._calls: list[int] = []
        self._replays: list[float] = []  # replay counters, as floats (rounded down when read)
        self._replays_t: list[float] = []
        self._events: list[tuple[int, int]] = []  # (slot, xid) queued
        self._sets: list[_EventSet] = []
        self._activate(0)

    # ----- scenario time ---------------------------------------------------------------------
    def _activate(self, step: int) -> None:
        with self._lock:
            self._fold_replays()
            spec = self._steps[step]
            for key, attr in (("driverVersion", "driver_version"), ("bootId", "boot_id"),
                              ("expectedGpus", "expected_gpus")):
                if key in spec:
                    setattr(self, attr, spec[key] if key != "driverVersion" else str(spec[key]))
            for pos, entry in enumerate(spec.get("gpus") or []):
                entry = dict(entry or {})
                slot = int(entry.pop("index", pos))
                while slot >= len(self.gpus):
                    fresh = copy.deepcopy(self._defaults)
                    fresh["uuid"] = f"GPU-fake0000-0000-0000-0000-{len(self.gpus):012d}"
                    self.gpus.append(fresh)
                    self._calls.append(0)
                    self._replays.append(0.0)
                    self._replays_t.append(self._t)
                gpu = self.gpus[slot]
                gpu["xids"], gpu["reset"] = [], False
                for key, value in entry.items():
                    if key == "remappedRows":
                        gpu["remappedRows"] = {**gpu["remappedRows"], **(value or {})}
                    else:
                        gpu[key] = copy.deepcopy(value)
                if gpu["reset"]:
                    gpu.update(eccUncorrectedVolatile=0, retiredPagesPending=False, recoveryAction=0, lost=False,
                               resetRequired=False, lostAfterCalls=None)
                    gpu["remappedRows"] = {**gpu["remappedRows"], "pending": False}
                for xid in gpu["xids"]:
                    self._events.append((slot, int(xid)))
            for slot in range(len(self.gpus)):
                self._calls[slot] = 0
                if not any(int((e or {}).get("index", p)) == slot for p, e in enumerate(spec.get("gpus") or [])):
                    self.gpus[slot]["xids"] = []
            self.step = step
            self._reads_left = int(spec.get("reads", 1) or 1)
            self._cond.notify_all()

    def advance(self) -> int:
        """Move to the next step now (tests); returns the step number."""
        with self._lock:
            if self.step + 1 < len(self._steps):
                self._activate(self.step + 1)
            return self.step

    def _on_read(self) -> None:
        with self._lock:
            if not self._first_read_done:
                self._first_read_done = True  # the reader counting GPUs as it opens
                return
            self._reads += 1
            if self._reads == 1:
                return
            self._reads_left -= 1
            if self._reads_left <= 0 and self.step + 1 < len(self._steps):
                self._activate(self.step + 1)

    def tick(self) -> float:
        """Virtual monotonic seconds: one minute passes each time they are read."""
        with self._lock:
            self._t += 60.0
            return self._t

    def _fold_replays(self) -> None:
        for slot, gpu in enumerate(self.gpus):
            self._replays[slot] += float(gpu["pcieReplaysPerMinute"] or 0) * (self._t - self._replays_t[slot]) / 60.0
            self._replays_t[slot] = self._t

    # ----- helpers -----------------------------------------------------------------------------
    def _visible(self) -> list[int]:
        return [slot for slot, g in enumerate(self.gpus) if not g["missing"]]

    def _gpu(self, handle: Any, what: str | None = None) -> dict:
        if not isinstance(handle, _Handle) or handle.slot >= len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.slot]
        if gpu["missing"] or gpu["lost"]:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        after = gpu["lostAfterCalls"]
        self._calls[handle.slot] += 1
        if after is not None and self._reads > 0 and self._calls[handle.slot] > int(after):
            gpu["lost"] = True  # lost in the middle of a read, and lost from then on
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if gpu["resetRequired"]:
            raise NVMLError(NVML_ERROR_RESET_REQUIRED)
        if what is not None and any(what in self._not_supported[n] for n in gpu["notSupported"]):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _need_init(self) -> None:
        if not self._initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    # ----- pynvml's functions ------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """A pynvml function a signal's fake key answers (``FakeKey.answers``): the scenario value, as NVML gives it."""
        key = self.__dict__.get("_answers", {}).get(name)
        if key is None:
            raise AttributeError(name)

        def answer(handle: _Handle, *args: Any) -> Any:
            with self._lock:
                return key.to_nvml(self._gpu(handle, key.tag)[key.key])

        answer.__name__ = name
        return answer

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlInitWithFlags(self, flags: int) -> None:
        err = self.scenario.get("nvmlInitError")
        if err:
            raise ERROR_CLASSES[f"NVMLError_{err}"]()
        with self._lock:
            self._initialised = True

    def nvmlShutdown(self) -> None:
        with self._lock:
            self._initialised = False

    def nvmlErrorString(self, code: int) -> str:
        return NVMLError._errcode_to_string.get(code, f"NVML Error with code {code}")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._need_init()
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._need_init()
        self._on_read()
        with self._lock:
            self._calls = [0] * len(self.gpus)  # lostAfterCalls counts calls within one read
            return len(self._visible())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._need_init()
        with self._lock:
            visible = self._visible()
            if not 0 <= int(index) < len(visible):
                raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
            handle = _Handle(visible[int(index)])
            self._gpu(handle)
            return handle

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        with self._lock:
            self._gpu(handle)
            return self._visible().index(handle.slot)

    def nvmlDeviceGetTemperatureThreshold(self, handle: _Handle, threshold: int) -> int:
        with self._lock:
            if threshold == NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
                return int(self._gpu(handle, "slowdown")["slowdownTemperature"])
            if threshold == NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
                return int(self._gpu(handle, "shutdown")["shutdownTemperature"])
            self._gpu(handle)
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, errorType: int, counterType: int) -> int:
        with self._lock:
            volatile = counterType == NVML_VOLATILE_ECC
            gpu = self._gpu(handle, "eccVolatile" if volatile else "eccAggregate")
            if errorType != NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
                return 0
            return int(gpu["eccUncorrectedVolatile" if volatile else "eccUncorrectedAggregate"])

    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:
        with self._lock:
            rows = self._gpu(handle, "remappedRows")["remappedRows"]
            return (int(rows.get("correctable", 0)), int(rows.get("uncorrectable", 0)),
                    int(bool(rows.get("pending"))), int(bool(rows.get("failure"))))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        with self._lock:
            mask = 0
            for name in self._gpu(handle, "clocks")["clocksEventReasons"]:
                mask |= CLOCK_REASON_BITS[name]
            return mask

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Struct:
        with self._lock:
            gpu = self._gpu(handle, "utilization")
            return _Struct(gpu=int(gpu["utilization"]), memory=int(gpu["memoryUtilization"]))

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> _Struct:
        with self._lock:
            gpu = self._gpu(handle, "memory")
            total, used = int(gpu["memoryTotal"]) * 2**20, int(gpu["memoryUsed"]) * 2**20
            return _Struct(total=total, used=used, free=max(total - used, 0))

    def nvmlDeviceGetNvLinkState(self, handle: _Handle, link: int) -> int:
        with self._lock:
            gpu = self._gpu(handle, "nvlink")
            if not 0 <= int(link) < int(gpu["nvlinkLinks"] or 0):
                raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
            return NVML_FEATURE_DISABLED if int(link) in gpu["nvlinkDown"] else NVML_FEATURE_ENABLED

    def nvmlDeviceGetPcieReplayCounter(self, handle: _Handle) -> int:
        with self._lock:
            self._gpu(handle, "pcie")
            self._fold_replays()
            return int(self._replays[handle.slot])

    def nvmlDeviceGetFieldValues(self, handle: _Handle, fieldIds: list) -> list[_Struct]:
        with self._lock:
            gpu = self._gpu(handle)
            out = []
            for fid in fieldIds:
                fid = fid[0] if isinstance(fid, tuple) else fid
                ret, value = NVML_ERROR_NOT_SUPPORTED, 0
                if fid == NVML_FI_DEV_GET_GPU_RECOVERY_ACTION and "recoveryAction" not in gpu["notSupported"]:
                    ret, value = NVML_SUCCESS, int(gpu["recoveryAction"])
                elif fid == NVML_FI_DEV_PCIE_REPLAY_COUNTER and not {"pcieReplays", "pcieReplaysPerMinute"} & set(
                        gpu["notSupported"]):
                    self._fold_replays()
                    ret, value = NVML_SUCCESS, int(self._replays[handle.slot])
                out.append(_Struct(fieldId=fid, scopeId=0, timestamp=0, latencyUsec=0,
                                   valueType=NVML_VALUE_TYPE_UNSIGNED_INT, nvmlReturn=ret,
                                   value=_Struct(uiVal=value, ullVal=value)))
            return out

    # ----- events ------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> _EventSet:
        self._need_init()
        with self._lock:
            es = _EventSet()
            self._sets.append(es)
            return es

    def nvmlDeviceGetSupportedEventTypes(self, handle: _Handle) -> int:
        with self._lock:
            self._gpu(handle, "events")
            return (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypePState
                    | nvmlEventTypeXidCriticalError | nvmlEventTypeClock)

    def nvmlDeviceRegisterEvents(self, handle: _Handle, eventTypes: int, eventSet: _EventSet) -> None:
        with self._lock:
            self._gpu(handle, "events")
            if eventTypes & nvmlEventTypeXidCriticalError:
                eventSet.slots.add(handle.slot)
            self._cond.notify_all()

    def nvmlEventSetWait_v2(self, eventSet: _EventSet, timeoutms: int) -> _Struct:
        with self._cond:
            def ready() -> int | None:
                for i, (slot, _) in enumerate(self._events):
                    gpu = self.gpus[slot] if slot < len(self.gpus) else None
                    # a registered GPU, or one that fell off before it could be registered
                    if slot in eventSet.slots or (eventSet.slots and gpu and (gpu["lost"] or gpu["missing"])):
                        return i
                return None

            found = ready()
            if found is None and timeoutms > 0:
                self._cond.wait_for(lambda: ready() is not None, timeout=timeoutms / 1000.0)
                found = ready()
            if found is None:
                raise NVMLError(NVML_ERROR_TIMEOUT)
            slot, xid = self._events.pop(found)
            return _Struct(device=_Handle(slot), eventType=nvmlEventTypeXidCriticalError, eventData=xid,
                           gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)

    nvmlEventSetWait = nvmlEventSetWait_v2

    def nvmlEventSetFree(self, eventSet: _EventSet) -> None:
        with self._lock:
            if eventSet in self._sets:
                self._sets.remove(eventSet)

    def inject_xid(self, index: int, xid: int) -> None:
        """Raise an XID on the GPU at scenario position ``index`` now (tests of the event thread)."""
        with self._cond:
            self._events.append((int(index), int(xid)))
            self._cond.notify_all()


for _name, _value in list(globals().items()):  # the constants, as attributes of the fake module object
    if _name.startswith(("NVML_", "nvmlEventType", "nvmlClocks")) and isinstance(_value, int):
        setattr(FakeNvml, _name, _value)
for _name, _cls in ERROR_CLASSES.items():
    setattr(FakeNvml, _name, _cls)


__all__ = ["FakeNvml", "FakeScenarioError", "NVMLError", "load_scenario", *ERROR_CLASSES]
