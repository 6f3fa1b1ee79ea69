"""Inference engines that build an optimized model from ONNX and run it.

Each engine is one flat module: NAME, DEVICES, `version()`, `precisions(level, device)`,
`build(onnx_path, io, spec, precision, out_dir, threads)` and `load(folder, manifest, threads)`.
ENGINES lists them; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import re
from types import ModuleType

from accelflow.core.errors import DeviceError, EngineError
from accelflow.core.levels import level_named
from accelflow.engines import gpu, onnxruntime_cuda_engine, onnxruntime_engine, openvino_engine, tensorrt_engine

# The order is the build order; each engine names the devices it builds for.
ENGINES: tuple[ModuleType, ...] = (
    onnxruntime_engine, openvino_engine, tensorrt_engine, onnxruntime_cuda_engine,
)

CPU_DEVICES = ("cpu",)
# Deployment machine types (the product's GPU types) and common NVIDIA serving GPUs;
# engines/gpu.py maps GPU names to them.
GPU_DEVICES = gpu.GPU_DEVICES


def engine_named(name: str) -> ModuleType:
    for engine in ENGINES:
        if engine.NAME == name:
            return engine
    raise EngineError(
        f"unknown engine {name!r}; choose one of: auto, {', '.join(e.NAME for e in ENGINES)}."
    )


# A CPU class names a pool of like CPUs (bf16, VNNI and AMX change which engine wins):
# `cpu-zen4`, `cpu-spr`, ... build like `cpu` and route to their own work pool.
_CPU_CLASS = re.compile(r"cpu-[a-z0-9][a-z0-9_.]{0,31}")


def known_device(device: str) -> str:
    """A deployment machine type accelflow knows (whether or not this machine has it)."""
    normal = device.lower()
    if normal not in CPU_DEVICES + GPU_DEVICES and not _CPU_CLASS.fullmatch(normal):
        raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(CPU_DEVICES + GPU_DEVICES)}, "
                          "or a CPU class cpu-<class> (for example cpu-zen4).")
    return normal


def engine_device(device: str) -> str:
    """The device engines build for: a CPU class builds for `cpu`."""
    return "cpu" if _CPU_CLASS.fullmatch(device) else device


def compute_device(device: str) -> str:
    """Where a task for this machine type runs its models: "cpu", or "cuda" on a GPU type."""
    return "cpu" if engine_device(device) in CPU_DEVICES else "cuda"


def check_device(device: str) -> str:
    """A deployment machine type this machine can build for; refused before any work otherwise.

    A GPU machine type must be the GPU this process runs on (engines are built for one GPU
    model): a mismatch names both. `cpu` never touches the GPU.
    """
    normal = known_device(device)
    if normal in GPU_DEVICES:
        check_gpu(normal)
        if not any(_builds_for(e, normal) for e in ENGINES):
            raise DeviceError(
                f"device {device!r} is a GPU machine type, but no GPU engine is available here: "
                "install TensorRT and ONNX Runtime with CUDA (`bash scripts/install.sh gpu`), or use --device cpu."
            )
    return normal


def check_gpu(device: str) -> gpu.GpuInfo:
    """The GPU here, when it is of machine type `device`."""
    here = gpu.current()
    if here is None:
        raise DeviceError(
            f"device {device!r} is a GPU machine type, but this machine has no NVIDIA GPU, so no GPU "
            f"engine can build here. Run the task on a {device} machine (--submit sends it to the "
            f"{device} work pool), or use --device cpu."
        )
    found = here.machine_type
    if found != device:
        named = f"machine type {found}" if found else "a GPU accelflow has no machine type for"
        raise DeviceError(
            f"--device {device} asks for a {device} machine, but this task runs on an {here.name} "
            f"({named}). Engines are built for the GPU they run on: run the task on a {device} "
            f"machine (--submit sends it to the {device} work pool)"
            + (f", or use --device {found}." if found else
               f", or declare this machine's type with {gpu.MACHINE_TYPE_ENV}=<type>.")
        )
    return here


def served_devices() -> tuple[str, ...]:
    """The machine types `accelflow server` serves here: cpu, and this machine's GPU type
    when a GPU engine can build for it."""
    here = gpu.current()
    kind = here.machine_type if here else None
    if kind in GPU_DEVICES and any(_builds_for(e, kind) for e in ENGINES):
        return ("cpu", kind)
    return ("cpu",)


def is_gpu_engine(engine: ModuleType) -> bool:
    return not set(engine.DEVICES) & set(CPU_DEVICES)


def _builds_for(engine: ModuleType, device: str) -> bool:
    return device in engine.DEVICES and engine.version() is not None


def candidates(level: str, device: str, choice: str = "auto", version: str | None = None,
               qat: bool = False) -> list[tuple[ModuleType, str]]:
    """(engine, precision) pairs to build for this level and device, in build order.

    A QAT model (quantize/dequantize operations in its graph) is built as INT8 by every engine.
    """
    engines = ENGINES if choice == "auto" else (engine_named(choice),)
    device = engine_device(device)
    if version and choice == "auto":
        raise EngineError("--engine-version needs --engine NAME: a version belongs to one engine.")
    level_name, level = level, level_named(level)
    pairs = []
    for engine in engines:
        # The device first: a CPU task never asks a GPU engine anything (not even its version).
        installed = engine.version() if device in engine.DEVICES else None
        if installed is None:
            if choice != "auto":
                raise EngineError(_unavailable(engine, device))
            continue
        if version and not _version_matches(installed, version):
            raise EngineError(
                f"--engine-version {version} asked for {engine.NAME}, but {installed} is "
                f"installed. Install it with: pip install {engine.PACKAGE}=={version}, or drop "
                "--engine-version to use the installed one."
            )
        pairs.extend((engine, p) for p in (["int8"] if qat else engine.precisions(level, device)))
    if not pairs:
        raise EngineError(f"no engine can build for device {device!r} at level {level_name} here.")
    return pairs


def _version_matches(installed: str, wanted: str) -> bool:
    """'2026.4' pins 2026.4.x; a full version must match exactly."""
    return installed == wanted or installed.startswith(wanted.rstrip(".") + ".")


def _unavailable(engine: ModuleType, device: str) -> str:
    if device not in engine.DEVICES:
        return f"engine {engine.NAME} cannot build for device {device!r} (it supports {', '.join(engine.DEVICES)})."
    return f"engine {engine.NAME} is not installed: pip install {engine.PACKAGE}"
