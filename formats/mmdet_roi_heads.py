"""MMDetection RoI heads as ONNX graphs, run in ONNX Runtime after the engine.

For each stage of a StandardRoIHead or CascadeRoIHead, `export` writes a box graph (the FPN
levels its RoI extractor reads + rois (N, 5: batch index, x1, y1, x2, y2) -> cls_score,
bbox_pred) and, for a mask head, a mask graph (levels + rois -> mask logits): multi-level
RoIAlign (ONNX RoiAlign, opset 16's half_pixel mode for mmcv's aligned=True) and the heads'
layers. `attach` then answers the RoI head's `_bbox_forward`/`_mask_forward` with those
graphs, so that MMDetection's own code still decodes boxes, runs NMS and pastes masks.

What is not expressed is left to PyTorch: an extractor other than SingleRoIExtractor with
average RoIAlign, a shared head (the caffe C4 models), another RoI head class (HTC, SCNet,
...). For those `export` returns no graphs and the whole head stays in mmdet's code.
"""

from __future__ import annotations

import inspect
import os

from accelflow.formats.roi_graphs import HeadGraph, Unsupported, example_rois, export_graph, head_module, sessions

__all__ = ["export", "attach", "HeadGraph", "Unsupported"]


def _mmcv_roi_align(feat, rois, size, scale, ratio, aligned):
    from mmcv.ops import roi_align

    return roi_align(feat, rois, size, scale, ratio, "avg", aligned)


def _layer_settings(extractor) -> list[tuple]:
    """(out_h, out_w, spatial scale, sampling ratio, aligned) of each level's RoIAlign."""
    if type(extractor).__name__ != "SingleRoIExtractor":
        raise Unsupported(f"RoI extractor {type(extractor).__name__}")
    settings = []
    for layer in extractor.roi_layers:
        if type(layer).__name__ != "RoIAlign" or getattr(layer, "pool_mode", "avg") != "avg":
            raise Unsupported(f"RoI layer {type(layer).__name__} ({getattr(layer, 'pool_mode', '')})")
        h, w = layer.output_size
        settings.append((int(h), int(w), float(layer.spatial_scale), int(layer.sampling_ratio), bool(layer.aligned)))
    return settings


def _head_module(extractor, head):
    """levels..., rois -> head(multi-level RoIAlign): SingleRoIExtractor.forward as a graph."""
    return head_module(_mmcv_roi_align, _layer_settings(extractor), extractor.map_roi_levels, head)


def _stages(roi_head) -> list[tuple]:
    """(stage, box extractor, box head, mask extractor, mask head) for every stage, or Unsupported."""
    kind = type(roi_head).__name__
    if kind not in ("StandardRoIHead", "CascadeRoIHead"):
        raise Unsupported(f"RoI head {kind}")
    if getattr(roi_head, "with_shared_head", False):
        raise Unsupported("a shared head")
    if kind == "StandardRoIHead":
        mask = (roi_head.mask_roi_extractor, roi_head.mask_head) if roi_head.with_mask else (None, None)
        return [(0, roi_head.bbox_roi_extractor, roi_head.bbox_head, *mask)]
    stages = []
    for s in range(roi_head.num_stages):
        mask = (roi_head.mask_roi_extractor[s], roi_head.mask_head[s]) if roi_head.with_mask else (None, None)
        stages.append((s, roi_head.bbox_roi_extractor[s], roi_head.bbox_head[s], *mask))
    return stages


def export(model, feats, image_hw, out_dir: str) -> list[dict]:
    """The RoI head's graphs written to out_dir; one entry per graph: kind ("bbox" or "mask"),
    stage, file (a name in out_dir), levels (how many FPN levels it reads). [] when the head
    is not expressed here (it then runs in PyTorch as a whole)."""
    roi_head = getattr(model, "roi_head", None)
    if roi_head is None:
        return []
    try:
        stages = _stages(roi_head)
        rois = example_rois(image_hw)
        graphs = []
        for stage, box_extractor, box_head, mask_extractor, mask_head in stages:
            graphs.append(_export_one(box_extractor, box_head, feats, rois, "bbox", stage, out_dir))
            if mask_head is not None:
                graphs.append(_export_one(mask_extractor, mask_head, feats, rois, "mask", stage, out_dir))
    except Unsupported:
        return []
    return graphs


def _export_one(extractor, head, feats, rois, kind: str, stage: int, out_dir: str) -> dict:
    import torch
    from accelflow.formats.detections import quiet

    module = _head_module(extractor, head)
    levels = int(extractor.num_inputs)
    with torch.no_grad(), quiet():
        found = module(*feats[:levels], rois)
    if kind == "bbox" and (not isinstance(found, tuple) or any(not torch.is_tensor(t) for t in found)):
        raise Unsupported("a box head without a plain (cls_score, bbox_pred) output")
    name = f"roi_{kind}_{stage}.onnx"
    outputs = ["cls_score", "bbox_pred"] if kind == "bbox" else ["mask_pred"]
    export_graph(module, list(feats[:levels]), rois, outputs, os.path.join(out_dir, name))
    return {"kind": kind, "stage": stage, "file": name, "levels": levels}


# ------------------------------------------------------------ at post-processing

def attach(roi_head, graphs: list[dict], folder: str, threads: int) -> dict:
    """Answer the RoI head's box and mask forwards (per stage) with the graphs (files in folder);
    the HeadGraph sessions, by (kind, stage)."""
    graphs_by_stage = sessions(graphs, folder, threads)
    box = inspect.signature(roi_head._bbox_forward)
    mask = inspect.signature(roi_head._mask_forward) if getattr(roi_head, "with_mask", False) else None

    def bbox_forward(*args, **kwargs):
        called = box.bind(*args, **kwargs).arguments
        cls_score, bbox_pred = graphs_by_stage["bbox", called.get("stage", 0)](called["x"], called["rois"])
        return {"cls_score": cls_score, "bbox_pred": bbox_pred, "bbox_feats": None}

    def mask_forward(*args, **kwargs):
        called = mask.bind(*args, **kwargs).arguments
        (mask_pred,) = graphs_by_stage["mask", called.get("stage", 0)](called["x"], called["rois"])
        return {"mask_preds": mask_pred, "mask_feats": None}

    roi_head._bbox_forward = bbox_forward
    if mask is not None:
        roi_head._mask_forward = mask_forward
    return graphs_by_stage
