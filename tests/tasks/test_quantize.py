"""tasks/quantize.py: calibration inputs from the user's files or drawn, and the quantized model's record."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from accelflow.core.errors import ModelMismatchError
from accelflow.tasks.quantize import DRAWN_PER_SHAPE, DRAWN_WARNING, Calibration, calibration_feeds, quantize_model
from accelflow.tasks.runners import RunnerPool


def test_drawn_calibration_covers_every_shape_point_in_the_graph_types(onnx_ctx):
    feeds = calibration_feeds(onnx_ctx, Calibration())
    assert len(feeds) == DRAWN_PER_SHAPE * len(onnx_ctx.spec.shape_points())
    assert {f["image"].shape[0] for f in feeds} == {1, 2} and all(f["image"].dtype == np.float32 for f in feeds)


def test_calibration_files_are_read_in_order(onnx_ctx, tmp_path):
    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"c{k}.npz"))
        np.savez(paths[-1], image=np.full((1, 3, 16, 16), k, dtype=np.float64))  # cast to the graph's type
    feeds = calibration_feeds(onnx_ctx, Calibration(tuple(paths), "calibration"))
    assert [float(f["image"].max()) for f in feeds] == [0.0, 1.0] and feeds[0]["image"].dtype == np.float32


def test_a_graph_input_the_tensor_information_lacks_is_refused(onnx_ctx):
    ctx = onnx_ctx.__class__(**{**onnx_ctx.__dict__, "io": dict(onnx_ctx.io, input_names=["other"])})
    with pytest.raises(ModelMismatchError, match="INT8 calibration"):
        calibration_feeds(ctx, Calibration())


def test_the_quantized_model_says_how_it_was_made(onnx_ctx):
    with RunnerPool() as pool:
        drawn = quantize_model(onnx_ctx, Calibration(), [], pool)
        node = next(n.name for n in onnx.load(drawn.onnx_path).graph.node if n.op_type == "Conv")
        kept = quantize_model(onnx_ctx, Calibration(), [node], pool)
    assert os.path.dirname(drawn.onnx_path) != os.path.dirname(kept.onnx_path)  # each attempt its own graph
    assert drawn.warnings == [DRAWN_WARNING] and drawn.calibration.startswith("drawn from the tensor information")
    assert kept.excluded == [node] and kept.quantized_ops == drawn.quantized_ops - 1
    assert "per-channel int8 weights" in drawn.method
