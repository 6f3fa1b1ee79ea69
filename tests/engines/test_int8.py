"""engines/int8.py: the calibrated QDQ graph, per-operation sensitivity, operations kept in float."""

from __future__ import annotations

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
