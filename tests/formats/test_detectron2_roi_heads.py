"""Detectron2 RoI heads as ONNX graphs (formats/detectron2_roi_heads.py): each graph gives the
PyTorch head's outputs, and the feature graph plus the head graphs give the original's
detections, for Faster R-CNN and a Cascade Mask R-CNN (small detectors, examples/make_detectors.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.formats import detections, detectron2_model, detectron2_roi_heads, onnx_model, roi_graphs

from tests.detector_checks import features_plus_heads_match
from tests.formats.test_detectron2 import MISSING, SPEC

pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING or "installed")
NAMES = ("faster-rcnn-r18", "cascade-mask-rcnn-r18")


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    from examples.make_detectors import make_detectron2

    out = str(tmp_path_factory.mktemp("d2-heads"))
    return {name: make_detectron2(name, out) for name in NAMES}


@pytest.fixture(scope="module")
def converted(detectors, tmp_path_factory):
    """name -> (ONNX path, io) of each detector's conversion."""
    found = {}
    for name, config in detectors.items():
        out = str(tmp_path_factory.mktemp(name))
        example = [np.zeros((3, 288, 320), np.float32)]
        found[name] = detectron2_model.to_onnx(config, tensor_info.parse(SPEC), out, example)
    return found


def _rois(h: int, w: int, count: int, small_only: bool = False):
    """Random boxes of many sizes (or only small ones: the coarser levels get no RoI)."""
    import torch

    g = torch.Generator().manual_seed(count)
    top = 40.0 if small_only else float(min(h, w))
    size = 4 + torch.rand(count, 2, generator=g) * (top - 4)
    x1 = torch.rand(count, generator=g) * (w - 4)
    y1 = torch.rand(count, generator=g) * (h - 4)
    boxes = torch.stack([x1, y1, (x1 + size[:, 0]).clamp(max=w), (y1 + size[:, 1]).clamp(max=h)], 1)
    return torch.cat([torch.zeros(count, 1), boxes], 1)


def _features(model, shape):
    import torch

    image = torch.from_numpy(detections.synthetic_image(shape, np.random.default_rng(1)))
    with torch.no_grad():
        return model.backbone(detectron2_model.graph_input(model, image))


@pytest.mark.parametrize("name", NAMES)
def test_each_head_graph_gives_the_pytorch_heads_outputs(detectors, converted, name):
    onnx_path, io = converted[name]
    graphs = io.source["roi_heads"]
    assert {(g["kind"], g["stage"]) for g in graphs} == (
        {("bbox", 0)} if name == "faster-rcnn-r18" else {("bbox", 0), ("bbox", 1), ("bbox", 2), ("mask", 0)})
    model = detectron2_model.load(detectors[name])
    feats = _features(model, (3, 320, 384))
    for rois in (_rois(320, 384, 300), _rois(320, 384, 7, small_only=True)):
        for graph in graphs:
            levels = [feats[f] for f in graph["in_features"]]
            want = _torch_head(model.roi_heads, graph, levels, rois)
            got = roi_graphs.HeadGraph(os.path.join(os.path.dirname(onnx_path), graph["file"]), graph["levels"], 2)(
                levels, rois)
            for w, g in zip(want, got):
                assert w.shape == g.shape
                scale = float(w.abs().max())
                np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-4 * max(scale, 1.0), rtol=1e-4)


def _torch_head(roi_heads, graph, levels, rois):
    """Detectron2's own pooler and head on the same RoIs (as Boxes of one image)."""
    import torch
    from detectron2.structures import Boxes

    boxes = [Boxes(rois[:, 1:5])]
    cascade = type(roi_heads).__name__ == "CascadeROIHeads"
    with torch.no_grad():
        if graph["kind"] == "mask":
            return [roi_heads.mask_head.layers(roi_heads.mask_pooler(levels, boxes))]
        stage = graph["stage"]
        head = roi_heads.box_head[stage] if cascade else roi_heads.box_head
        predictor = roi_heads.box_predictor[stage] if cascade else roi_heads.box_predictor
        return list(predictor(head(roi_heads.box_pooler(levels, boxes))))


@pytest.mark.parametrize("name", NAMES)
def test_features_plus_head_graphs_give_the_original_detections(detectors, name, tmp_path):
    found, accuracy = features_plus_heads_match(detectron2_model, detectors[name], tensor_info.parse(SPEC),
                                                tmp_path, np.zeros((3, 288, 320), np.float32))
    assert ("masks" in found[0]) == (name == "cascade-mask-rcnn-r18")
    assert accuracy.passed, accuracy.reason
    assert accuracy.outputs[0].cosine_similarity >= 0.98


def test_a_packaged_result_carries_and_uses_its_head_graphs(converted, tmp_path):
    """detections.package copies the graphs beside the result's config; the candidate built
    from the result folder runs them (its label says so) and gives the conversion's detections."""
    from accelflow.core.runner import run_arrays

    onnx_path, io = converted["cascade-mask-rcnn-r18"]
    located = detections.located(io.to_dict(), os.path.dirname(onnx_path))
    model_dir = str(tmp_path / "model")
    packaged = detections.package(detectron2_model, model_dir, located)
    for graph in io.source["roi_heads"]:
        assert os.path.isfile(os.path.join(model_dir, detections.RESULT_DIR, graph["file"]))
    runner = onnx_model.OrtRunner(onnx_path, io, 2)
    from_result = detections.candidate(detectron2_model, runner, packaged, 2, folder=model_dir)
    in_task = detections.candidate(detectron2_model, runner, located, 2)
    assert "RoI heads (onnxruntime)" in from_result.label
    _, arrays = detections.image_draws(tensor_info.parse(SPEC), 1)[0]
    accuracy = detections.compare([run_arrays(in_task, arrays)], [run_arrays(from_result, arrays)],
                                  io.source["detections_structure"], detections.tolerances("lossless"))
    assert accuracy.passed and accuracy.outputs[0].max_abs_diff == 0.0, accuracy.reason


def test_a_head_the_graphs_do_not_express_stays_in_pytorch(detectors):
    """ROIPool (max pooling, which ONNX RoiAlign does not do as torchvision does) is not
    exported: no graphs at all, so the whole RoI head runs in Detectron2's code."""
    from detectron2.modeling.poolers import ROIPooler

    model = detectron2_model.load(detectors["faster-rcnn-r18"])
    feats = _features(model, (3, 64, 64))
    model.roi_heads.box_pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIPool")
    assert detectron2_roi_heads.export(model, feats, (64, 64), "/nonexistent") == []
