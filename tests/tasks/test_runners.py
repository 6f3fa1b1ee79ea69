"""tasks/runners.py: the RunnerPool a task loads its models through, each once, freed at the end."""

from __future__ import annotations

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.modelio import ModelIO
from accelflow.core.runner import run_arrays
from accelflow.engines import onnxruntime_engine
from accelflow.tasks.build import BuiltCandidate
from accelflow.tasks.context import ModelContext
from accelflow.tasks.runners import RunnerPool

from tests import modelzoo
from tests.tasks.conftest import images


def test_a_key_is_loaded_once():
    calls = []

    def loader():
        calls.append(1)
        return object()

    pool = RunnerPool()
    first = pool.load(("k", 1), loader)
    assert pool.load(("k", 1), loader) is first and len(calls) == 1
    assert pool.load(("k", 2), loader) is not first and len(calls) == 2


def test_the_baseline_is_loaded_once_and_runs_the_original(onnx_ctx):
    import onnxruntime as ort

    pool = RunnerPool()
    baseline = pool.baseline(onnx_ctx)
    assert pool.baseline(onnx_ctx) is baseline
    assert baseline.label.startswith("onnxruntime")
    x = images(2)
    session = ort.InferenceSession(onnx_ctx.model_file, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run_arrays(baseline, x)[0], session.run(None, {"image": x[0]})[0], rtol=1e-6)


def test_the_reference_is_the_cpu_baseline(onnx_ctx):
    with RunnerPool("cpu") as pool:
        assert pool.reference(onnx_ctx) is pool.baseline(onnx_ctx)
        assert pool.reference(onnx_ctx) is pool.baseline(onnx_ctx, device="cpu")


def test_accuracy_reference_is_float32_on_the_cpu_when_candidates_run_on_a_gpu(tmp_path):
    """A GPU baseline computes float32 in TF32 by default: on an H200 that alone failed a
    float32 engine at the lossless gate. The reference is the original on the CPU, whatever
    device the pool times on; nothing is loaded on the GPU for it."""
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    io = ModelIO(["input_0"], ["output_0"], {"kind": "tensor"}).to_dict()
    ctx = ModelContext(path, "torchscript", tensor_info.parse(["input_0:float(2*3*16*16)"]), str(tmp_path), 1, io=io)
    with RunnerPool("cuda") as pool:  # a GPU machine type: the baseline is timed on the GPU
        reference = pool.reference(ctx)
        assert reference.device == "cpu" and " on " not in reference.label
        assert reference is pool.baseline(ctx, device="cpu") and pool.reference(ctx) is reference


def _cuda_torch() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_torch(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_on_a_gpu_the_timed_baseline_is_not_the_reference(tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    io = ModelIO(["input_0"], ["output_0"], {"kind": "tensor"}).to_dict()
    ctx = ModelContext(path, "torchscript", tensor_info.parse(["input_0:float(2*3*16*16)"]), str(tmp_path), 1, io=io)
    with RunnerPool("cuda") as pool:
        timed, reference = pool.baseline(ctx), pool.reference(ctx)
        assert timed is not reference and timed.device == "cuda" and reference.device == "cpu"
        x = images(2)
        np.testing.assert_allclose(run_arrays(timed, x)[0], run_arrays(reference, x)[0], rtol=1e-2, atol=1e-3)


@pytest.fixture
def built(onnx_ctx, tmp_path) -> BuiltCandidate:
    """onnx_ctx's model built by ONNX Runtime at f32."""
    folder = tmp_path / "ort"
    folder.mkdir()
    config = onnxruntime_engine.build(onnx_ctx.onnx_path, ModelIO.from_dict(onnx_ctx.io), onnx_ctx.spec, "f32",
                                      str(folder), threads=1)
    return BuiltCandidate("onnxruntime", onnxruntime_engine.version(), "f32", str(folder), 0.0, config)


def test_a_candidate_is_loaded_once_per_build_folder(onnx_ctx, built):
    with RunnerPool() as pool:
        runner = pool.candidate(built, onnx_ctx.io, onnx_ctx.threads)
        assert pool.candidate(built, onnx_ctx.io, onnx_ctx.threads) is runner
        x = images(1)
        np.testing.assert_allclose(run_arrays(runner, x)[0], run_arrays(pool.reference(onnx_ctx), x)[0],
                                   rtol=1e-4, atol=1e-5)


def test_a_candidate_that_failed_the_gate_is_released(onnx_ctx, built):
    """tasks/verify.py releases a failing candidate: the int8 fallback builds several per attempt."""
    from accelflow.tasks.context import AccuracyCheck
    from accelflow.tasks.verify import verify_candidates

    with RunnerPool() as pool:
        loaded = pool.candidate(built, onnx_ctx.io, onnx_ctx.threads)
        passing = verify_candidates(onnx_ctx, [built], AccuracyCheck("lossless", draws=1), pool)
        assert passing[built.key].passed and pool.candidate(built, onnx_ctx.io, onnx_ctx.threads) is loaded
        strict = AccuracyCheck("lossless", overrides={"atol": 0.0, "rtol": 0.0, "min_cosine": 1.1}, draws=1)
        assert not verify_candidates(onnx_ctx, [built], strict, pool)[built.key].passed
        assert pool.candidate(built, onnx_ctx.io, onnx_ctx.threads) is not loaded


def test_close_frees_every_model(onnx_ctx):
    with RunnerPool() as pool:
        baseline = pool.baseline(onnx_ctx)
        token = pool.load(("anything",), object)
    # leaving the with-block closed the pool: everything loads afresh
    assert pool.baseline(onnx_ctx) is not baseline
    assert pool.load(("anything",), object) is not token
    pool.close()
    assert pool.load(("anything",), object) is not token
