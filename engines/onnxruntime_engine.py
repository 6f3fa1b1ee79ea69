"""ONNX Runtime on the CPU: the graph optimized offline at ORT_ENABLE_ALL and saved.

The saved graph may hold layouts specific to the CPU that built it (NCHWc blocking for
AVX-512, for example), which suits a result built for one machine type; the manifest
records the machine.

The session settings the result is benchmarked with are recorded in its engine_config
(options.session_config) and are the ones `load` applies, so `accelflow.load` serves what
was measured. Intra-op threads do not spin when idle (SESSION_CONFIG): ONNX Runtime's
default spinning keeps the cores busy after each call and slows whatever runs next in the
process or on the machine (measured in bench/cohost.py).
"""

from __future__ import annotations

import os

from accelflow.core.levels import Level
from accelflow.core.modelio import ModelIO
from accelflow.formats.onnx_model import OrtRunner, needs_external_data, session_options

NAME = "onnxruntime"
PACKAGE = "onnxruntime"
DEVICES = ("cpu",)
MODEL_FILE = "model.onnx"
# Measured (python -m bench.cohost, ResNet-50 batch 1, 2 threads, a shared 2-core AMD EPYC with
# AVX-512 VNNI/BF16): a plain ONNX Runtime session called in turns with a spinning result kept
# 77% of its speed alone, with a non-spinning one 100-102%; the result itself measured 87-89 ms
# alone not spinning, 138-146 ms spinning (other processes held the cores the spinning thread took).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


def version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def precisions(level: Level, device: str) -> list[str]:
    # An FP16-cast graph on ORT's CPU provider is slower than f32 (measured on BERT and CNNs), so f32 only.
    # "int8" (a QAT model, or the int8 level's quantized graph) needs nothing else: ORT_ENABLE_ALL
    # turns Q/DQ pairs into integer kernels, VNNI where the CPU has it.
    return ["f32"] + (["int8"] if level.int8 else [])


def build(onnx_path: str, io, spec, precision: str, out_dir: str, threads: int) -> dict:
    import onnxruntime as ort

    options = session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = os.path.join(out_dir, MODEL_FILE)
    if needs_external_data(onnx_path):  # protobuf cannot hold more than 2 GB
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", MODEL_FILE + ".data"
        )
    ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return {"file": MODEL_FILE, "options": {"graph_optimization_level": "ORT_ENABLE_ALL (offline)",
                                            "intra_op_num_threads": threads, "session_config": dict(SESSION_CONFIG)}}


def load(folder: str, manifest: dict, threads: int) -> OrtRunner:
    """The saved graph in a session with the recorded session config (none recorded, as in
    results built before it was: ONNX Runtime's defaults, which is what they were timed with)."""
    config = manifest["engine_config"]
    path = os.path.join(folder, config["file"])
    session_config = config.get("options", {}).get("session_config")
    return OrtRunner(path, ModelIO.from_dict(manifest["io"]), threads, optimize=False, config=session_config)
