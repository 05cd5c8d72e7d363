"""Every NVML call guywire makes, and nothing else.

``NvmlReader(nvml)`` takes the NVML module as a parameter: the real ``pynvml`` (from
nvidia-ml-py) or ``guywire.gpu.fake.FakeNvml``. It turns one pass over the GPUs into
plain ``readings`` dataclasses, one ``gpu.signals`` descriptor at a time: the descriptor names the
functions and constants, this module calls them. Per reading:

- NVML_ERROR_NOT_SUPPORTED (consumer GPUs, MIG, old drivers) or a function the
  library lacks makes that reading unknown, never a failure;
- NVML_ERROR_GPU_IS_LOST marks the GPU lost and stops reading it;
- NVML_ERROR_RESET_REQUIRED marks it as needing a reset and stops reading it;
- any other error leaves the reading unknown and is noted in ``errors``.

XID events arrive through an NVML event set (nvmlEventSetCreate /
nvmlDeviceRegisterEvents / nvmlEventSetWait_v2 with nvmlEventTypeXidCriticalError),
waited on in a thread of its own (``XidWatcher.start``) or drained before a read.
"""
from __future__ import annotations

import ctypes
import threading
from types import ModuleType
from typing import Any, Callable

from ..clock import SYSTEM, Clock
from .readings import GpuReadings, NodeReadings, XidSeen
from .signals import SIGNALS, Call, Signal, put, text

PCIE_RATE_WINDOW_S = 10.0  # two replay-counter samples closer than this give no rate
EVENT_WAIT_MS = 1000


class NvmlUnavailable(RuntimeError):
    """There is no NVML to talk to: no library, no driver, no GPU access. The message says which."""


def load_pynvml() -> ModuleType:
    """The real NVML bindings, or NvmlUnavailable with a sentence a person can act on."""
    try:
        import pynvml  # the one import of pynvml in guywire
    except ImportError as exc:
        raise NvmlUnavailable(f"the nvidia-ml-py package (module pynvml) is not installed ({exc}).") from None
    return pynvml


