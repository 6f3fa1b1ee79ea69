"""ONNX Runtime with the CUDA execution provider: the second GPU engine (extra `gpu`:
onnxruntime-gpu, which replaces the CPU-only onnxruntime package and keeps its CPU provider).

It competes with TensorRT in the auto choice and is the GPU engine where TensorRT is absent.
Lossless: the float32 graph with TF32 off (`use_tf32=0`); FP16: the same FP16 graph as
TensorRT's (engines/fp16_graph.py, I/O types kept, with the same automatic fallback);
QAT: the Q/DQ graph, which ONNX Runtime runs with its quantized kernels. The graph is saved
as is and optimized when loaded (ORT_ENABLE_ALL), because a graph optimized offline for an
execution provider may hold that provider's fused kernels. The manifest still records the
GPU it was built and checked on, and loading elsewhere is refused like TensorRT's.

Timing: inputs are copied to the GPU in `prepare` (IOBinding with OrtValues on "cuda");
`run_with_iobinding` returns after ONNX Runtime synchronised the execution providers (its
default: RunOptions `disable_synchronize_execution_providers` is "0"; see
https://github.com/microsoft/onnxruntime/pull/28686 and the I/O Binding page,
https://onnxruntime.ai/docs/performance/tune-performance/iobinding.html), and
`synchronize_outputs` is called as well, so a timed `run` is the whole inference.
"""

from __future__ import annotations

import os

import numpy as np
from accelflow.core.errors import DeviceError, EngineError
from accelflow.core.levels import Level
from accelflow.core.modelio import ModelIO
from accelflow.engines import fp16_graph, gpu
from accelflow.engines.gpu import GPU_DEVICES
from accelflow.formats.onnx_model import OrtRunner, needs_external_data

NAME = "onnxruntime-cuda"
PACKAGE = "onnxruntime-gpu"
DEVICES = GPU_DEVICES
MODEL_FILE = "model.onnx"
CUDA = "CUDAExecutionProvider"


def version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__ if CUDA in onnxruntime.get_available_providers() else None


def precisions(level: Level, device: str) -> list[str]:
    return ["fp16"] if level.reduced_precision else ["f32"]


def build(onnx_path: str, io, spec, precision: str, out_dir: str, threads: int) -> dict:
    here = gpu.current()
    if here is None:
        raise DeviceError("ONNX Runtime's CUDA provider needs an NVIDIA GPU, and this machine has none.")
    target = os.path.join(out_dir, MODEL_FILE)
    config = {"file": MODEL_FILE, "engine_version": version(), "built_for": gpu.built_for(here),
              "gpu": here.to_dict(), "precision": precision, "tf32": precision != "f32"}
    if precision == "fp16":
        _, config["fp16"] = fp16_graph.build_with_fallback(
            onnx_path, io, spec, out_dir, lambda p: OrtCudaRunner(p, io, threads, tf32=True))
        # Renamed; external data, if any, keeps the file name the graph refers to.
        os.replace(os.path.join(out_dir, fp16_graph.FP16_FILE), target)
    elif precision in ("f32", "int8"):
        _copy_graph(onnx_path, target)
        OrtCudaRunner(target, io, threads, tf32=precision != "f32")  # loads: fails here, not later
    else:
        raise EngineError(f"onnxruntime-cuda cannot build precision {precision!r}")
    return config


def _copy_graph(src: str, dst: str) -> None:
    import onnx

    large = needs_external_data(src)
    onnx.save(onnx.load(src), dst, save_as_external_data=large,
              location=os.path.basename(dst) + ".data" if large else None)


def load(folder: str, manifest: dict, threads: int) -> "OrtCudaRunner":
    config = manifest["engine_config"]
    gpu.refuse_elsewhere(config, NAME, version())
    io = manifest["io"]
    io = ModelIO.from_dict(io) if isinstance(io, dict) else io
    return OrtCudaRunner(os.path.join(folder, config["file"]), io, threads, tf32=config.get("tf32", False))


def cuda_providers(tf32: bool | None) -> list:
    """CUDA first, CPU for the operations CUDA lacks; tf32 None keeps ONNX Runtime's default."""
    options = {"device_id": "0"} if tf32 is None else {"device_id": "0", "use_tf32": "1" if tf32 else "0"}
    return [(CUDA, options), "CPUExecutionProvider"]


class _Bound:
    """An IOBinding and the OrtValues it points at (kept alive together)."""

    def __init__(self, binding, values):
        self.binding, self.values = binding, values


class OrtCudaRunner(OrtRunner):
    def __init__(self, path: str, io, threads: int, tf32: bool | None = False):
        super().__init__(path, io, threads, optimize=True, providers=cuda_providers(tf32))
        if CUDA not in self.session.get_providers():
            raise DeviceError("ONNX Runtime did not start its CUDA provider (CUDA or cuDNN libraries missing?); "
                              "see the CUDA requirements of onnxruntime-gpu.")
        self.label = f"onnxruntime-cuda {version()}"

    def prepare(self, arrays):
        import onnxruntime as ort

        binding = self.session.io_binding()
        values = []
        for name, array in super().prepare(arrays).items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
            binding.bind_ortvalue_input(name, value)
            values.append(value)
        for name in self.io.output_names:
            binding.bind_output(name, "cuda", 0)
        binding.synchronize_inputs()
        return _Bound(binding, values)

    def run(self, feed):
        self.session.run_with_iobinding(feed.binding)
        feed.binding.synchronize_outputs()
        return feed

    def outputs(self, raw):
        return [np.asarray(v) for v in raw.binding.copy_outputs_to_cpu()]
