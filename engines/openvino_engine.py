"""OpenVINO on the CPU: the ONNX graph converted to IR with bounded dynamic shapes.

The IR keeps f32 weights (`compress_to_fp16=False`: OpenVINO's default would halve them,
which is not lossless). Precision is chosen at compile time with INFERENCE_PRECISION_HINT:
f32 for the lossless level; bf16 / f16 for the FP16 level where the CPU computes in them
(OPTIMIZATION_CAPABILITIES), and f32 is also tried because reduced precision is not
faster on every CPU (on AVX-512 CPUs without AMX it measured slower here).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from accelflow.core.levels import Level

NAME = "openvino"
PACKAGE = "openvino"
DEVICES = ("cpu",)
MODEL_FILE = "model.xml"
_REDUCED = {"bf16": "BF16", "f16": "FP16"}  # precision -> CPU capability that computes it


def import_openvino():
    """OpenVINO without its usage telemetry.

    On import, OpenVINO forks a process that posts to Google Analytics unless the user opted
    out. accelflow does not send data about its users' work without asking, and that fork,
    taken while TensorFlow's threads hold locks, deadlocked the child and kept the task
    process from ever exiting (seen here). OpenVINO uses its own no-op stub when
    openvino_telemetry cannot be imported; ACCELFLOW_OPENVINO_TELEMETRY=on keeps telemetry.
    """
    if "openvino" not in sys.modules and os.environ.get("ACCELFLOW_OPENVINO_TELEMETRY", "off").lower() != "on":
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def version() -> str | None:
    try:
        openvino = import_openvino()
    except ImportError:
        return None
    return openvino.get_version().split("-")[0]


def reduced_precisions() -> list[str]:
    """The reduced floating-point precisions this CPU computes natively."""
    ov = import_openvino()

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return [p for p, cap in _REDUCED.items() if cap in capabilities]


def precisions(level: Level, device: str) -> list[str]:
    # int8: the quantized graph's Q/DQ pairs become FakeQuantize, run in INT8 (VNNI/AMX).
    return ["f32"] + (reduced_precisions() if level.reduced_precision else []) + (["int8"] if level.int8 else [])


def build(onnx_path: str, io, spec, precision: str, out_dir: str, threads: int) -> dict:
    ov = import_openvino()

    model = ov.Core().read_model(onnx_path)
    model.reshape(_bounded_shapes(model, io, spec))
    ov.save_model(model, os.path.join(out_dir, MODEL_FILE), compress_to_fp16=False)
    return {"file": MODEL_FILE, "options": _compile_config(precision, threads)}


def _bounded_shapes(model, io, spec) -> dict:
    """Each input's partial shape: fixed dims static, dynamic dims bounded by the tensor info."""
    ov = import_openvino()

    present = {name for port in model.inputs for name in port.get_names()}
    shapes = {}
    for leaf, name in zip(spec.leaves, io.input_names):
        if name in present:
            dims = [ov.Dimension(lo, hi) if lo != hi else ov.Dimension(lo)
                    for lo, hi in zip(leaf.shape.min, leaf.shape.max)]
            shapes[name] = ov.PartialShape(dims)
    return shapes


def _compile_config(precision: str, threads: int) -> dict:
    # int8 (QAT): OpenVINO's low-precision transformations run the FakeQuantize parts in INT8
    # by themselves; the hint sets the precision of whatever is not quantized, kept f32.
    # CPU pinning off: pinned threads cannot leave a core that another process or another
    # runtime's threads hold. On a shared 2-core AMD EPYC, ResNet-50 measured 82-83 ms unpinned
    # against 90-92 ms pinned (OpenVINO's default), co-hosted no worse (python -m bench.cohost).
    # A plain ONNX Runtime session run in turns with OpenVINO kept 96-111% of its speed alone:
    # OpenVINO's idle TBB threads do not hold the cores, so no other property is needed.
    return {
        "INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
    }


def load(folder: str, manifest: dict, threads: int) -> "OvRunner":
    config = dict(manifest["engine_config"]["options"], INFERENCE_NUM_THREADS=threads)
    return OvRunner(os.path.join(folder, manifest["engine_config"]["file"]), manifest["io"], config)


class OvRunner:
    def __init__(self, path: str, io: dict, config: dict):
        ov = import_openvino()

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names, self.output_names = io["input_names"], io["output_names"]
        self.label = f"openvino {version()} ({config['INFERENCE_PRECISION_HINT']})"
        self._types = {
            name: port.get_element_type().to_dtype()
            for port in self.compiled.inputs for name in port.get_names()
        }
        self._outputs = [self.compiled.output(n) for n in self.output_names]

    def prepare(self, arrays):
        return {n: np.ascontiguousarray(a, dtype=self._types[n])
                for n, a in zip(self.input_names, arrays) if n in self._types}

    def run(self, feed):
        # Shared buffers: no copies inside the timed call; `outputs` copies what it reads.
        return self.request.infer(feed, share_inputs=True, share_outputs=True)

    def outputs(self, raw):
        return [np.array(raw[port], copy=True) for port in self._outputs]
