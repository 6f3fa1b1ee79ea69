"""tasks/verify.py: the accuracy step runs the original and every built candidate on the same
inputs and judges each at the task's gate (the comparison itself: tests/core/test_accuracy.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from accelflow.core import tensor_info
from accelflow.core.errors import ModelMismatchError
from accelflow.formats import mmdet_model, onnx_model
from accelflow.tasks.build import build_candidate
from accelflow.tasks.context import AccuracyCheck
from accelflow.tasks.runners import RunnerPool
from accelflow.tasks.verify import check_overrides, verify_candidates
from onnx import numpy_helper


def _drifted(path: str, out: str, factor: float) -> str:
    """The same CNN with its last layer's weights scaled: outputs off by about (factor - 1)."""
    model = onnx.load(path)
    weight = next(t for t in model.graph.initializer if t.name == "head.weight")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    onnx.save(model, out)
    return out


@pytest.fixture
def candidates(onnx_ctx, tmp_path):
    """An exact candidate (OpenVINO f32 of the model) and a drifted one (ONNX Runtime f32 of a
    copy 0.1 % off), both built by the build step, in one pool."""
    pool = RunnerPool()
    exact = build_candidate(onnx_ctx, "openvino", "f32", pool)
    drifted_ctx = replace(onnx_ctx, onnx_path=_drifted(onnx_ctx.onnx_path, str(tmp_path / "drift.onnx"), 1.001),
                          work_dir=str(tmp_path / "drift-work"))
    drifted = build_candidate(drifted_ctx, "onnxruntime", "f32", pool)
    assert not exact.error and not drifted.error
    yield pool, exact, drifted
    pool.close()


def test_each_candidate_is_judged_at_the_gate(onnx_ctx, candidates):
    pool, exact, drifted = candidates
    lossless = verify_candidates(onnx_ctx, [exact, drifted], AccuracyCheck("lossless"), pool)
    assert set(lossless) == {"openvino-f32", "onnxruntime-f32"}
    assert lossless["openvino-f32"].passed
    assert not lossless["onnxruntime-f32"].passed
    assert lossless["onnxruntime-f32"].reason.startswith("logits: max abs diff")
    fp16 = verify_candidates(onnx_ctx, [exact, drifted], AccuracyCheck("fp16"), pool)
    assert fp16["openvino-f32"].passed and fp16["onnxruntime-f32"].passed


def test_overrides_loosen_the_gate(onnx_ctx, candidates):
    pool, _, drifted = candidates
    accuracy = verify_candidates(onnx_ctx, [drifted], AccuracyCheck("lossless", {"rtol": 0.01}), pool)
    out = accuracy["onnxruntime-f32"].outputs[0]
    assert accuracy["onnxruntime-f32"].passed and out.tolerance["rtol"] == 0.01
    assert out.tolerance["atol"] == 1e-5  # the rest stays lossless


def test_random_draws_cover_every_shape_point(onnx_ctx, candidates):
    pool, exact, _ = candidates
    accuracy = verify_candidates(onnx_ctx, [exact], AccuracyCheck("lossless", draws=2), pool)
    assert accuracy["openvino-f32"].draws == 2 * len(onnx_ctx.spec.shape_points())


def test_the_users_samples_replace_the_random_draws(onnx_ctx, candidates, tmp_path):
    pool, exact, _ = candidates
    samples = tmp_path / "samples.npz"
    rng = np.random.default_rng(5)
    np.savez(samples, **{f"{i}/image": rng.standard_normal((b, 3, 16, 16)).astype(np.float32)
                         for i, b in enumerate((1, 2, 2))})
    accuracy = verify_candidates(onnx_ctx, [exact], AccuracyCheck("lossless", samples=str(samples)), pool)
    assert accuracy["openvino-f32"].passed and accuracy["openvino-f32"].draws == 3


def test_an_original_failing_at_a_declared_shape_is_the_users_to_fix(onnx_ctx):
    # the tensor information allows 24 columns; the CNN's graph takes 16 only
    ctx = replace(onnx_ctx, spec=tensor_info.parse(["image:float(1*3*16*16,2*3*16*24)"]))
    with RunnerPool() as pool, pytest.raises(ModelMismatchError, match=r"the original model fails at shape point "
                                             r"\w+ \(inputs \(\d, 3, 16, (2\d)\)\)"):
        verify_candidates(ctx, [], AccuracyCheck("fp16"), pool)


def test_detection_options_on_a_tensor_model_are_refused_before_any_run(onnx_ctx):
    with RunnerPool() as pool:
        with pytest.raises(ModelMismatchError, match="--min-matched, --max-box-diff applies to detectors"):
            verify_candidates(onnx_ctx, [], AccuracyCheck("fp16", {"min_matched": 0.9, "max_box_diff": 2.0}), pool)
        # nothing was loaded: the pool's first baseline is loaded now
        first = pool.baseline(onnx_ctx)
        assert pool.baseline(onnx_ctx) is first


def test_options_must_fit_the_kind_of_outputs():
    check_overrides(onnx_model, {"rtol": 1e-3, "atol": 1e-4, "min_cosine": 0.99})
    check_overrides(onnx_model, None)
    check_overrides(mmdet_model, {"min_matched": 0.9, "max_score_diff": 0.1})
    with pytest.raises(ModelMismatchError, match="--rtol: this mmdet detector is judged on its detections"):
        check_overrides(mmdet_model, {"rtol": 1e-3})
    with pytest.raises(ModelMismatchError, match="--min-mask-iou applies to detectors .* this model is onnx"):
        check_overrides(onnx_model, {"min_mask_iou": 0.5})

