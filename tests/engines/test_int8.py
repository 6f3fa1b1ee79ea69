"""engines/int8.py: the calibrated QDQ graph, per-operation sensitivity, operations kept in float."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from accelflow.engines import int8

from tests import modelzoo


@pytest.fixture()
def outlier(tmp_path):
    path = modelzoo.outlier_mlp_onnx(str(tmp_path))
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(6)]
    return int8.prepare(path, str(tmp_path)), feeds, tmp_path


def _run(path: str, feed: dict) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _rel_l2(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(reference - got) / np.linalg.norm(reference))


def test_the_quantized_graph_has_int8_weights_per_channel_and_uint8_activations(outlier):
    prepared, feeds, tmp = outlier
    out = str(tmp / "q.onnx")
    assert int8.quantize(prepared, out, feeds, "cpu") == 3
    graph = onnx.load(out).graph
    weights = {i.name: i for i in graph.initializer}
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    kinds = {onnx.helper.tensor_dtype_to_np_dtype(weights[n.input[0]].data_type) for n in dequantized}
    assert np.dtype(np.int8) in kinds
    per_channel = [n for n in dequantized if n.output[0].endswith("weight_DequantizeLinear_Output")
                   and onnx.numpy_helper.to_array(weights[n.input[1]]).size > 1]
    assert len(per_channel) == 3  # one scale per output channel of each layer's weight (biases are int32)
    activations = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]
    assert activations and all(weights[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in activations)


def test_the_layer_reading_rounded_away_channels_is_the_most_sensitive(outlier):
    prepared, feeds, tmp = outlier
    out = str(tmp / "q.onnx")
    int8.quantize(prepared, out, feeds, "cpu")
    ranked = int8.sensitivity(prepared, out, feeds, threads=1)
    assert [name for name, _ in ranked][0] == "/c/Gemm"
    assert ranked[0][1] < 10.0 < ranked[-1][1]  # dB: its output is mostly noise; the others' are not


def test_an_operation_kept_in_float_reads_float_and_restores_accuracy(outlier):
    prepared, feeds, tmp = outlier
    full, kept = str(tmp / "q.onnx"), str(tmp / "q-float-c.onnx")
    int8.quantize(prepared, full, feeds, "cpu")
    assert int8.quantize(prepared, kept, feeds, "cpu", ["/c/Gemm"]) == 2
    reference = _run(prepared, feeds[0])
    assert _rel_l2(reference, _run(full, feeds[0])) > 0.5
    assert _rel_l2(reference, _run(kept, feeds[0])) < 0.05
    graph = onnx.load(kept).graph
    c = next(n for n in graph.node if n.name == "/c/Gemm")
    producers = {o: n for n in graph.node for o in n.output}
    relu = producers[c.input[0]]
    assert relu.op_type == "Relu" and producers[relu.input[0]].op_type == "Gemm"  # no Q/DQ pair on the way
    assert not [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in {i for m in graph.node for i in m.input} for o in n.output)]


def test_sensitivity_reads_graphs_that_list_their_weights_as_inputs(outlier):
    # Older exporters (IR < 4, Paddle2ONNX) list every initializer among the graph's inputs too.
    prepared, feeds, tmp = outlier
    model = onnx.load(prepared)
    model.graph.input.extend(onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                             for i in model.graph.initializer)
    old_style = str(tmp / "old-style.onnx")
    onnx.save(model, old_style)
    out = str(tmp / "q.onnx")
    int8.quantize(old_style, out, feeds, "cpu")
    assert int8.sensitivity(old_style, out, feeds, threads=1)[0][0] == "/c/Gemm"


def test_paddle_style_graphs_get_per_channel_int8_weights(tmp_path):
    """Opset 11, weights in Constant nodes, and a shape ONNX Runtime's symbolic inference gives up
    on: the weights still become initializers, quantized per output channel at opset 13 (as
    Constant outputs they would be rounded as activations, one uint8 scale for all channels)."""
    path = modelzoo.paddle_style_fpn_onnx(str(tmp_path))
    prepared = int8.prepare(path, str(tmp_path))
    model = onnx.load(prepared)
    assert not [n for n in model.graph.node if n.op_type == "Constant"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.random((1, 3, 64, 96)).astype(np.float32)} for _ in range(4)]
    out = str(tmp_path / "q.onnx")
    assert int8.quantize(prepared, out, feeds, "cpu") == 3
    originals = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in onnx.load(path).graph.node
                 if n.op_type == "Constant" and n.output[0].endswith(".w")}
    quantized = onnx.load(out).graph
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in quantized.initializer}
    producers = {o: n for n in quantized.node for o in n.output}
    for conv in [n for n in quantized.node if n.op_type == "Conv"]:
        dequantize = producers[conv.input[1]]
        weight, scale = constants[dequantize.input[0]], constants[dequantize.input[1]]
        assert dequantize.op_type == "DequantizeLinear" and weight.dtype == np.int8 and scale.shape == (weight.shape[0],)
        restored = weight.astype(np.float32) * scale[:, None, None, None]
        original = originals.pop(conv.name.removeprefix("p2o.") + ".w")
        per_channel_error = np.abs(restored - original).max(axis=(1, 2, 3)) / np.abs(original).max(axis=(1, 2, 3))
        assert per_channel_error.max() < 0.01  # the 1000x smaller channels kept, not rounded to zero
    assert not originals  # every Conv weight was quantized
    reference = _run(path, feeds[0])
    assert _rel_l2(reference, _run(out, feeds[0])) < 0.15


def test_preparing_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """ONNX Runtime dumps a graph whose symbolic shape inference fails (with its weights) into
    the current directory; a worker's directory must not gain a copy of the model per task."""
    path = modelzoo.paddle_style_fpn_onnx(str(tmp_path))
    work, cwd = tmp_path / "work", tmp_path / "cwd"
    work.mkdir(), cwd.mkdir()
    monkeypatch.chdir(cwd)
    int8.prepare(path, str(work))
    assert os.listdir(cwd) == []
    assert os.listdir(work) == [int8.PREPARED_FILE]
