"""GPU parts that need no GPU: machine types, the device check, profiles, manifest refusals,
routing. Tests that need CUDA or TensorRT are marked gpu and skip with the reason. The FP16
graph is tests/engines/test_fp16_graph.py; the CPU accuracy reference tests/tasks/test_runners.py."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import yaml
from accelflow.core import tensor_info
from accelflow.core.errors import DeviceError, SpecError
from accelflow.core.modelio import ModelIO
from accelflow.core.runner import run_arrays
from accelflow.engines import gpu, onnxruntime_cuda_engine, profiles, tensorrt_engine
from accelflow.formats import onnx_model

from accelflow import engines
from tests import modelzoo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100 = gpu.GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 81559, "570.86", 1980, 2619, 1980)
T4 = gpu.GpuInfo("Tesla T4", "7.5")


@pytest.fixture(autouse=True)
def _no_declared_type(monkeypatch):
    monkeypatch.delenv(gpu.MACHINE_TYPE_ENV, raising=False)


# ---------------------------------------------------------------- machine types


@pytest.mark.parametrize("name,kind", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100"), ("NVIDIA H100 NVL", "h100"),
    ("Tesla T4", "t4"), ("Tesla V100-SXM2-16GB", "v100"), ("Tesla V100S-PCIE-32GB", "v100"),
    ("NVIDIA A10", "a10"), ("NVIDIA A10G", "a10g"), ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA A100 80GB PCIe", "a100"), ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200"),
    ("NVIDIA L4", "l4"), ("NVIDIA L40S", "l40s"), ("NVIDIA L40", None), ("NVIDIA GeForce RTX 4090", None),
])
def test_machine_type_from_gpu_name(name, kind):
    assert gpu.machine_type(name) == kind


def test_declared_machine_type_wins(monkeypatch):
    monkeypatch.setenv(gpu.MACHINE_TYPE_ENV, "pnv5b")
    assert gpu.machine_type("NVIDIA L20") == "pnv5b"


def test_nvidia_smi_line_is_parsed():
    info = gpu.parse_smi_line("NVIDIA H100 80GB HBM3, 9.0, 81559, 570.86.15, 1980, 2619, 1980")
    assert (info.name, info.compute_capability, info.sm_clock_mhz, info.machine_type) == (
        "NVIDIA H100 80GB HBM3", "9.0", 1980, "h100")
    assert gpu.parse_smi_line("Tesla T4, 7.5, 15360, 535.1, [N/A], [N/A], 1590").sm_clock_mhz == 0


def test_hidden_gpus_mean_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu.current() is None


def test_device_mismatch_fails_naming_both(monkeypatch):
    monkeypatch.setattr(gpu, "current", lambda: T4)
    with pytest.raises(DeviceError, match=r"--device a100 .*Tesla T4 \(machine type t4\).*--device t4"):
        engines.check_device("a100")


def test_unknown_gpu_names_the_override(monkeypatch):
    monkeypatch.setattr(gpu, "current", lambda: gpu.GpuInfo("NVIDIA L40", "8.9"))
    with pytest.raises(DeviceError, match=gpu.MACHINE_TYPE_ENV):
        engines.check_device("l40s")


def test_matching_gpu_still_needs_a_gpu_engine(monkeypatch):
    monkeypatch.setattr(gpu, "current", lambda: H100)
    monkeypatch.setattr(tensorrt_engine, "version", lambda: None)
    monkeypatch.setattr(onnxruntime_cuda_engine, "version", lambda: None)
    with pytest.raises(DeviceError, match=r"no GPU engine is available here: .*`bash scripts/install.sh gpu`"):
        engines.check_device("h100")
    monkeypatch.setattr(tensorrt_engine, "version", lambda: "10.12.0.36")
    assert engines.check_device("h100") == "h100"
    assert [(e.NAME, p) for e, p in engines.candidates("fp16", "h100")] == [("tensorrt", "fp16")]
    assert [(e.NAME, p) for e, p in engines.candidates("lossless", "h100", qat=True)] == [("tensorrt", "int8")]
    assert engines.served_devices() == ("cpu", "h100")


def test_cpu_device_never_touches_the_gpu(monkeypatch):
    def touched(*_):
        raise AssertionError("the GPU was queried for --device cpu")

    monkeypatch.setattr(gpu, "current", touched)
    for module in (tensorrt_engine, onnxruntime_cuda_engine):
        monkeypatch.setattr(module, "version", touched)
    assert engines.check_device("cpu") == "cpu"
    assert {e.NAME for e, _ in engines.candidates("fp16", "cpu")} == {"onnxruntime", "openvino"}


# ---------------------------------------------------------------- routing


def test_every_machine_type_has_its_own_work_pool():
    with open(os.path.join(ROOT, "prefect.yaml"), encoding="utf-8") as f:
        deployments = yaml.safe_load(f)["deployments"]
    pools = {d["name"]: d["work_pool"]["name"] for d in deployments}
    assert set(pools) == {"cpu", *engines.GPU_DEVICES}
    assert all(pool == f"accelflow-{name}" for name, pool in pools.items())
    assert {d["entrypoint"] for d in deployments} == {"flows/optimize.py:optimize"}


def test_a_task_is_submitted_to_its_machine_types_deployment(monkeypatch):
    import prefect.deployments
    from accelflow.flows import batch
    from accelflow.flows.request import OptimizeRequest

    calls = []

    class _Run:
        name, id, state = "bert-fp16", "0", None

    def fake_run_deployment(name, **kwargs):
        calls.append((name, kwargs.get("work_queue_name")))
        return _Run()

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    for device in ("cpu", "a10g", "h100"):
        request = OptimizeRequest(model="m.onnx", tensor_info=["x:float(1*4)"], output="/tmp/o", device=device)
        batch._submit_one(request, "g1" if device == "h100" else None)
    assert calls == [("optimize/cpu", None), ("optimize/a10g", None), ("optimize/h100", "g1")]
    assert batch.deployment_name("t4") == "optimize/t4"


# ---------------------------------------------------------------- profiles


def _io(*names):
    return ModelIO(list(names), ["y"], {})


def test_fixed_shapes_make_one_exact_profile():
    spec = tensor_info.parse(["x:float(1*3*224*224)"])
    assert profiles.for_spec(spec, _io("x"), {}) == [{"x": ((1, 3, 224, 224),) * 3}]


def test_a_range_gives_min_mid_max_and_opt_can_be_overridden():
    spec = tensor_info.parse(["input_ids:int32(1*16,8*128)", "mask:int32(1*16,8*128)"])
    (profile,) = profiles.for_spec(spec, _io("input_ids", "mask"), {})
    assert profile["input_ids"] == ((1, 16), (4, 72), (8, 128))
    overrides = profiles.opt_overrides(spec, "input_ids=8*128; mask=2*64")
    (profile,) = profiles.for_spec(spec, _io("input_ids", "mask"), overrides)
    assert profile["input_ids"][1] == (8, 128) and profile["mask"][1] == (2, 64)


def test_opt_override_from_the_environment_is_checked(monkeypatch):
    spec = tensor_info.parse(["x:float(1*16,8*16)", "y:float(1*4)"])
    monkeypatch.setenv(profiles.OPT_ENV, "x=4*16")
    assert profiles.for_spec(spec, _io("x", "y"))[0]["x"][1] == (4, 16)
    for bad, match in (("x=9*16", "outside"), ("y=1*4", "not an element with a size range"), ("x=4x16", "NAME=")):
        with pytest.raises(SpecError, match=match):
            profiles.opt_overrides(spec, bad)


def test_a_discrete_list_gives_one_profile_per_size():
    spec = tensor_info.parse(["image:float([1*3*224*224,8*3*224*224,16*3*224*224])", "scale:float(1*1,4*1)"])
    found = profiles.for_spec(spec, _io("image", "scale"), {})
    assert [p["image"] for p in found] == [((b, 3, 224, 224),) * 3 for b in (1, 8, 16)]
    assert all(p["scale"] == ((1, 1), (2, 1), (4, 1)) for p in found)
    assert profiles.profile_index(found, {"image": (8, 3, 224, 224), "scale": (3, 1)}) == 1
    with pytest.raises(SpecError, match="fit none"):
        profiles.profile_index(found, {"image": (2, 3, 224, 224), "scale": (1, 1)})
    # every shape point the accuracy check and the benchmark use fits a profile
    for point in spec.shape_points():
        profiles.profile_index(found, point.shapes)
    assert profiles.from_json(profiles.to_json(found)) == found


# ---------------------------------------------------------------- manifests built elsewhere


def _config(**built_for):
    base = {"name": H100.name, "compute_capability": "9.0", "machine_type": "h100"}
    return {"file": "model.engine", "engine_version": "10.12.0.36", "built_for": dict(base, **built_for)}


@pytest.mark.parametrize("here,installed,match", [
    (gpu.GpuInfo("NVIDIA H100 PCIe", "9.0"), "10.12.0.36", "this machine's GPU is a NVIDIA H100 PCIe"),
    (gpu.GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"), "10.12.0.36", "compute capability 8.0"),
    (H100, "11.0.0", "built with tensorrt 10.12.0.36, and tensorrt 11.0.0 is installed"),
    (None, "10.12.0.36", "no NVIDIA GPU"),
])
def test_loading_on_another_gpu_or_version_is_refused(monkeypatch, here, installed, match):
    monkeypatch.setattr(gpu, "current", lambda: here)
    monkeypatch.setattr(tensorrt_engine, "version", lambda: installed)
    with pytest.raises(DeviceError, match=match) as err:
        tensorrt_engine.load("/nowhere", {"engine_config": _config(), "io": {}}, 1)
    assert "NVIDIA H100 80GB HBM3, compute capability 9.0, tensorrt 10.12.0.36" in str(err.value)
    assert "h100 machine" in str(err.value)


def test_same_gpu_and_version_pass_the_check(monkeypatch):
    monkeypatch.setattr(gpu, "current", lambda: H100)
    assert gpu.refuse_elsewhere(_config(), "tensorrt", "10.12.0.36") is H100


def test_result_manifest_written_by_the_flow_carries_the_gpu(tmp_path, monkeypatch):
    from accelflow.engines.loading import load
    from accelflow.engines.result import write_manifest
    from accelflow.tasks.manifest import gpu_fields

    cnn = modelzoo.tiny_cnn_onnx(str(tmp_path))
    spec = tensor_info.parse(["image:float(1*3*16*16)"])
    io = onnx_model.check_inputs(cnn, spec)
    config = dict(_config(compute_capability="7.5", name="Tesla T4", machine_type="t4"),
                  gpu=T4.to_dict(), file="model.onnx", tf32=False)
    onnx.save(onnx.load(cnn), str(tmp_path / "model.onnx"))
    fields = gpu_fields(config)
    assert fields["built_for"]["compute_capability"] == "7.5" and fields["gpu"]["machine_type"] == "t4"
    assert gpu_fields({"file": "model.onnx"}) == {}
    monkeypatch.setattr(gpu, "current", lambda: H100)
    monkeypatch.setattr(onnxruntime_cuda_engine, "version", lambda: "1.32.0")
    write_manifest(str(tmp_path), {"engine": "onnxruntime-cuda", "engine_version": "1.32.0", "precision": "f32",
                                   "engine_config": dict(config, engine_version="1.32.0"), "io": io.to_dict(),
                                   "tensor_info": spec.lines(), **fields})
    with pytest.raises(DeviceError, match="built for an NVIDIA Tesla T4 .* this machine's GPU is a NVIDIA H100"):
        load(str(tmp_path))


# ---------------------------------------------------------------- on a GPU


def _has_cuda() -> bool:
    return gpu.current() is not None


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs an NVIDIA GPU (nvidia-smi or torch.cuda found none)")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(tensorrt_engine.version() is None, reason="needs TensorRT: pip install -e '.[tensorrt]'")
@pytest.mark.parametrize("precision", ["f32", "fp16"])
def test_tensorrt_engine_matches_the_reference(tmp_path, precision):
    _engine_matches(tensorrt_engine, tmp_path, precision)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(onnxruntime_cuda_engine.version() is None,
                    reason="needs ONNX Runtime with the CUDA provider: pip install -e '.[gpu]'")
@pytest.mark.parametrize("precision", ["f32", "fp16"])
def test_onnxruntime_cuda_engine_matches_the_reference(tmp_path, precision):
    _engine_matches(onnxruntime_cuda_engine, tmp_path, precision)


def _engine_matches(engine, tmp_path, precision):
    cnn = modelzoo.tiny_cnn_onnx(str(tmp_path))
    spec = tensor_info.parse(["image:float([1*3*16*16,4*3*16*16])"])
    io = onnx_model.check_inputs(cnn, spec)
    out = tmp_path / "built"
    out.mkdir()
    config = engine.build(cnn, io, spec, precision, str(out), threads=1)
    assert config["built_for"]["compute_capability"] == gpu.current().compute_capability
    runner = engine.load(str(out), {"engine_config": config, "io": io.to_dict()}, threads=1)
    reference = onnx_model.baseline_runner(cnn, spec, io, threads=1)
    for batch in (1, 4, 1):  # switching optimization profiles both ways
        x = [np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)]
        got, = run_arrays(runner, x)
        want, = run_arrays(reference, x)
        tol = 1e-4 if precision == "f32" else 2e-2
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.gpu
@needs_cuda
def test_torchscript_baseline_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch")
    from accelflow.formats import torchscript

    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    spec = tensor_info.parse(["input_0:float(2*3*16*16)"])
    io = ModelIO(["input_0"], ["output_0"], {"kind": "tensor"})
    cpu = torchscript.baseline_runner(path, spec, io, 1)
    cuda = torchscript.baseline_runner(path, spec, io, 1, device="cuda")
    x = [np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)]
    np.testing.assert_allclose(run_arrays(cuda, x)[0], run_arrays(cpu, x)[0], rtol=1e-3, atol=1e-4)
