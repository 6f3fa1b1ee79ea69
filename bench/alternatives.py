"""What a user could run instead of accelflow, each wrapped in the runner convention that
tasks.benchmark times (prepare once, time `run` only)."""

from __future__ import annotations

import gc
import os
import warnings

import torch
from accelflow.core.runner import thread_count


class CallRunner:
    """A framework call on fixed inputs; `precision` names its precision class."""

    def __init__(self, label: str, call, precision: str):
        self.label, self.call, self.precision = label, call, precision

    def prepare(self, arrays):
        return None  # the call holds its own inputs, already in the framework's types

    def run(self, feed):
        return self.call()

    def outputs(self, raw):
        return [raw]


class AccelflowRunner:
    """A result folder loaded with accelflow.load: the serving path a user gets."""

    def __init__(self, label: str, folder: str):
        import accelflow

        self.model = accelflow.load(folder)
        self.label, self.precision = label, self.model.manifest["precision"]
        self.engine = f"{self.model.manifest['engine']} {self.model.manifest['precision']}"

    def prepare(self, arrays):
        return self.model.runner.prepare(arrays)

    def run(self, feed):
        return self.model.runner.run(feed)

    def outputs(self, raw):
        return self.model.runner.outputs(raw)


def save_torchscript(model, example: tuple, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(path)
    return path


def export_onnx(model, reference, folder: str) -> str:
    """The ONNX file a user would export themselves (legacy exporter, dynamic batch)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    example = reference.inputs(2)
    names = [f"input_{i}" for i in range(len(example))]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, path, input_names=names, output_names=["output"],
                          dynamic_axes={n: {0: "batch"} for n in names}, opset_version=17, dynamo=False)
    return path


def runners(model, inputs: tuple, onnx_path: str, folders: dict[str, str]) -> dict:
    feeds = {f"input_{i}": t.numpy() for i, t in enumerate(inputs)}
    result = {
        "pytorch eager fp32": CallRunner("pytorch eager fp32", _eager(model, inputs), "f32"),
        "pytorch bf16 autocast": CallRunner("pytorch bf16 autocast", _autocast(model, inputs), "bf16"),
        "torch.compile": CallRunner("torch.compile", _compiled(model, inputs), "f32"),
        "onnxruntime default": CallRunner("onnxruntime default", ort_call(onnx_path, feeds), "f32"),
    }
    ov_call, ov_precision = openvino_call(onnx_path, feeds)
    result["openvino default"] = CallRunner("openvino default", ov_call, ov_precision)
    if ov_precision != "f32":  # OpenVINO picks bf16 by default where the CPU has it; the f32 peer too
        result["openvino f32"] = CallRunner("openvino f32", openvino_call(onnx_path, feeds, "f32")[0], "f32")
    for level, folder in folders.items():
        result[f"accelflow {level}"] = AccelflowRunner(f"accelflow {level}", folder)
    return result


def _eager(model, inputs):
    def call():
        with torch.inference_mode():
            return model(*inputs)
    return call


def _autocast(model, inputs):
    def call():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(*inputs)
    return call


_COMPILED: dict = {}


def _compiled(model, inputs):
    compiled = _COMPILED.setdefault(id(model), torch.compile(model))

    def call():
        with torch.inference_mode():
            return compiled(*inputs)
    return call


def ort_call(onnx_path: str, feeds: dict):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = thread_count()
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def openvino_call(onnx_path: str, feeds: dict, precision: str | None = None):
    """OpenVINO's default settings, or only its inference precision set (e.g. 'f32')."""
    from accelflow.engines.openvino_engine import import_openvino

    ov = import_openvino()

    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = ov.Core().compile_model(onnx_path, "CPU", config)
    request = compiled.create_infer_request()
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # 'bf16' / 'f32' / 'f16'
    return (lambda: request.infer(feeds, share_inputs=True, share_outputs=True)), precision


def count_flops(model, inputs: tuple) -> float:
    """FLOPs of one eager forward (PyTorch's counter: 2 per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return float(counter.get_total_flops())


def release(runners: dict) -> None:
    runners.clear()
    gc.collect()


__all__ = ["runners", "save_torchscript", "export_onnx", "count_flops", "release"]