def describe_init_error(nvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", -1):
        return ("the NVML library (libnvidia-ml.so.1) was not found: this is not a GPU node, or the NVIDIA "
                "driver is not installed or not mounted into the container.")
    if code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", -1):
        return "the NVIDIA kernel driver is not loaded."
    if code == getattr(nvml, "NVML_ERROR_NO_PERMISSION", -1):
        return "NVML refused access: the agent needs access to the /dev/nvidia* devices."
    if code == getattr(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", -1):
        return "the NVML library and the loaded NVIDIA kernel driver are different versions: reboot or reload the driver."
    return f"NVML could not start: {exc}."


class _Stop(Exception):
    """The GPU cannot be read any further in this pass (lost, or reset required)."""


def _handle_key(handle: Any) -> Any:
    """A hashable identity for a device handle: the pointer value of a ctypes handle, else the handle."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        try:
            hash(handle)
            return handle
        except TypeError:
            return id(handle)


def _field_value(fv: Any) -> float | int | None:
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(
        int(getattr(fv, "valueType", 1)), "uiVal")
    return getattr(fv.value, attr, None)


class XidWatcher:
    """NVML's XID event set. ``poll`` waits for events; ``take`` hands over what arrived since the last take.

    Each event is stamped with ``clock.now()`` as it arrives: the tracker that judges it reads the same clock.
    """

    def __init__(self, nvml: Any, clock: Clock = SYSTEM):
        self.nvml = nvml
        self.clock = clock
        self.set: Any = None
        self.error: str | None = None
        self.registered: dict[str, int] = {}  # uuid -> index
        self.by_handle: dict[Any, str] = {}  # handle identity -> uuid, for events from GPUs that stopped answering
        self.unsupported: set[str] = set()  # uuids whose XID events NVML cannot deliver
        self._seen: list[XidSeen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_event: Callable[[], None] | None = None
        try:
            self.set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            self.error = f"NVML cannot create an event set, so XID events are not watched: {exc}."

    def register(self, handle: Any, uuid: str, index: int) -> None:
        if self.set is None or uuid in self.registered or uuid in self.unsupported:
            return
        nvml = self.nvml
        xid_type = nvml.nvmlEventTypeXidCriticalError
        try:
            supported = nvml.nvmlDeviceGetSupportedEventTypes(handle)
            if not supported & xid_type:
                self.unsupported.add(uuid)
                return
            nvml.nvmlDeviceRegisterEvents(handle, xid_type, self.set)
            self.registered[uuid] = index
            self.by_handle[_handle_key(handle)] = uuid
        except nvml.NVMLError:
            self.unsupported.add(uuid)

    def poll(self, timeout_ms: int = 0) -> int:
        """Wait up to ``timeout_ms`` for a first event, then drain the rest. Returns how many arrived."""
        if self.set is None:
            return 0
        nvml, got, wait = self.nvml, 0, timeout_ms
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self.set, wait)
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) != nvml.NVML_ERROR_TIMEOUT:
                    self.error = f"waiting for NVML events failed: {exc}."
                return got
            wait = 0
            if not int(data.eventType) & nvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                uuid: str | None = text(nvml.nvmlDeviceGetUUID(data.device))
            except nvml.NVMLError:
                uuid = self.by_handle.get(_handle_key(data.device))
            seen = XidSeen(xid=int(data.eventData), uuid=uuid, index=self.registered.get(uuid or ""),
                           at=self.clock.now())
            with self._lock:
                self._seen.append(seen)
            got += 1

    def take(self) -> list[XidSeen]:
        with self._lock:
            seen, self._seen = self._seen, []
        return seen

    # ----- the thread ------------------------------------------------------------------------
    def start(self, on_event: Callable[[], None] | None = None) -> None:
        if self.set is None or self._thread is not None:
            return
        self.on_event = on_event
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="guywire-xid-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            before = self.error
            if self.poll(EVENT_WAIT_MS) and self.on_event:
                self.on_event()
            if self.error and self.error != before:
                self._stop.wait(1.0)  # a failing wait must not spin

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=EVENT_WAIT_MS / 1000 * 3)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self.set is not None:
            try:
                self.nvml.nvmlEventSetFree(self.set)
            except self.nvml.NVMLError:
                pass
            self.set = None


class NvmlReader:
    """Reads every GPU once per ``read()``; ``open`` first, ``close`` at the end.

    ``clock``: monotonic time spaces the PCIe replay samples; wall time stamps XID events.
    """

    def __init__(self, nvml: Any, clock: Clock = SYSTEM,
                 pcie_window_s: float = PCIE_RATE_WINDOW_S, signals: tuple[Signal, ...] = SIGNALS):
        self.nvml = nvml
        self.signals = signals
        self.clock = clock
        self.pcie_window_s = pcie_window_s
        self.driver_version: str | None = None
        self.xids: XidWatcher | None = None
        self._pcie: dict[str, tuple[int, float]] = {}  # gpu key -> (counter, when) of the rate's base sample
        self._pcie_rate: dict[str, float] = {}
        self._opened = False

    # ----- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(describe_init_error(nvml, exc)) from None
        except OSError as exc:
            raise NvmlUnavailable(f"the NVML library could not be loaded ({exc}).") from None
        self._opened = True
        try:
            self.driver_version = text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError:
            self.driver_version = None
        self.xids = XidWatcher(nvml, self.clock)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError:
            count = 0
        for i in range(count):  # register for events and take the first PCIe replay sample
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = text(nvml.nvmlDeviceGetUUID(handle))
            except nvml.NVMLError:
                continue
            self.xids.register(handle, uuid, i)
            try:
                self._pcie[uuid] = (int(nvml.nvmlDeviceGetPcieReplayCounter(handle)), self.clock.monotonic())
            except nvml.NVMLError:
                pass

    def close(self) -> None:
        if self.xids is not None:
            self.xids.close()
            self.xids = None
        if self._opened:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass
            self._opened = False

    def __enter__(self) -> "NvmlReader":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- one pass --------------------------------------------------------------------------
    def read(self, drain_events: bool = True) -> NodeReadings:
        """Read every GPU. ``drain_events``: collect pending XID events first (when no thread waits on them)."""
        nvml = self.nvml
        node = NodeReadings(gpus=[], driver_version=self.driver_version)
        try:
            node.gpu_count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            node.errors.append(f"NVML cannot count the GPUs: {exc}.")
            node.gpu_count = None
        if self.xids is not None and drain_events:
            self.xids.poll(0)
        for i in range(node.gpu_count or 0):
            node.gpus.append(self._read_gpu(i))
        if self.xids is not None:
            if self.xids.error:
                node.errors.append(self.xids.error)
                self.xids.error = None
            by_uuid = {g.uuid: g for g in node.gpus if g.uuid}
            for seen in self.xids.take():
                gpu = by_uuid.get(seen.uuid or "")
                if gpu is None and seen.index is not None and seen.index < len(node.gpus):
                    gpu = node.gpus[seen.index]
                if gpu is None:
                    # NVML cannot name a GPU that fell off the bus; when exactly one GPU is lost, it is that one
                    gone = [g for g in node.gpus if g.lost or g.inaccessible]
                    gpu = gone[0] if len(gone) == 1 else None
                if gpu is None:
                    node.unattributed_xids.append(seen)
                else:
                    seen.index = gpu.index
                    gpu.xids.append(seen)
        return node

    def _call(self, g: GpuReadings, reading: str, fn: Callable[..., Any], *args: Any) -> Any:
        nvml = self.nvml
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == nvml.NVML_ERROR_GPU_IS_LOST:
                g.lost, g.lost_during = True, reading
                raise _Stop from None
            if code == nvml.NVML_ERROR_RESET_REQUIRED:
                g.reset_required = True
                raise _Stop from None
            if code in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
                if reading not in g.unknown:
                    g.unknown.append(reading)
            else:
                g.errors.append(f"{reading}: {exc}")
            return None

    def _read_gpu(self, index: int) -> GpuReadings:
        nvml = self.nvml
        g = GpuReadings(index=index)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == nvml.NVML_ERROR_GPU_IS_LOST:
                g.lost, g.lost_during = True, "handle"
            elif code == nvml.NVML_ERROR_RESET_REQUIRED:
                g.reset_required = True
            else:
                g.inaccessible = str(exc)
            return g
        try:
            self._read_into(g, handle)
        except _Stop:
            pass
        return g

    def _read_into(self, g: GpuReadings, h: Any) -> None:
        for signal in self.signals:
            for call in signal.calls:
                self._read_call(g, h, signal, call)
            if signal.reader is not None:
                self._readers[signal.reader](self, g, h, signal)

    def _read_call(self, g: GpuReadings, h: Any, signal: Signal, call: Call) -> None:
        nvml = self.nvml
        fn = next((getattr(nvml, name) for name in call.function if hasattr(nvml, name)), None)
        if fn is None:  # the library lacks the function: unknown, as NOT_SUPPORTED
            if signal.name not in g.unknown:
                g.unknown.append(signal.name)
            return
        answer = self._call(g, signal.name, fn, h, *(getattr(nvml, a) for a in call.args))
        if answer is None:
            return
        values = call.convert(answer, nvml)
        for attr, value in zip(call.into, values if len(call.into) > 1 else (values,)):
            put(g, attr, value)

    def _read_xid_events(self, g: GpuReadings, h: Any, signal: Signal) -> None:
        if g.uuid and self.xids is not None:
            self.xids.register(h, g.uuid, g.index)
            if g.uuid in self.xids.unsupported and signal.name not in g.unknown:
                g.unknown.append(signal.name)

    def _read_nvlink(self, g: GpuReadings, h: Any, signal: Signal) -> None:
        nvml = self.nvml
        active: list[int] = []
        inactive: list[int] = []
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
            try:
                state = nvml.nvmlDeviceGetNvLinkState(h, link)
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code == nvml.NVML_ERROR_GPU_IS_LOST:
                    g.lost, g.lost_during = True, signal.name
                    raise _Stop from None
                continue  # NOT_SUPPORTED / INVALID_ARGUMENT: no such link on this GPU
            (active if state == nvml.NVML_FEATURE_ENABLED else inactive).append(link)
        if not active and not inactive:
            g.unknown.append(signal.name)
            return
        g.nvlink_active = active
        g.nvlink_down = inactive if active else []  # a GPU with no active link is not using NVLink

    def _read_pcie(self, g: GpuReadings, h: Any, signal: Signal) -> None:
        counter = self._call(g, signal.name, self.nvml.nvmlDeviceGetPcieReplayCounter, h)
        if counter is None:
            return
        g.pcie_replay_counter = int(counter)
        key, now = g.uuid or f"index-{g.index}", self.clock.monotonic()
        base = self._pcie.get(key)
        if base is None or counter < base[0]:
            self._pcie[key] = (int(counter), now)
            self._pcie_rate.pop(key, None)
        elif now - base[1] >= self.pcie_window_s:
            self._pcie_rate[key] = (counter - base[0]) / (now - base[1]) * 60.0
            self._pcie[key] = (int(counter), now)
        g.pcie_replays_per_minute = self._pcie_rate.get(key)
        if g.pcie_replays_per_minute is None and signal.name not in g.unknown:
            g.unknown.append(signal.name)  # no rate until two samples a window apart

    def _read_recovery_action(self, g: GpuReadings, h: Any, signal: Signal) -> None:
        nvml = self.nvml
        field_id = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
        if field_id is None:
            g.unknown.append(signal.name)
            return
        values = self._call(g, signal.name, nvml.nvmlDeviceGetFieldValues, h, [field_id])
        if values is None:
            return
        fv = values[0]
        ret = int(getattr(fv, "nvmlReturn", 0))
        if ret == nvml.NVML_ERROR_GPU_IS_LOST:
            g.lost, g.lost_during = True, signal.name
            raise _Stop
        if ret != nvml.NVML_SUCCESS:
            g.unknown.append(signal.name)
            return
        value = _field_value(fv)
        g.recovery_action = int(value) if value is not None else None

    # the readers a descriptor can name (``Signal.reader``): what plain calls cannot say
    _readers: dict[str, Callable[["NvmlReader", GpuReadings, Any, Signal], None]] = {
        "xid_events": _read_xid_events, "nvlink": _read_nvlink, "pcie": _read_pcie,
        "recovery_action": _read_recovery_action,
    }
