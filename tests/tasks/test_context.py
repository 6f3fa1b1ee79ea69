"""tasks/context.py: what every step knows of the model, one frozen value, and the accuracy check."""

from __future__ import annotations

import dataclasses

import pytest
from accelflow.core import tensor_info
from accelflow.core.accuracy import DRAWS_PER_SHAPE
from accelflow.tasks.context import AccuracyCheck, ModelContext
from accelflow.tasks.convert import convert_to_onnx

from tests.tasks.conftest import CNN_INFO


def test_a_new_context_is_not_converted_yet(cnn_onnx, tmp_path):
    ctx = ModelContext(cnn_onnx, "onnx", tensor_info.parse(CNN_INFO), str(tmp_path), threads=2)
    assert (ctx.onnx_path, ctx.io, ctx.device, ctx.int_ranges) == ("", {}, "cpu", None)
    assert ctx.spec.lines() == tensor_info.parse(CNN_INFO).lines()


def test_converted_is_a_new_context_with_the_onnx_model(cnn_onnx, tmp_path):
    ctx = ModelContext(cnn_onnx, "onnx", tensor_info.parse(CNN_INFO), str(tmp_path), threads=2, device="cuda",
                       int_ranges={"ids": (0, 9)})
    converted = convert_to_onnx(ctx)
    after = ctx.converted(converted)
    assert (after.onnx_path, after.io) == (converted.onnx_path, converted.io)
    assert after.io["input_names"] == ["image"]
    assert (ctx.onnx_path, ctx.io) == ("", {})  # the context it came from is unchanged
    unchanged = ("model_file", "format", "spec", "work_dir", "threads", "device", "int_ranges")
    assert all(getattr(after, k) == getattr(ctx, k) for k in unchanged)


def test_contexts_are_frozen(onnx_ctx):
    with pytest.raises(dataclasses.FrozenInstanceError):
        onnx_ctx.threads = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        AccuracyCheck("fp16").gate = "lossless"


def test_two_contexts_do_not_share_their_io(cnn_onnx, tmp_path):
    spec = tensor_info.parse(CNN_INFO)
    first, second = (ModelContext(cnn_onnx, "onnx", spec, str(tmp_path), 1) for _ in range(2))
    first.io["input_names"] = ["x"]
    assert second.io == {}


def test_the_accuracy_check_defaults_to_random_draws_at_the_gate():
    check = AccuracyCheck("lossless")
    assert (check.gate, check.overrides, check.samples, check.draws) == ("lossless", None, None, DRAWS_PER_SHAPE)
