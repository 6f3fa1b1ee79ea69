"""Inference engines that build an optimized model from ONNX and run it.

Each engine is one flat module: NAME, DEVICES, `version()`, `precisions(level, device)`,
`build(onnx_path, io, spec, precision, out_dir, threads)` and `load(folder, manifest, threads)`.
ENGINES lists them; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from types import ModuleType

from engines import onnxruntime_engine, openvino_engine
from formats.errors import DeviceError, EngineError

ENGINES: tuple[ModuleType, ...] = (onnxruntime_engine, openvino_engine)

LEVELS = ("fp16", "lossless")
CPU_DEVICES = ("cpu",)
# Deployment machine types of the product (SPEC 2.10) and common NVIDIA serving GPUs.
GPU_DEVICES = ("t4", "v100", "a10", "a100", "h100", "h200", "l4", "l40s", "pnv5b")


def engine_named(name: str) -> ModuleType:
    for engine in ENGINES:
        if engine.NAME == name:
            return engine
    raise EngineError(
        f"unknown engine {name!r}; choose one of: auto, {', '.join(e.NAME for e in ENGINES)}."
    )


def check_level(level: str) -> str:
    normal = level.lower()
    if normal not in LEVELS:
        raise EngineError(f"unknown optimization level {level!r}; choose fp16 or lossless.")
    return normal


def known_device(device: str) -> str:
    """A deployment machine type accelflow knows (whether or not this machine has it)."""
    normal = device.lower()
    if normal not in CPU_DEVICES + GPU_DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(CPU_DEVICES + GPU_DEVICES)}.")
    return normal


def check_device(device: str) -> str:
    """A deployment machine type this machine can build for; refused before any work otherwise."""
    normal = known_device(device)
    if normal in GPU_DEVICES and not any(_builds_for(e, normal) for e in ENGINES):
        raise DeviceError(
            f"device {device!r} is a GPU machine type, but no GPU engine is available here "
            "(TensorRT / ONNX Runtime CUDA are not installed, or no GPU is present). "
            "Run the task on a machine of that type, or use --device cpu."
        )
    return normal


def _builds_for(engine: ModuleType, device: str) -> bool:
    return device in engine.DEVICES and engine.version() is not None


def candidates(level: str, device: str, choice: str = "auto", version: str | None = None,
               qat: bool = False) -> list[tuple[ModuleType, str]]:
    """(engine, precision) pairs to build for this level and device, in build order.

    A QAT model (quantize/dequantize operations in its graph) is built as INT8 by every engine.
    """
    engines = ENGINES if choice == "auto" else (engine_named(choice),)
    if version and choice == "auto":
        raise EngineError("--engine-version needs --engine NAME: a version belongs to one engine.")
    pairs = []
    for engine in engines:
        installed = engine.version()
        if device not in engine.DEVICES or installed is None:
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
        raise EngineError(f"no engine can build for device {device!r} at level {level} here.")
    return pairs


def _version_matches(installed: str, wanted: str) -> bool:
    """'2026.4' pins 2026.4.x; a full version must match exactly."""
    return installed == wanted or installed.startswith(wanted.rstrip(".") + ".")


def _unavailable(engine: ModuleType, device: str) -> str:
    if engine.version() is None:
        return f"engine {engine.NAME} is not installed: pip install {engine.PACKAGE}"
    return f"engine {engine.NAME} cannot build for device {device!r} (it supports {', '.join(engine.DEVICES)})."
