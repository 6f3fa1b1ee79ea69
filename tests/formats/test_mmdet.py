"""MMDetection detectors (formats/mmdet_model.py): detection by content, export, post-processing,
and the whole optimize flow, on small random-weight detectors built from mmdet's own configs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.errors import UnsupportedFormatError
from accelflow.formats import detect_format, detections, find_model_file, mmdet_model

from tests.detector_checks import conversion_cache_holds_its_own_copies, features_plus_heads_match


def _mmdet_missing() -> str:
    try:
        import mmdet  # noqa: F401  (imports mmcv.ops)
    except Exception as exc:  # ImportError, or mmcv built for another torch
        return f"MMDetection is not installed with mmcv's compiled ops ({type(exc).__name__}: {exc}); see docs/detectors.md"
    return ""


MISSING = _mmdet_missing()
needs_mmdet = pytest.mark.skipif(bool(MISSING), reason=MISSING or "installed")
SPEC = ["inputs[0]:float(3*256*256,3*320*384)"]


def test_config_is_detected_by_content_with_its_checkpoint(tmp_path):
    import torch

    (tmp_path / "detector.txt").write_text("_base_ = []\nmodel = dict(\n    type='FasterRCNN')\n")
    (tmp_path / "notes.py").write_text("print('not a config')\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "detector.pth")
    assert mmdet_model.detect(str(tmp_path / "detector.txt"))
    assert not mmdet_model.detect(str(tmp_path / "notes.py"))
    assert detect_format(str(tmp_path / "detector.txt")) is mmdet_model
    assert find_model_file(str(tmp_path / "detector.txt")) == str(tmp_path / "detector.txt")
    assert mmdet_model.checkpoint_for(str(tmp_path / "detector.txt")) == str(tmp_path / "detector.pth")


def test_missing_or_ambiguous_checkpoint_is_a_clear_error(tmp_path):
    import torch

    config = tmp_path / "a.py"
    config.write_text("model = dict(type='RetinaNet')\n")
    with pytest.raises(UnsupportedFormatError, match="no checkpoint"):
        mmdet_model.checkpoint_for(str(config))
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "y.pth")
    with pytest.raises(UnsupportedFormatError, match="several checkpoints"):
        mmdet_model.checkpoint_for(str(config))
    torch.save({"w": torch.zeros(1)}, tmp_path / "a.pth")
    assert mmdet_model.checkpoint_for(str(config)) == str(tmp_path / "a.pth")


def test_tensor_information_must_be_one_image_in_inputs():
    mmdet_model.check_spec(tensor_info.parse(SPEC))
    with pytest.raises(Exception, match=r"inputs\[0\]"):
        mmdet_model.check_spec(tensor_info.parse(["input_0:float(1*3*32*32)"]))


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    if MISSING:
        pytest.skip(MISSING)
    from examples.make_detectors import make_mmdet

    out = str(tmp_path_factory.mktemp("mmdet"))
    return {name: make_mmdet(name, out) for name in ("retinanet-r18", "faster-rcnn-r18", "mask-rcnn-r18")}


@needs_mmdet
@pytest.mark.parametrize("name", ["retinanet-r18", "faster-rcnn-r18", "mask-rcnn-r18"])
def test_exported_features_plus_heads_give_the_original_detections(detectors, name, tmp_path):
    found, accuracy = features_plus_heads_match(mmdet_model, detectors[name], tensor_info.parse(SPEC), tmp_path,
                                                np.zeros((3, 288, 320), np.float32))
    assert ("masks" in found[0]) == (name == "mask-rcnn-r18")
    assert accuracy.passed, accuracy.reason
    assert accuracy.outputs[0].cosine_similarity >= 0.98


@needs_mmdet
def test_conversion_cache_entries_hold_their_own_config_and_checkpoint(detectors, tmp_path, monkeypatch):
    conversion_cache_holds_its_own_copies(mmdet_model, detectors["retinanet-r18"], tensor_info.parse(SPEC), tmp_path,
                                          monkeypatch, "state_dict")


@needs_mmdet
def test_types_mmengine_would_import_or_mmcv_would_eval_are_found(detectors):
    """Plain data still names code: MMEngine's registry imports a type it does not hold, mmcv's
    batched_nms eval()s its nms type. The stock configs name registered types only."""
    from mmengine.config import Config

    mmdet_model.import_mmdet()
    cfg = Config.fromfile(detectors["faster-rcnn-r18"])
    assert mmdet_model.unregistered_types(cfg.model) == []
    cfg.model.backbone.type = "os.system"
    cfg.model.test_cfg.rcnn.nms.type = "__import__('os').getcwd() and nms"
    cfg.model.test_cfg.rpn.nms.type = "exec"
    cfg.model.neck.type = "mmdet.FPN"  # a scoped registry name: fine
    cfg.model.roi_head.bbox_head.loss_cls.type = "subprocess"  # an importable module
    cfg.model.roi_head.cmc = dict(type="CameraMotionCompensation", warp_mode="cv2.MOTION_EUCLIDEAN")  # fine
    cfg.model.rpn_head.cmc = dict(type="CameraMotionCompensation", warp_mode="__import__('os').getcwd()")
    assert sorted(mmdet_model.unregistered_types(cfg.model)) == sorted([
        "os.system", "subprocess", "exec", "__import__('os').getcwd() and nms", "__import__('os').getcwd()"])


@needs_mmdet
def test_every_stock_config_of_the_tests_and_examples_is_plain_data(detectors):
    from examples.make_detectors import CONFIGS, mmdet_config

    assert {name: mmdet_model.code_risks(config) for name, config in detectors.items()} == dict.fromkeys(detectors, [])
    dumped = {}
    for name in CONFIGS:  # each as examples/make_detectors.py writes it: merged with its bases
        dumped[name] = os.path.join(os.path.dirname(os.path.dirname(detectors["retinanet-r18"])), f"{name}.py")
        mmdet_config(name).dump(dumped[name])
    assert {name: mmdet_model.code_risks(path) for name, path in dumped.items()} == dict.fromkeys(CONFIGS, [])


@needs_mmdet
@pytest.mark.parametrize("level", ["lossless", "fp16"])
def test_optimize_flow_on_faster_rcnn(prefect_server, detectors, level, tmp_path):
    from accelflow.flows.optimize import optimize
    from accelflow.flows.request import OptimizeRequest

    request = OptimizeRequest(model=os.path.dirname(detectors["faster-rcnn-r18"]), tensor_info=SPEC,
                              output=str(tmp_path / "out"), level=level, draws=1, bench_seconds=0.5)
    result = optimize.with_options(flow_run_name="mmdet")(request=request)
    report = json.load(open(result["report_json"]))
    assert report["format"] == "mmdet" and report["accuracy"]["passed"]
    output = report["accuracy"]["outputs"][0]
    assert output["output"] == "detections" and output["cosine_similarity"] >= output["tolerance"]["min_matched"]
    assert set(report["baseline"]) == {"min", "mid", "max"} and report["speedup"] > 0
    accurate = [c for c in report["candidates"] if c.get("accuracy", {}).get("passed")]
    assert accurate
    _loads_as_the_detector(result["result_folder"], detectors["faster-rcnn-r18"])


def _loads_as_the_detector(folder, config):
    """The result folder stands alone (its own config and checkpoint copy) and, called like
    the original (`inputs=[image]`), returns MMDetection's kind of result: per-image dicts."""
    import shutil

    import accelflow

    moved = shutil.move(folder, folder + "-moved")  # nothing may point back into the task's files
    model = accelflow.load(moved)
    assert "RoI heads (onnxruntime)" in model.runner.label  # the result's own head graphs
    image = detections.synthetic_image((3, 288, 320), np.random.default_rng(5))
    got = model(inputs=[image])
    assert isinstance(got, list) and set(got[0]) == {"bboxes", "scores", "labels"}
    spec = tensor_info.parse(SPEC)
    want = mmdet_model.baseline_runner(config, spec, None, 2)
    from accelflow.core.runner import run_arrays

    structure = model.manifest["io"]["source"]["detections_structure"]
    accuracy = detections.compare([run_arrays(want, [image])], [detections.flat(got)], structure,
                                  detections.tolerances(model.manifest["level"]))
    assert accuracy.passed and len(got[0]["scores"]) > 0, accuracy.reason
    _result_config_is_checked(moved)


def _result_config_is_checked(folder):
    """A result whose config was made to run code (by whoever could write the result folder) is
    refused by accelflow.load unless trusted; trusted, the config's code runs, as MMEngine's."""
    from accelflow.core.errors import UntrustedModelError

    import accelflow

    marker = os.path.join(folder, "MARKER")
    config = os.path.join(folder, "model", detections.RESULT_DIR, "config.py")
    text = open(config).read()
    with open(config, "w") as f:
        f.write(f"__import__('os').system('touch {marker}')\n" + text)
    with pytest.raises(UntrustedModelError, match="config.py line 1: a call to __import__"):
        accelflow.load(folder)
    assert not os.path.exists(marker)
    accelflow.load(folder, trust_model_code=True)
    assert os.path.exists(marker)
