"""TensorRT through Polygraphy, for TensorRT 10 and 11: every network strongly typed.

TensorRT 10.12 deprecated and TensorRT 11 removed the FP16/INT8 builder flags (weak typing);
in a strongly typed network every tensor's type follows from the graph, so the precision is
chosen in the ONNX graph and no precision flag is ever set here:

- lossless ("f32"): the float32 graph, with TF32 off (CreateConfig(tf32=False) clears
  BuilderFlag.TF32, which TensorRT sets by default), so matrix products keep float32's
  23-bit mantissa;
- FP16 ("fp16"): the FP16 graph of engines/fp16_graph.py (inputs and outputs keep their
  types), with the automatic fallback to sensitive operations in float32 when the FP16
  pre-check fails; the record goes into the engine configuration;
- QAT ("int8"): the Q/DQ graph as exported: in a strongly typed network the
  QuantizeLinear/DequantizeLinear pairs make those layers explicit INT8; no calibration.

Optimization profiles come from the tensor information (engines/profiles.py). A timing
cache per GPU model and TensorRT version (in ACCELFLOW_CACHE_DIR's parent, `tensorrt/`)
makes rebuilds skip kernel timing that was already done.

Checked against: Polygraphy 0.53.6 source (installed from PyPI here):
`NetworkFromOnnxPath(path, strongly_typed=True)` sets NetworkDefinitionCreationFlag.STRONGLY_TYPED;
`CreateConfig(tf32=False, profiles=[Profile().add(name, min, opt, max)], load_timing_cache=path)`
clears TF32 (suppressing AttributeError where the flag no longer exists);
`EngineFromNetwork(network, config, save_timing_cache=path)` merges and writes the cache under a file lock;
`TrtRunner.infer(feed, check_inputs=False, copy_outputs_to_host=False)` enqueues and then calls
`stream.synchronize()` before returning; `TrtRunner.set_profile(index)`.
TensorRT Python API docs, "Builder" (NetworkDefinitionCreationFlag.STRONGLY_TYPED: "every tensor
in the network has a data type defined in the network following only type inference rules"),
https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html;
TensorRT 11.0 "Precision Control" (strongly typed networks),
https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/inference-library/precision-control.html;
NVIDIA's trt-strong-typing-migration note: on 11.x strong typing is unconditional and the
STRONGLY_TYPED flag is accepted and ignored; on 10.12-10.x it is opted into with that flag.
"""

from __future__ import annotations

import os
import re

import numpy as np
from accelflow.core.errors import DeviceError, EngineError, missing_dependency
from accelflow.core.levels import Level
from accelflow.engines import fp16_graph, gpu, profiles
from accelflow.engines.gpu import GPU_DEVICES

NAME = "tensorrt"
PACKAGE = "tensorrt"
DEVICES = GPU_DEVICES
ENGINE_FILE = "model.engine"


def version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def precisions(level: Level, device: str) -> list[str]:
    return (["fp16"] if level.reduced_precision else ["f32"]) + (["int8"] if level.int8 else [])


def build(onnx_path: str, io, spec, precision: str, out_dir: str, threads: int) -> dict:
    here = gpu.current()
    if here is None:
        raise DeviceError("TensorRT builds need an NVIDIA GPU, and this machine has none.")
    shapes = profiles.for_spec(spec, io)
    cache = timing_cache_path(here, version())
    engine_path = os.path.join(out_dir, ENGINE_FILE)
    config = {"file": ENGINE_FILE, "engine_version": version(), "built_for": gpu.built_for(here),
              "gpu": here.to_dict(), "profiles": profiles.to_json(shapes), "strongly_typed": True,
              "tf32": False, "timing_cache": cache, "precision": precision}

    def build_from(graph_path: str):
        _build_engine(graph_path, engine_path, shapes, cache)
        return TrtEngineRunner(engine_path, io, shapes)

    if precision == "fp16":
        runner, config["fp16"] = fp16_graph.build_with_fallback(onnx_path, io, spec, out_dir, build_from)
        _remove(os.path.join(out_dir, fp16_graph.FP16_FILE))  # the engine is what loads
    elif precision in ("f32", "int8"):
        runner = build_from(onnx_path)
    else:
        raise EngineError(f"tensorrt cannot build precision {precision!r}")
    runner.close()
    return config


