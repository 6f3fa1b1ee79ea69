"""ONNX Runtime on the CPU: the graph optimized offline at ORT_ENABLE_ALL and saved.

The saved graph may hold layouts specific to the CPU that built it (NCHWc blocking for
AVX-512, for example), which suits a result built for one machine type; the manifest
records the machine.
"""

from __future__ import annotations

import os

import numpy as np

from formats.onnx_model import needs_external_data, ort_numpy_type

NAME = "onnxruntime"
PACKAGE = "onnxruntime"
DEVICES = ("cpu",)
MODEL_FILE = "model.onnx"


def version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def precisions(level: str, device: str) -> list[str]:
    # An FP16-cast graph on ORT's CPU provider is slower than f32 (DESIGN.md), so f32 only.
    # ("int8", for QAT models, needs nothing else: ORT_ENABLE_ALL turns Q/DQ pairs into
    # integer kernels, VNNI where the CPU has it.)
    return ["f32"]


def build(onnx_path: str, io, spec, precision: str, out_dir: str, threads: int) -> dict:
    import onnxruntime as ort

    options = _session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = os.path.join(out_dir, MODEL_FILE)
    if needs_external_data(onnx_path):  # protobuf cannot hold more than 2 GB
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", MODEL_FILE + ".data"
        )
    ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return {"file": MODEL_FILE, "options": {"graph_optimization_level": "ORT_ENABLE_ALL (offline)"}}


def load(folder: str, manifest: dict, threads: int) -> "OrtRunner":
    return OrtRunner(os.path.join(folder, manifest["engine_config"]["file"]), manifest["io"], threads)


class OrtRunner:
    def __init__(self, path: str, io: dict, threads: int):
        import onnxruntime as ort

        options = _session_options(threads)
        # Already optimized offline: optimizing again only costs start-up time.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names, self.output_names = io["input_names"], io["output_names"]
        self.label = f"onnxruntime {ort.__version__}"
        self._types = {i.name: ort_numpy_type(i.type) for i in self.session.get_inputs()}

    def prepare(self, arrays):
        return {n: np.ascontiguousarray(a, dtype=self._types[n])
                for n, a in zip(self.input_names, arrays) if n in self._types}

    def run(self, feed):
        return self.session.run(self.output_names, feed)

    def outputs(self, raw):
        return [np.asarray(r) for r in raw]


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


