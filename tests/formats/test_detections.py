"""Detections judged by IoU matching (formats/detections.py): no framework needed."""

from __future__ import annotations

import numpy as np
from accelflow.formats import detections

STRUCTURE = detections.output_structure(1, masks=False)
TOL = detections.tolerances("fp16")


def _det(boxes, scores, labels):
    return [np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(labels, np.int64)]


def test_structure_and_flat_round_trip():
    structure = detections.output_structure(2, masks=True)
    dets = [{"bboxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.zeros(1, np.int64),
             "masks": np.zeros((1, 2, 2), bool)}] * 2
    arrays = detections.flat(dets)
    assert len(arrays) == 8
    back = detections.per_image(arrays, structure)
    assert list(back[1]) == ["bboxes", "scores", "labels", "masks"]


def test_identical_detections_match_fully():
    ref = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 2])
    acc = detections.compare([ref], [ref], STRUCTURE, TOL)
    out = acc.outputs[0]
    assert acc.passed and out.cosine_similarity == 1.0 and out.max_abs_diff == 0.0 and out.mismatch_share == 0.0


def test_order_and_small_moves_are_matched_and_measured():
    ref = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 2])
    got = _det([[20, 21, 40, 40], [0, 0, 10, 11.5]], [0.49, 0.91], [2, 1])
    acc = detections.compare([ref], [got], STRUCTURE, TOL)
    out = acc.outputs[0]
    assert acc.passed and out.cosine_similarity == 1.0
    assert abs(out.max_abs_diff - 1.5) < 1e-6 and abs(out.max_rel_diff - 0.01) < 1e-6


def test_wrong_label_or_far_box_is_unmatched_and_fails():
    ref = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 2])
    got = _det([[0, 0, 10, 10], [60, 60, 80, 80]], [0.9, 0.5], [3, 2])
    acc = detections.compare([ref], [got], STRUCTURE, TOL)
    assert not acc.passed and acc.outputs[0].cosine_similarity == 0.0 and "matched" in acc.reason


def test_score_and_box_limits_per_level():
    ref = _det([[0, 0, 10, 10]], [0.9], [1])
    got = _det([[0, 0, 10, 12]], [0.8], [1])
    assert detections.compare([ref], [got], STRUCTURE, detections.tolerances("fp16")).passed is False  # score 0.1
    lossless = detections.compare([ref], [ref], STRUCTURE, detections.tolerances("lossless"))
    assert lossless.passed
    moved = detections.compare([ref], [got], STRUCTURE, detections.tolerances("lossless"))
    assert not moved.passed and "box diff" in moved.reason and "score diff" in moved.reason


def test_detections_at_the_score_threshold_may_appear_on_one_side_only():
    ref = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.055], [1, 1])
    got = _det([[0, 0, 10, 10]], [0.9], [1])
    assert detections.compare([ref], [got], STRUCTURE, TOL, score_floor=0.05).passed
    assert not detections.compare([ref], [got], STRUCTURE, TOL, score_floor=0.0).passed


def test_empty_on_both_sides_passes():
    empty = _det(np.zeros((0, 4)), [], [])
    assert detections.compare([empty], [empty], STRUCTURE, TOL).passed


def test_overrides_apply_to_detection_keys_only():
    tol = detections.tolerances("fp16", {"min_matched": 0.5, "rtol": 1.0})
    assert tol["min_matched"] == 0.5 and "rtol" not in tol


def test_detections_at_the_max_detections_cut_may_appear_on_one_side_only():
    ref = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.3], [1, 1])
    got = _det([[0, 0, 10, 10], [70, 70, 80, 80]], [0.9, 0.3], [1, 1])
    assert not detections.compare([ref], [got], STRUCTURE, TOL, 0.05).passed
    assert detections.compare([ref], [got], STRUCTURE, TOL, 0.05, max_detections=2).passed


def test_masks_of_matched_detections_are_compared_by_iou():
    structure = detections.output_structure(1, masks=True)
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:12, 2:12] = True  # 100 pixels
    shifted = np.roll(mask, 2, axis=2)  # 80 shared of 120: IoU 0.667
    ref = _det([[2, 2, 12, 12]], [0.9], [1]) + [mask]
    same = detections.compare([ref], [ref], structure, detections.tolerances("lossless"))
    assert same.passed and [o.output for o in same.outputs] == ["detections", "masks"]
    assert same.outputs[1].cosine_similarity == 1.0
    moved = detections.compare([ref], [ref[:3] + [shifted]], structure, detections.tolerances("fp16"))
    assert not moved.passed and "masks: IoU 0.667" in moved.reason
    assert moved.outputs[0].passed and not moved.outputs[1].passed
    assert abs(moved.outputs[1].cosine_similarity - 80 / 120) < 1e-9