def _build_engine(graph_path: str, engine_path: str, shapes: list[dict], cache: str) -> None:
    poly = _polygraphy_trt()
    trt_profiles = []
    for profile in shapes:
        p = poly.Profile()
        for name, (lo, opt, hi) in profile.items():
            p.add(name, min=lo, opt=opt, max=hi)
        trt_profiles.append(p)
    network = poly.NetworkFromOnnxPath(graph_path, strongly_typed=True)
    config = poly.CreateConfig(tf32=False, profiles=trt_profiles,
                               load_timing_cache=cache if os.path.isfile(cache) else None)
    poly.SaveEngine(poly.EngineFromNetwork(network, config, save_timing_cache=cache), engine_path)()


def timing_cache_path(here: gpu.GpuInfo, trt_version: str | None) -> str:
    """One timing cache per GPU model and TensorRT version (caches are not portable)."""
    from accelflow.storage.cache import cache_dir

    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{here.name}-sm{here.compute_capability}-trt{trt_version}")
    folder = os.path.join(os.path.dirname(cache_dir().rstrip(os.sep)), "tensorrt")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"timing-{slug}.cache")


def load(folder: str, manifest: dict, threads: int) -> "TrtEngineRunner":
    config = manifest["engine_config"]
    gpu.refuse_elsewhere(config, NAME, version())
    return TrtEngineRunner(os.path.join(folder, config["file"]), manifest["io"],
                           profiles.from_json(config["profiles"]))


def _remove(path: str) -> None:
    for p in (path, path + ".data"):
        if os.path.exists(p):
            os.remove(p)


def _polygraphy_trt():
    try:
        from polygraphy.backend import trt as poly
    except ImportError as exc:
        raise missing_dependency("polygraphy", "tensorrt") from exc
    return poly


class TrtEngineRunner:
    """A TensorRT engine in a Polygraphy TrtRunner; inputs uploaded to the GPU in `prepare`.

    `run` enqueues the engine and returns after the stream synchronised (TrtRunner does it),
    so a timed `run` is the GPU time of the whole inference, without host<->device copies
    of the inputs (as the CUDA baselines' `run`). `outputs` copies the results to the host.
    """

    def __init__(self, path: str, io, shapes: list[dict]):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.datatype import DataType

        io = io if isinstance(io, dict) else io.to_dict()
        self.input_names, self.output_names = io["input_names"], io["output_names"]
        self.profiles, self._profile = shapes, 0
        self.runner = TrtRunner(EngineFromBytes(BytesFromPath(path)))
        self.runner.activate()
        meta = self.runner.get_input_metadata()
        self._types = {name: DataType.to_dtype(meta[name].dtype, "numpy") for name in meta}
        self._buffers: dict = {}
        self.label = f"tensorrt {version()}"

    def prepare(self, arrays):
        from polygraphy.cuda import DeviceArray
        from polygraphy.datatype import DataType

        host = {n: np.ascontiguousarray(a, dtype=self._types[n])
                for n, a in zip(self.input_names, arrays) if n in self._types}
        index = profiles.profile_index(self.profiles, {n: tuple(a.shape) for n, a in host.items()})
        if index != self._profile:
            self.runner.set_profile(index)
            self._profile = index
        feed = {}
        for name, array in host.items():
            buffer = self._buffers.get(name)
            if buffer is None:
                buffer = self._buffers[name] = DeviceArray(array.shape, DataType.from_dtype(array.dtype))
            feed[name] = buffer.resize(array.shape).copy_from(array)
        return feed

    def run(self, feed):
        return self.runner.infer(feed, check_inputs=False, copy_outputs_to_host=False)

    def outputs(self, raw):
        return [np.array(raw[name].numpy(), copy=True) for name in self.output_names]

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        if self.runner.is_active:
            self.runner.deactivate()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
