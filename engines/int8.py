"""Post-training static INT8: an ONNX graph quantized to Q/DQ form on calibration inputs, and
which of its operations are most sensitive to it.

The field's own tooling: ONNX Runtime's `quantize_static` writes a QDQ graph (per-channel
int8 weights, activations calibrated with MinMax); every engine builds INT8 from it (ONNX
Runtime fuses Q/DQ pairs into integer kernels, OpenVINO turns them into FakeQuantize, TensorRT
reads them as explicit quantization). On the CPU activations are uint8 (ONNX Runtime's fast
U8S8 path on x86); on a GPU they are symmetric int8, as TensorRT requires.

Sensitivity is measured per operation, the usual way: the float model is run on calibration
inputs with every quantized activation as an output; each operation is then run alone on those
activations, once as they are and once quantized and dequantized with the scales the
calibration chose, and the signal-to-quantization-noise ratio (SQNR, dB) of its output is its
score. Per operation rather than per tensor, because one outlier channel makes a tensor's own
SQNR look fine while the small channels its reader needs are rounded to zero. The operations
with the lowest SQNR are the first to keep in float.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
from accelflow.core.errors import first_line
from accelflow.formats.onnx_model import needs_external_data

# Operations quantized: those with integer kernels in every engine (the rest stay float, fed by
# dequantized tensors).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
PREPARED_FILE = "prepared.onnx"
SENSITIVITY_FEEDS = 8  # calibration inputs the sensitivity is measured on (all activations are kept)


def method_text(device: str) -> str:
    activations = "int8 symmetric" if device == "cuda" else "uint8"
    return (f"ONNX Runtime static quantization, QDQ graph, per-channel int8 weights, {activations} activations "
            "calibrated with MinMax")


def prepare(onnx_path: str, work_dir: str) -> str:
    """The graph quantization reads: shapes inferred, constants folded (a weight or bias must be
    an initializer to be quantized per channel; a Constant node's output would be rounded as an
    activation, one uint8 scale for the whole tensor), opset 13 or later (per-channel Q/DQ) and
    every node named, so that an operation can be excluded by name. ONNX Runtime's own
    pre-processing; without its symbolic shape inference where that gives up (dynamic sizes
    through Resize and Add, as in Paddle2ONNX's FPNs); with neither, the graph with its constants
    moved to initializers."""
    import onnx

    path = os.path.join(work_dir, PREPARED_FILE)
    if os.path.exists(path):
        return path
    large = needs_external_data(onnx_path)
    path_in = _pre_processed(onnx_path, path, large)
    model = onnx.load(path_in)
    _constants_to_initializers(model.graph)
    model = _at_least_opset_13(model)
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    onnx.save(model, path, save_as_external_data=large, location=PREPARED_FILE + ".data" if large else None)
    return path


def _pre_processed(onnx_path: str, path: str, large: bool) -> str:
    """ONNX Runtime's pre-processing written to `path` (or `onnx_path` when it fails both ways:
    it is an optimisation, not a requirement)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    why = ""
    for skip_symbolic in sorted({large, True}):  # with symbolic shapes first, unless the graph is too large
        before = _modified(SYMBOLIC_DUMP)
        try:
            quant_pre_process(onnx_path, path, skip_symbolic_shape=skip_symbolic, save_as_external_data=large)
            return path
        except Exception as exc:  # noqa: BLE001 - retried without symbolic shapes, then skipped
            why = first_line(exc)
            if _modified(SYMBOLIC_DUMP) != before:
                _remove_symbolic_dump()
    logging.getLogger(__name__).info("quantization pre-processing skipped: %s", why)
    return onnx_path


# Where ONNX Runtime's symbolic shape inference gives up, it dumps the graph it reached into the
# current directory (its weights in external files with random names): a worker's working
# directory would gain a copy of the model per task.
SYMBOLIC_DUMP = "sym_shape_infer_temp.onnx"


def _modified(path: str) -> float | None:
    return os.stat(path).st_mtime_ns if os.path.exists(path) else None


def _remove_symbolic_dump() -> None:
    """Remove the dump and the external data files it names."""
    import onnx

    dump = onnx.load(SYMBOLIC_DUMP, load_external_data=False)
    for location in {e.value for t in dump.graph.initializer for e in t.external_data if e.key == "location"}:
        with contextlib.suppress(OSError):
            os.remove(location)
    os.remove(SYMBOLIC_DUMP)


def _constants_to_initializers(graph) -> None:
    """Constant nodes holding a tensor become initializers (what the pre-processing does when
    it runs); one that is also a graph output stays a node."""
    outputs = {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in outputs]:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is None:
            continue
        tensor = value.t
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)


def _at_least_opset_13(model):
    """Per-channel DequantizeLinear (its axis) needs opset 13; older graphs (Paddle2ONNX writes
    11) are converted."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    try:
        return version_converter.convert_version(model, 13)
    except Exception as exc:  # noqa: BLE001 - say what the user can do
        raise RuntimeError(f"INT8 needs an ONNX graph at opset 13 or later; this one is at opset {opset} and "
                           f"ONNX's version converter failed ({first_line(exc)}). Export it at opset 13+.") from exc


def quantize(prepared: str, out_path: str, feeds: list[dict], device: str, exclude: list[str] = ()) -> int:
    """Write the QDQ graph of `prepared` calibrated on `feeds` (input name -> array); the
    operations named in `exclude` stay float. Returns how many operations were quantized."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    gpu = device == "cuda"
    nodes = _quantizable_nodes(prepared)
    with _root_warnings_off():  # "please pre-process", "bias should be an initializer": advice, not faults
        quantize_static(
            prepared, out_path, _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if gpu else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=list(exclude), use_external_data_format=needs_external_data(prepared),
            extra_options={"ActivationSymmetric": gpu, "WeightSymmetric": True},
        )
    if exclude:
        _float_inputs_for(out_path, set(exclude))
    return len([n for n in nodes if n not in set(exclude)])


