"""Loaded runners, kept for the length of one task so each model is loaded once.

The accuracy and benchmark steps run in the same process and use the same baseline and
candidate runners; loading BERT-sized models costs seconds each time.

The baseline runs where the candidates run: once a GPU engine's candidate is loaded (the
build step loads every candidate), the original model is loaded on the same GPU, in its
own framework (TorchScript on CUDA; an ONNX model in ONNX Runtime's CUDA provider). A
format without a GPU baseline of its own is timed as its ONNX conversion in ONNX Runtime
CUDA, and its label says so. `use_device` sets the device explicitly.
"""

from __future__ import annotations

import inspect

from accelflow import formats
from accelflow.engines import engine_named, is_gpu_engine
from accelflow.formats import detections
from accelflow.core import tensor_info
from accelflow.core.modelio import ModelIO
from accelflow.core.runner import Runner

_LOADED: dict[str, Runner] = {}
_STATE = {"device": "cpu"}


def use_device(device: str) -> None:
    """"cpu" or "cuda": where the baseline runs (a GPU machine type means "cuda")."""
    _STATE["device"] = "cpu" if device == "cpu" else "cuda"


def baseline_device() -> str:
    return _STATE["device"]


def baseline(model_file: str, format_name: str, onnx_path: str, io: dict, spec_lines: list[str], threads: int,
             device: str | None = None) -> Runner:
    """The original model in its own framework (TorchScript in torch, ONNX in ONNX Runtime),
    where the candidates run unless `device` says otherwise."""
    device = device or baseline_device()
    key = f"baseline:{device}:{model_file}"
    if key not in _LOADED:
        fmt = next(f for f in formats.FORMATS if f.NAME == format_name)
        spec = tensor_info.parse(spec_lines)
        path = onnx_path if fmt.NAME == "onnx" else model_file
        _LOADED[key] = _baseline_runner(fmt, path, onnx_path, spec, ModelIO.from_dict(io), threads, device)
    return _LOADED[key]


def reference(model_file: str, format_name: str, onnx_path: str, io: dict, spec_lines: list[str], threads: int) -> Runner:
    """What accuracy is judged against: the original model in IEEE float32, i.e. on the CPU.

    On a GPU the timed baseline keeps the defaults users serve with, and those compute float32
    in TF32 (PyTorch's cuDNN convolutions, ONNX Runtime's CUDA provider): on an H200 its
    reference was 2.6e-4 off (relative) on a ResNet, more than the lossless gate allows, and a
    float32 engine (2.4e-7 off) failed against it. torch 2.11's TorchScript kept that error
    with TF32 switched off, so the reference is the CPU run of the same original model.
    """
    return baseline(model_file, format_name, onnx_path, io, spec_lines, threads, device="cpu")


def _baseline_runner(fmt, path: str, onnx_path: str, spec, io: ModelIO, threads: int, device: str) -> Runner:
    if device == "cpu":
        return fmt.baseline_runner(path, spec, io, threads)
    if fmt.NAME == "onnx" or "device" not in inspect.signature(fmt.baseline_runner).parameters:
        from accelflow.engines.onnxruntime_cuda_engine import OrtCudaRunner

        runner = OrtCudaRunner(onnx_path, io, threads, tf32=None)  # ONNX Runtime's defaults
        if fmt.NAME != "onnx":
            runner.label += f" (the {fmt.NAME} model's ONNX conversion: no {fmt.NAME} GPU baseline here)"
        return runner
    return fmt.baseline_runner(path, spec, io, threads, device=device)


def candidate(built, io: dict, threads: int) -> Runner:
    """A built engine, loaded; a detector's engine (its backbone) is followed by the
    framework's heads and NMS, so accuracy and timing see the whole detector."""
    key = f"candidate:{built.folder}"
    if key not in _LOADED:
        engine = engine_named(built.engine)
        if is_gpu_engine(engine):
            use_device("cuda")
        runner = engine.load(built.folder, {"engine_config": built.engine_config, "io": io}, threads)
        _LOADED[key] = detections.candidate(runner, io, threads) if detections.is_detector(io) else runner
    return _LOADED[key]


def release() -> None:
    """Free every loaded model (end of a task)."""
    _LOADED.clear()
    _STATE["device"] = "cpu"
