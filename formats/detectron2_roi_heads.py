"""Detectron2 RoI heads as ONNX graphs, run in ONNX Runtime after the engine.

For StandardROIHeads and CascadeROIHeads, `export` writes per stage a box graph (the FPN levels
of box_in_features + rois (N, 5: batch index, x1, y1, x2, y2) -> scores, proposal_deltas: the
ROIPooler's level assignment and RoIAlign, box head, box predictor's layers) and, for a mask
head, a mask graph (mask_in_features + rois -> mask logits). `attach` answers the heads'
forwards with those graphs, so that Detectron2's own code still decodes boxes, runs NMS, feeds
each cascade stage's boxes to the next and pastes masks.

What is not expressed stays in PyTorch: another pooler than ROIAlign/ROIAlignV2 (ROIPool,
rotated boxes), a mask head other than MaskRCNNConvUpsampleHead, other RoI head classes
(e.g. Res5ROIHeads of the C4 models); keypoint heads always. For those `export` returns no
graphs and the whole RoI head runs in Detectron2's code.
"""

from __future__ import annotations

import os

from accelflow.formats.roi_graphs import Unsupported, example_rois, export_graph, head_module, sessions

__all__ = ["export", "attach"]
_HEADS = ("StandardROIHeads", "CascadeROIHeads")


def _torchvision_roi_align(feat, rois, size, scale, ratio, aligned):
    from torchvision.ops import roi_align  # what detectron2.layers.ROIAlign calls

    return roi_align(feat, rois, size, scale, ratio, aligned)


def _pooler_settings(pooler) -> list[tuple]:
    """(out_h, out_w, spatial scale, sampling ratio, aligned) of each level's ROIAlign."""
    if type(pooler).__name__ != "ROIPooler":
        raise Unsupported(f"pooler {type(pooler).__name__}")
    settings = []
    for layer in pooler.level_poolers:
        if type(layer).__name__ != "ROIAlign":
            raise Unsupported(f"pooling layer {type(layer).__name__}")
        h, w = layer.output_size if isinstance(layer.output_size, (tuple, list)) else (layer.output_size,) * 2
        settings.append((int(h), int(w), float(layer.spatial_scale), int(layer.sampling_ratio), bool(layer.aligned)))
    return settings


def _levels(pooler):
    """detectron2.modeling.poolers.assign_boxes_to_levels on (N, 5) rois (FPN paper, eqn. 1);
    all on the one level of a single-level pooler."""
    import torch

    def assign(rois, count: int):
        if count == 1:
            return torch.zeros_like(rois[:, 0], dtype=torch.int64)
        boxes = rois[:, 1:5]
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(pooler.canonical_level + torch.log2(sizes / pooler.canonical_box_size + 1e-8))
        return torch.clamp(levels, min=pooler.min_level, max=pooler.max_level).to(torch.int64) - pooler.min_level

    return assign


def _head_module(pooler, head):
    """levels..., rois -> head(ROIPooler(levels, rois)) as one module."""
    return head_module(_torchvision_roi_align, _pooler_settings(pooler), _levels(pooler), head)


def _box_head(box_head, box_predictor):
    """box_head then box_predictor's layers: pooled -> (scores, proposal_deltas)."""
    import torch

    class BoxHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.box_head, self.box_predictor = box_head, box_predictor

        def forward(self, pooled):
            return tuple(self.box_predictor(self.box_head(pooled)))

    return BoxHead()


def _mask_head(mask_head):
    """The mask head's layers (convolutions, deconvolution, predictor): pooled -> mask logits."""
    import torch

    if type(mask_head).__name__ != "MaskRCNNConvUpsampleHead":
        raise Unsupported(f"mask head {type(mask_head).__name__}")

    class MaskHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mask_head = mask_head

        def forward(self, pooled):
            return self.mask_head.layers(pooled)

    return MaskHead()