# Operations a tensor passes through on its way from a Q/DQ pair to the operation reading it
# (ONNX Runtime quantizes a Conv/Gemm's output, which then flows through a Relu, a Reshape ...).
_PASS_THROUGH = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def _float_inputs_for(path: str, excluded: set[str]) -> None:
    """Make the operations kept in float read float tensors: ONNX Runtime leaves them
    unquantized but still rounds what they read where the producer's output was quantized (the
    Q/DQ pair after a quantized Conv or Gemm). The nearest Q/DQ pair upstream of each such input
    is bypassed, then Q/DQ nodes nothing reads any more are dropped."""
    import onnx

    large = needs_external_data(path)
    model = onnx.load(path)
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in [n for n in model.graph.node if n.name in excluded]:
        for index, tensor in enumerate(node.input):
            reader, slot = node, index
            source = producer.get(tensor)
            while source is not None and source.op_type in _PASS_THROUGH:
                reader, slot, source = source, 0, producer.get(source.input[0])
            quantizer = producer.get(source.input[0]) if source is not None and source.op_type == "DequantizeLinear" else None
            if quantizer is not None and quantizer.op_type == "QuantizeLinear":
                reader.input[slot] = quantizer.input[0]
    _drop_unread_qdq(model.graph)
    onnx.save(model, path, save_as_external_data=large, location=os.path.basename(path) + ".data" if large else None)


def _drop_unread_qdq(graph) -> None:
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        unread = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not any(o in read for o in n.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


def sensitivity(prepared: str, quantized: str, feeds: list[dict], threads: int) -> list[tuple[str, float]]:
    """(operation, SQNR dB of its output when only its own inputs are quantized), most
    sensitive (lowest) first: each operation is run alone on the float model's activations,
    once as they are and once quantized with the scales the calibration chose."""
    import onnx

    scales = _activation_scales(onnx.load(quantized, load_external_data=False))
    model = onnx.load(prepared)
    nodes = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS and any(i in scales for i in n.input)]
    constants = {i.name for i in model.graph.initializer}
    wanted = sorted({t for n in nodes for t in (*n.input, n.output[0]) if t and t not in constants})
    values = _float_activations(model, wanted, feeds[:SENSITIVITY_FEEDS], threads)
    scores = []
    for node in nodes:
        alone = _single_node_session(model, node, threads)
        inputs = [i for i in node.input if i in values]
        sqnr = np.inf
        for k in range(len(values[node.output[0]])):
            feed = {i: _fake_quantized(values[i][k], *scales[i]) if i in scales else values[i][k] for i in inputs}
            sqnr = min(sqnr, _sqnr(values[node.output[0]][k], alone.run(None, feed)[0]))
        scores.append((node.name, float(sqnr)))
    return sorted(scores, key=lambda item: item[1])


@contextlib.contextmanager
def _root_warnings_off():
    """ONNX Runtime's quantization tools warn on the root logger; the report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Feeds:
    """ONNX Runtime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def _quantizable_nodes(path: str) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(path, load_external_data=False).graph.node if n.op_type in QUANTIZED_OPS]


def _activation_scales(model) -> dict[str, tuple[float, int, int, int]]:
    """Quantized activation -> (scale, zero point, low, high) from the QDQ graph's QuantizeLinear
    nodes (weights are initializers, quantized per channel, and not counted)."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    result = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue
        scale, zero = constants.get(node.input[1]), constants.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        info = np.iinfo(zero.dtype if zero is not None else np.uint8)
        result[node.input[0]] = (float(scale), int(zero) if zero is not None else 0, info.min, info.max)
    return result


def _float_activations(model, tensors: list[str], feeds: list[dict], threads: int) -> dict[str, list]:
    """The float model's value of each tensor on each feed (the tensors made graph outputs)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    graph_inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in present | graph_inputs)
    session = _session(model, threads)
    outputs = [t for t in tensors if t not in graph_inputs]
    values: dict[str, list] = {t: [] for t in tensors}
    for feed in feeds:
        for name in graph_inputs & set(tensors):
            values[name].append(feed[name])
        for name, array in zip(outputs, session.run(outputs, feed)):
            values[name].append(array)
    return values


def _single_node_session(model, node, threads: int):
    """One operation alone, its weights as in the float model, its activations as inputs."""
    import onnx

    constants = {i.name: i for i in model.graph.initializer}
    graph = onnx.helper.make_graph(
        [node], "alone", [onnx.helper.make_tensor_value_info(i, onnx.TensorProto.FLOAT, None)
                          for i in node.input if i and i not in constants],
        [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)],
        [constants[i] for i in node.input if i in constants])
    alone = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return _session(alone, threads)


def _session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the float numerics as written
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _fake_quantized(x: np.ndarray, scale: float, zero: int, low: int, high: int) -> np.ndarray:
    """`x` quantized to the integer grid and back, as a Q/DQ pair computes it."""
    return ((np.clip(np.round(x / scale) + zero, low, high) - zero) * scale).astype(x.dtype)


def _sqnr(reference: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio (dB) of `noisy` against `reference`."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(noisy, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(float(np.sum(reference ** 2)), 1e-30) / noise)