def test_accuracy_options_are_refused_where_they_do_not_apply(tmp_path, capsys):
    """Detection thresholds on a tensor model, tensor tolerances on a detector: exit 2 before
    any work, naming the options that do apply (the config is recognised by its text alone)."""
    import torch
    from accelflow.flows.cli.main import EXIT_USER_ERROR, main

    from tests import modelzoo

    cnn = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    common = ["-t", "input_0:float(1*3*16*16)", "--output", str(tmp_path / "out")]
    assert main(["optimize", cnn, *common, "--max-box-diff", "4"]) == EXIT_USER_ERROR
    assert "--max-box-diff applies to detectors (MMDetection, Detectron2) only" in capsys.readouterr().err
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "config.py").write_text("model = dict(type='FasterRCNN')\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, detector / "config.pth")
    spec = ["-t", "inputs[0]:float(3*64*64)", "--output", str(tmp_path / "out")]
    assert main(["optimize", str(detector), *spec, "--rtol", "0.1", "--min-cosine", "0.9"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "--rtol, --min-cosine: this mmdet detector is judged on its detections" in err and "--min-matched" in err
    assert not (tmp_path / "out").exists()


def _result_folder(tmp_path, config_name: str, text: str) -> tuple[str, dict]:
    """A saved detector result's model folder (as tasks/package.py writes it) with this config."""
    folder = tmp_path / "result" / "model"
    (folder / detections.RESULT_DIR).mkdir(parents=True)
    (folder / detections.RESULT_DIR / config_name).write_text(text)
    source = {"detector": "mmdet", "config": f"{detections.RESULT_DIR}/{config_name}",
              "checkpoint": f"{detections.RESULT_DIR}/config.pth"}
    return str(folder), {"source": source}


def test_a_saved_results_config_is_checked_before_it_is_read(tmp_path):
    """accelflow.load reads a detector result's config with MMEngine/Detectron2: a result whose
    config would run code (written by whoever could write the result) is refused unless trusted."""
    import pytest
    from accelflow.core.errors import UntrustedModelError
    from accelflow.formats import detectron2_model, mmdet_model

    marker = tmp_path / "MARKER"
    cases = ((mmdet_model, "config.py", f"__import__('os').system('touch {marker}')\nmodel = dict(type='RetinaNet')\n",
              "config.py line 1: a call to __import__"),
             (detectron2_model, "config.yaml", f"MODEL:\n  DEVICE: !!python/object/apply:os.system ['touch {marker}']\n",
              "config.yaml line 2: a YAML tag"))
    for fmt, name, text, named in cases:
        folder, io = _result_folder(tmp_path / fmt.NAME, name, text)
        with pytest.raises(UntrustedModelError, match="--trust-model-code") as refused:
            detections.candidate(fmt, None, io, 1, folder)
        assert named in str(refused.value)
        assert not marker.exists()
        # trusted, it is read (tests/formats/test_mmdet.py: accelflow.load(..., trust_model_code=True))


def test_a_saved_results_config_outside_its_folder_is_refused(tmp_path):
    import pytest
    from accelflow.core.errors import EngineError
    from accelflow.formats import mmdet_model

    folder, io = _result_folder(tmp_path, "config.py", "model = dict(type='RetinaNet')\n")
    io["source"]["config"] = "../../elsewhere/config.py"
    with pytest.raises(EngineError, match="outside the result folder"):
        detections.candidate(mmdet_model, None, io, 1, folder, trusted=True)


def test_located_names_a_conversions_own_copies_in_its_folder(tmp_path):
    io = {"source": {"detector": "mmdet", "config": "config.py", "checkpoint": "config.pth", "score_thr": 0.05}}
    located = detections.located(io, str(tmp_path))
    assert located["source"] == dict(io["source"], config=str(tmp_path / "config.py"),
                                     checkpoint=str(tmp_path / "config.pth"))
    assert detections.located({"source": {}}, str(tmp_path)) == {"source": {}}  # not a detector: as it was