def _graphs_to_write(roi_heads) -> list[tuple]:
    """(kind, stage, pooler, in_features, head module) of every graph, or Unsupported."""
    kind = type(roi_heads).__name__
    if kind not in _HEADS:
        raise Unsupported(f"RoI heads {kind}")
    if kind == "CascadeROIHeads":
        boxes = [("bbox", k, roi_heads.box_pooler, roi_heads.box_in_features,
                  _box_head(roi_heads.box_head[k], roi_heads.box_predictor[k])) for k in range(roi_heads.num_cascade_stages)]
    else:
        boxes = [("bbox", 0, roi_heads.box_pooler, roi_heads.box_in_features,
                  _box_head(roi_heads.box_head, roi_heads.box_predictor))]
    if not roi_heads.mask_on:
        return boxes
    if roi_heads.mask_pooler is None:
        raise Unsupported("a mask head without a pooler")
    return boxes + [("mask", 0, roi_heads.mask_pooler, roi_heads.mask_in_features, _mask_head(roi_heads.mask_head))]


def export(model, feats: dict, image_hw, out_dir: str) -> list[dict]:
    """The RoI heads' graphs written to out_dir; one entry per graph: kind ("bbox" or "mask"),
    stage, file (a name in out_dir), levels (how many FPN levels it reads), in_features (their
    names). [] when the heads are not expressed here (they then run in PyTorch as a whole)."""
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None:
        return []
    try:
        to_write = _graphs_to_write(roi_heads)
        rois = example_rois(image_hw)
        return [_export_one(*entry, feats, rois, out_dir) for entry in to_write]
    except Unsupported:
        return []


def _export_one(kind: str, stage: int, pooler, in_features, head, feats: dict, rois, out_dir: str) -> dict:
    import torch
    from accelflow.formats.detections import quiet

    module = _head_module(pooler, head)
    levels = [feats[f] for f in in_features]
    with torch.no_grad(), quiet():
        found = module(*levels, rois)
    if kind == "bbox" and (len(found) != 2 or any(not torch.is_tensor(t) for t in found)):
        raise Unsupported("a box predictor without a plain (scores, proposal_deltas) output")
    name = f"roi_{kind}_{stage}.onnx"
    outputs = ["scores", "proposal_deltas"] if kind == "bbox" else ["mask_logits"]
    export_graph(module, levels, rois, outputs, os.path.join(out_dir, name))
    return {"kind": kind, "stage": stage, "file": name, "levels": len(levels), "in_features": list(in_features)}


# ------------------------------------------------------------ at post-processing

def _rois(box_lists):
    """Detectron2's pooler format of a batch's Boxes: (N, 5) with the image index first."""
    from detectron2.modeling.poolers import convert_boxes_to_pooler_format

    return convert_boxes_to_pooler_format(box_lists)


def attach(roi_heads, graphs: list[dict], folder: str, threads: int) -> dict:
    """Answer the RoI heads' box stages and mask head with the graphs (files in folder):
    StandardROIHeads._forward_box / CascadeROIHeads._run_stage, and _forward_mask. The
    HeadGraph sessions, by (kind, stage)."""
    from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference

    graph = sessions(graphs, folder, threads)

    def run_stage(features: list, proposals, stage: int):
        return tuple(graph["bbox", stage](features, _rois([p.proposal_boxes for p in proposals])))

    def forward_box(features: dict, proposals):
        predictions = run_stage([features[f] for f in roi_heads.box_in_features], proposals, 0)
        return roi_heads.box_predictor.inference(predictions, proposals)[0]

    def forward_mask(features: dict, instances):
        levels = [features[f] for f in roi_heads.mask_in_features]
        (logits,) = graph["mask", 0](levels, _rois([i.pred_boxes for i in instances]))
        mask_rcnn_inference(logits, instances)
        return instances

    if type(roi_heads).__name__ == "CascadeROIHeads":
        roi_heads._run_stage = run_stage
    else:
        roi_heads._forward_box = forward_box
    if ("mask", 0) in graph:
        roi_heads._forward_mask = forward_mask
    return graph
