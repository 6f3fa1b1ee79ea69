"""core/levels.py: every threshold a precision level sets, and the gate a QAT model is judged by."""

from __future__ import annotations

import dataclasses

import pytest
from accelflow.core.errors import SpecError
from accelflow.core.levels import FP16, GATES, INT8, LEVELS, LOSSLESS, QAT, Level, gate_named, level_help, level_named

# Which way each threshold tightens: a stricter level has a higher floor and a lower ceiling.
FLOORS = {"min_cosine", "min_iou", "min_matched", "min_mask_iou", "min_top1", "min_top5"}
CEILINGS = {"rtol", "atol", "max_mismatch", "max_score_diff", "max_box_diff", "score_margin", "max_rel_l2"}


def test_levels_by_name():
    assert level_named("fp16") is FP16 and level_named("lossless") is LOSSLESS
    assert level_named("FP16") is FP16 and level_named("Lossless") is LOSSLESS  # as a user may type it
    assert level_named("INT8") is INT8
    assert set(LEVELS) == {"fp16", "lossless", "int8"}


def test_the_help_names_every_level_with_what_it_gives():
    text = level_help()
    for level in LEVELS.values():
        assert f"{level.name} ({level.description})" in text and level.description


@pytest.mark.parametrize("name", ["int4", "qat", "", "fp32", None])
def test_an_unknown_level_names_the_choices(name):
    with pytest.raises(SpecError) as err:
        level_named(name)
    assert str(err.value) == f"unknown optimization level {name!r}; choose fp16, lossless or int8."


def test_gates_are_the_levels_and_qat():
    assert gate_named("fp16") is FP16 and gate_named("lossless") is LOSSLESS and gate_named("qat") is QAT
    assert gate_named("LOSSLESS") is LOSSLESS
    assert gate_named("int8") is INT8
    assert set(GATES) == {"fp16", "lossless", "int8", "qat"}
    with pytest.raises(SpecError, match="unknown optimization level 'int4'"):
        gate_named("int4")


def test_fp16_and_int8_build_below_f32_and_only_int8_quantizes():
    assert FP16.reduced_precision and INT8.reduced_precision and not LOSSLESS.reduced_precision
    assert not QAT.reduced_precision  # its engines build INT8 from the graph's quantize operations
    assert INT8.int8 and not (FP16.int8 or LOSSLESS.int8 or QAT.int8)


@pytest.mark.parametrize("kind", ["tensors", "detections"])
def test_every_level_and_gate_sets_the_same_thresholds(kind):
    keys = {name: set(getattr(level, kind)) for name, level in GATES.items()}
    assert keys["lossless"] == keys["fp16"] == keys["qat"]
    assert keys["lossless"] <= keys["int8"]  # int8 adds whole-output and top-k criteria
    assert keys["int8"] <= FLOORS | CEILINGS, "a new threshold: say above which way it tightens"


@pytest.mark.parametrize("kind", ["tensors", "detections"])
def test_int8_is_looser_than_fp16_on_every_shared_threshold(kind):
    int8, fp16 = getattr(INT8, kind), getattr(FP16, kind)
    for key in fp16:
        assert int8[key] <= fp16[key] if key in FLOORS else int8[key] >= fp16[key], key
    assert INT8.min_psnr_db < FP16.min_psnr_db


@pytest.mark.parametrize("kind", ["tensors", "detections"])
def test_lossless_is_at_least_as_strict_as_fp16_on_every_threshold(kind):
    strict, loose = getattr(LOSSLESS, kind), getattr(FP16, kind)
    for key in strict:
        if key in FLOORS:
            assert strict[key] >= loose[key], key
        else:
            assert strict[key] <= loose[key], key
    assert any(strict[k] != loose[k] for k in strict), "the levels must differ somewhere"


def test_lossless_is_strictly_stricter_where_precision_shows():
    # float summation order only, against BF16/FP16 arithmetic
    for key in ("rtol", "atol", "max_mismatch"):
        assert LOSSLESS.tensors[key] < FP16.tensors[key], key
    assert LOSSLESS.tensors["min_cosine"] > FP16.tensors["min_cosine"]
    for key in ("max_score_diff", "max_box_diff", "score_margin"):
        assert LOSSLESS.detections[key] < FP16.detections[key], key
    for key in ("min_matched", "min_mask_iou"):
        assert LOSSLESS.detections[key] > FP16.detections[key], key
    assert LOSSLESS.min_psnr_db > FP16.min_psnr_db > 0


def test_the_qat_gate():
    # INT8 kernels against the fake-quantized original: one quantization step may propagate,
    # so its tensors are judged no stricter than FP16's; detections as FP16's.
    for key, value in QAT.tensors.items():
        if key in FLOORS:
            assert value <= FP16.tensors[key], key
        else:
            assert value >= FP16.tensors[key], key
    assert QAT.detections == FP16.detections
    assert QAT.min_psnr_db is None  # a pipeline is never judged at the QAT gate
    assert QAT.name == "qat" and "qat" not in LEVELS


def test_levels_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FP16.reduced_precision = False
    assert Level("x", reduced_precision=False).tensors == {}  # no shared default dict
    assert Level("y", reduced_precision=False).tensors is not Level("z", reduced_precision=False).tensors
