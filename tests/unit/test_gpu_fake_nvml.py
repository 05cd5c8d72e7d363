"""The fake NVML looks like pynvml where guywire touches it, and refuses scenarios it cannot honour."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pynvml
import pytest

from guywire.gpu import fake as fake_module
from guywire.gpu import nvml as nvml_module
from guywire.gpu.fake import FakeNvml, FakeScenarioError, load_scenario
from guywire.gpu.nvml import NvmlReader, NvmlUnavailable
from guywire.gpu.signals import SIGNALS


def _nvml_names_used() -> set[str]:
    """Every ``nvml.<name>`` that gpu/nvml.py touches, including getattr(nvml, "<name>", ...), and every function
    and constant the signal descriptors have it call."""
    tree = ast.parse(inspect.getsource(nvml_module))
    names = {n for s in SIGNALS for c in s.calls for n in (*c.function, *c.args)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nvml":
            names.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "nvml"
                and isinstance(node.args[1], ast.Constant)):
            names.add(node.args[1].value)
    return names


def test_nvml_module_is_the_only_importer_of_pynvml():
    root = Path(nvml_module.__file__).resolve().parents[1]
    importers = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "pynvml" or m.startswith("pynvml.") for m in mods):
                importers.append(path.relative_to(root).as_posix())
    assert importers == ["gpu/nvml.py"]


def test_every_name_the_reader_uses_exists_in_pynvml_and_in_the_fake():
    used = _nvml_names_used()
    assert {"nvmlInit", "nvmlEventSetWait_v2", "nvmlDeviceGetRemappedRows", "NVML_ERROR_GPU_IS_LOST"} <= used
    fake = FakeNvml({"gpus": [{}]})
    missing_real = sorted(n for n in used if not hasattr(pynvml, n))
    missing_fake = sorted(n for n in used if not hasattr(fake, n))
    assert missing_real == [] and missing_fake == []


def test_constants_have_pynvml_values():
    fake = FakeNvml({"gpus": []})
    for name in dir(fake_module):
        if name.startswith(("NVML_", "nvmlEventType", "nvmlClocks")) and hasattr(pynvml, name):
            assert getattr(fake, name) == getattr(pynvml, name), name


@pytest.mark.parametrize("name", ["NVMLError_NotSupported", "NVMLError_GpuIsLost", "NVMLError_Timeout",
                                  "NVMLError_ResetRequired", "NVMLError_LibraryNotFound",
                                  "NVMLError_FunctionNotFound", "NVMLError_InvalidArgument", "NVMLError_Unknown",
                                  "NVMLError_Uninitialized", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission"])
def test_error_classes_match_pynvml(name):
    real, ours = getattr(pynvml, name)(), getattr(fake_module, name)()
    assert real.value == ours.value
    assert isinstance(ours, fake_module.NVMLError) and str(ours) == str(real)
    assert type(fake_module.NVMLError(ours.value)) is type(ours), "NVMLError(code) picks the subclass"
    assert getattr(FakeNvml({"gpus": []}), name) is type(ours)


def test_calls_before_init_are_refused_like_pynvml():
    fake = FakeNvml({"gpus": [{}]})
    with pytest.raises(fake_module.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


def test_units_are_pynvml_units():
    fake = FakeNvml({"gpus": [{"powerUsage": 310.5, "powerLimit": 700, "memoryUsed": 1024, "memoryTotal": 81559}]})
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetPowerUsage(h) == 310500  # milliwatts
    assert fake.nvmlDeviceGetEnforcedPowerLimit(h) == 700000
    mem = fake.nvmlDeviceGetMemoryInfo(h)
    assert (mem.used, mem.total) == (1024 * 2**20, 81559 * 2**20)  # bytes
    assert fake.nvmlDeviceGetRemappedRows(h) == (0, 0, 0, 0)
    (fv,) = fake.nvmlDeviceGetFieldValues(h, [fake.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION])
    assert fv.nvmlReturn == 0 and fv.value.uiVal == 0


@pytest.mark.parametrize("scenario, fragment", [
    ({"gpus": [{"temprature": 60}]}, "gpus[0]: unknown key 'temprature'"),
    ({"gpus": [{"notSupported": ["fan"]}]}, "gpus[0].notSupported: 'fan' is not a reading"),
    ({"gpus": [{"clocksEventReasons": ["Hot"]}]}, "'Hot' is not a reason"),
    ({"gpus": [{"xids": "79"}]}, "gpus[0].xids: must be a list of integers"),
    ({"gpus": {}}, "gpus: must be a list"),
    ({"gpus": [], "nodes": []}, "unknown top-level key 'nodes'"),
    ({"gpus": [], "steps": [{"gpu": []}]}, "steps[0]: unknown key 'gpu'"),
    ({"gpus": [], "nvmlInitError": "Oops"}, "nvmlInitError"),
    ([1, 2], "a scenario must be a mapping"),
    ({"gpus": [{"temperature": "hot"}]}, "gpus[0].temperature: 'hot' is not a number"),
    ({"gpus": [{"powerUsage": [1, 2]}]}, "gpus[0].powerUsage: [1, 2] is not a number"),
    ({"gpus": [{"powerLimit": True}]}, "gpus[0].powerLimit: True is not a number"),
    ({"gpus": [{"index": -1}]}, "gpus[0].index: -1 is not a GPU index"),
    ({"gpus": [{"index": 10**12}]}, "gpus[0].index: 1000000000000 is not a GPU index"),
    ({"gpus": [{"index": "0"}]}, "gpus[0].index: '0' is not a GPU index"),
    ({"gpus": [{"lost": "yes"}]}, "gpus[0].lost: 'yes' is not true or false"),
    ({"gpus": [{"notSupported": [["ecc"]]}]}, "gpus[0].notSupported: must be a list of names"),
    ({"gpus": [{"remappedRows": {"pending": 3}}]}, "gpus[0].remappedRows.pending: 3 is not true or false"),
    ({"gpus": [{"lostAfterCalls": -4}]}, "gpus[0].lostAfterCalls: -4 is not a whole number from 0"),
    ({"gpus": [], "steps": [{"gpus": [{"index": 99999999}]}]}, "steps[0].gpus[0].index"),
    ({"gpus": [], "expectedGpus": 10**9}, "expectedGpus: 1000000000 is not a GPU count"),
    ({"gpus": [], "steps": [{"reads": "many"}]}, "steps[0].reads: 'many' is not a number of reads"),
    ({"gpus": [{"index": 0}, {"index": 0}]}, "gpus[1].index: 0 is already used by gpus[0]."),
    ({"gpus": [{"index": 1}, {}]}, "gpus[1]: its place makes it index 1, already used by gpus[0]"),
    ({"gpus": [], "steps": [{"gpus": [None, {"index": 0}]}]}, "steps[0].gpus[1].index: 0 is already used by gpus[0]."),
])
def test_a_bad_scenario_is_refused_with_the_key_named(scenario, fragment):
    with pytest.raises(FakeScenarioError) as err:
        load_scenario(scenario)
    assert fragment in str(err.value)


def test_a_scenario_is_read_from_a_file(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("driverVersion: '535.129.03'\ngpus:\n- {uuid: GPU-x}\n")
    fake = FakeNvml(path)
    with NvmlReader(fake, clock=fake.clock) as reader:
        readings = reader.read()
    assert readings.driver_version == "535.129.03" and readings.gpus[0].uuid == "GPU-x"


def test_nvml_init_errors_become_plain_sentences():
    fake = FakeNvml({"gpus": [], "nvmlInitError": "LibraryNotFound"})
    with pytest.raises(NvmlUnavailable, match="libnvidia-ml.so.1"):
        NvmlReader(fake).open()
    fake = FakeNvml({"gpus": [], "nvmlInitError": "DriverNotLoaded"})
    with pytest.raises(NvmlUnavailable, match="driver is not loaded"):
        NvmlReader(fake).open()


def test_real_pynvml_without_a_driver_says_so():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a GPU machine
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVML library")
    with pytest.raises(NvmlUnavailable, match="NVML library"):
        NvmlReader(pynvml).open()


def test_steps_change_the_state_read_by_read_and_the_last_one_holds():
    fake = FakeNvml({"gpus": [{"temperature": 50}], "steps": [
        {"reads": 2, "gpus": [{"temperature": 60}]},
        {"gpus": [{"temperature": 70}]},
    ]})
    with NvmlReader(fake, clock=fake.clock) as reader:
        temps = [reader.read().gpus[0].temperature_c for _ in range(5)]
    assert temps == [50, 60, 60, 70, 70]


def test_a_missing_gpu_disappears_from_the_count():
    fake = FakeNvml({"gpus": [{"uuid": "GPU-a"}, {"uuid": "GPU-b"}], "steps": [{"gpus": [{}, {"missing": True}]}]})
    with NvmlReader(fake, clock=fake.clock) as reader:
        assert reader.read().gpu_count == 2
        second = reader.read()
    assert second.gpu_count == 1 and [g.uuid for g in second.gpus] == ["GPU-a"]
