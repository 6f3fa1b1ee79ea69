"""tasks/quantize_heads.py on its own: which operations belong to which graph, and a head graph
that no calibration image reached stays float. The head graphs of real detectors, calibrated
inside them, are tested in tests/formats/test_mmdet_roi_heads.py and test_detectron2.py
(tests/detector_checks.int8_head_graphs_follow_the_float_ones)."""

from __future__ import annotations

import filecmp

import numpy as np
import onnx
from accelflow.core import tensor_info
from accelflow.tasks import quantize_heads
from accelflow.tasks.context import ModelContext
from onnx import TensorProto, helper, numpy_helper


def _head_graph(path, seed: int) -> None:
    """rois-free stand-in for a head graph: x (N, 16) -> Gemm -> Relu -> Gemm -> y (N, 4)."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 4)), ("b2", (4,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_excluded_operations_are_split_by_graph():
    own, heads = quantize_heads.split_excluded(["/neck/0/conv/Conv", "roi_bbox_0.onnx:/head/fc/Gemm",
                                                "roi_bbox_0.onnx:/head/fc_2/Gemm", "roi_mask_1.onnx:/conv/Conv"])
    assert own == ["/neck/0/conv/Conv"]
    assert heads == {"roi_bbox_0.onnx": ["/head/fc/Gemm", "/head/fc_2/Gemm"], "roi_mask_1.onnx": ["/conv/Conv"]}
    assert quantize_heads.head_graphs({"source": {}, "input_names": ["x"]}) == []


def test_each_reached_graph_is_quantized_and_one_never_reached_stays_float(tmp_path):
    conversion = tmp_path / "conversion"
    conversion.mkdir()
    (conversion / "config.py").write_text("model = dict()\n")
    graphs = [{"kind": "bbox", "stage": 0, "file": "roi_bbox_0.onnx", "levels": 1},
              {"kind": "mask", "stage": 0, "file": "roi_mask_0.onnx", "levels": 1}]
    for seed, graph in enumerate(graphs):
        _head_graph(conversion / graph["file"], seed)
    io = {"source": {"detector": "mmdet", "config": str(conversion / "config.py"), "roi_heads": graphs}}
    ctx = ModelContext(str(conversion / "config.py"), "mmdet", tensor_info.parse(["x:float(3*8*8)"]),
                       str(tmp_path / "work"), 1, io=io)
    rng = np.random.default_rng(0)
    feeds = {"roi_bbox_0.onnx": [{"x": rng.normal(size=(50, 16)).astype(np.float32)} for _ in range(4)]}
    folder = tmp_path / "int8"
    entries, count = quantize_heads.quantize(ctx, feeds, str(folder), {"roi_bbox_0.onnx": ["fc2"]})
    assert count == 1  # fc1; fc2 kept in float
    assert [e.get("int8", False) for e in entries] == [True, False]
    quantized = onnx.load(str(folder / "roi_bbox_0.onnx")).graph.node
    assert any(n.op_type == "QuantizeLinear" for n in quantized)
    assert filecmp.cmp(folder / "roi_mask_0.onnx", conversion / "roi_mask_0.onnx", shallow=False)
    ranked = quantize_heads.sensitivity(ctx, entries, feeds, str(folder))
    assert [name for name, _ in ranked] == ["roi_bbox_0.onnx:fc1"] and np.isfinite(ranked[0][1])
