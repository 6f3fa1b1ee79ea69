"""engines/fp16_graph.py: the FP16 graph the GPU engines build, checked numerically on the CPU
(ONNX Runtime's CPU provider, and onnx's reference evaluator where FP16 arithmetic must show)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from accelflow.core import tensor_info
from accelflow.core.modelio import ModelIO
from accelflow.core.runner import run_arrays
from accelflow.engines import fp16_graph
from accelflow.formats import onnx_model
from onnx import TensorProto, helper, numpy_helper

from tests import modelzoo


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_fp16_graph_keeps_io_types_and_matches_f32(tmp_path):
    path = modelzoo.tiny_cnn_onnx(str(tmp_path))
    out = str(tmp_path / "fp16.onnx")
    stats = fp16_graph.convert_file(path, out)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    weights = [t for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    assert stats["fp16_nodes"] == stats["nodes"]
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    name = _session(path).get_inputs()[0].name
    want, = _session(path).run(None, {name: x})
    got, = _session(out).run(None, {name: x})
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max() + 1e-3)
    assert np.abs(got - want).max() > 0  # it really computed in FP16


def _sum_of_squares(folder) -> str:
    """y = ReduceSum((8x)^2) / 4096, and x's shape (an int64 path the pass leaves alone).
    For x ~ N(0, 1) of 4096 elements the sum is ~262144: beyond FP16's 65504."""
    nodes = [
        helper.make_node("Mul", ["x", "eight"], ["xs"]),
        helper.make_node("Mul", ["xs", "xs"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["total"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["y"]),
        helper.make_node("Shape", ["x"], ["shape"]),
    ]
    graph = helper.make_graph(
        nodes, "squares",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(np.array(8.0, np.float32), "eight"),
         numpy_helper.from_array(np.array(4096.0, np.float32), "count")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # IR 8 as torch writes for opset 17; ORT 1.31 reads up to 13
    path = os.path.join(folder, "squares.onnx")
    onnx.save(model, path)
    return path


class _ReferenceRunner:
    """onnx's reference evaluator: computes in the graph's own types (numpy float16 for FP16
    nodes). ONNX Runtime's CPU provider cannot stand in here: it runs FP16 nodes it has no
    FP16 kernel for in float32 (its cast insertion), which hides FP16 overflow."""

    def __init__(self, path: str, io):
        from onnx.reference import ReferenceEvaluator

        self.evaluator, self.io, self.label = ReferenceEvaluator(path), io, "onnx reference"

    def prepare(self, arrays):
        return dict(zip(self.io.input_names, arrays))

    def run(self, feed):
        return self.evaluator.run(list(self.io.output_names), feed)

    def outputs(self, raw):
        return [np.asarray(r) for r in raw]


def test_sensitive_ops_kept_in_fp32_and_tiny_constants_survive(tmp_path):
    path = _sum_of_squares(str(tmp_path))
    io = ModelIO(["x"], ["y", "shape"], {})
    out = str(tmp_path / "mixed.onnx")
    stats = fp16_graph.convert_file(path, out, fp16_graph.SENSITIVE_OPS)
    assert stats["fp32_nodes"] == {"Div": 1, "ReduceSum": 1}
    x = [np.random.default_rng(3).standard_normal((1, 4096)).astype(np.float32)]
    want = run_arrays(onnx_model.OrtRunner(path, io, 1), x)
    got = run_arrays(_ReferenceRunner(out, io), x)
    np.testing.assert_allclose(got[0], want[0], rtol=3e-3)
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    all_fp16 = str(tmp_path / "all.onnx")
    fp16_graph.convert_file(path, all_fp16)
    assert not np.isfinite(run_arrays(_ReferenceRunner(all_fp16, io), x)[0]).all()
    assert fp16_graph.to_float16(np.array([1e-12, -1e-12, 0.0, 1e6], np.float32)).tolist() == [
        pytest.approx(2**-24), pytest.approx(-(2**-24)), 0.0, 65504.0]


def test_fp16_fallback_is_automatic_and_recorded(tmp_path):
    """The shared fallback, with onnx's reference evaluator standing in for a GPU engine."""
    path = _sum_of_squares(str(tmp_path))
    io = ModelIO(["x"], ["y", "shape"], {})
    spec = tensor_info.parse(["x:float(1*4096)"])
    runner, record = fp16_graph.build_with_fallback(path, io, spec, str(tmp_path), lambda p: _ReferenceRunner(p, io))
    assert record["fallback"] and "FP16 accuracy check" in record["fallback"]["reason"]
    assert "ReduceSum" in record["fallback"]["kept_fp32_ops"] and record["graph"]["fp32_nodes"] == {"Div": 1, "ReduceSum": 1}
    assert record["precheck"]["passed"] is True
    from accelflow.tasks.report import engine_notes

    assert engine_notes({"fp16": record})[0].startswith("FP16 fallback: the all-FP16 graph failed")
    x = [np.random.default_rng(0).standard_normal((1, 4096)).astype(np.float32)]
    assert np.isfinite(run_arrays(runner, x)[0]).all()

    (tmp_path / "cnn").mkdir()
    cnn = modelzoo.tiny_cnn_onnx(str(tmp_path / "cnn"))
    spec = tensor_info.parse(["image:float(1*3*16*16,2*3*16*16)"])
    io = onnx_model.check_inputs(cnn, spec)
    _, record = fp16_graph.build_with_fallback(cnn, io, spec, str(tmp_path / "cnn"),
                                               lambda p: onnx_model.OrtRunner(p, io, 1))
    assert record["fallback"] is None and record["precheck"]["passed"] is True
    assert engine_notes({"fp16": record}) == []
