"""What the detector frameworks' RoI head graphs share (formats/mmdet_roi_heads.py,
formats/detectron2_roi_heads.py): RoIAlign that runs the framework's own op in eager mode and
exports as ONNX RoiAlign, FPN level assignment, example RoIs for tracing, the export call, and
the ONNX Runtime session that answers a head at post-processing.

A head graph takes the FPN levels its pooler reads and rois (N, 5: batch index, x1, y1, x2, y2),
and gives the head's outputs for those RoIs.
"""

from __future__ import annotations

import os

import numpy as np

OPSET = 17  # RoiAlign's coordinate_transformation_mode needs >= 16
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}  # as engines/onnxruntime_engine.py


class Unsupported(Exception):
    """A head that the graphs do not express: it stays in PyTorch."""


def roi_align_function(eager):
    """An autograd Function: `eager(feat, rois (N, 5), (out_h, out_w), scale, ratio, aligned)` (the
    framework's own op) when run, ONNX RoiAlign when exported; average pooling only."""
    import torch

    class RoIAlign(torch.autograd.Function):
        @staticmethod
        def forward(ctx, feat, boxes, batch, out_h, out_w, scale, ratio, aligned):
            rois = torch.cat([batch.to(boxes.dtype)[:, None], boxes], dim=1)
            return eager(feat, rois, (out_h, out_w), scale, ratio, aligned)

        @staticmethod
        def symbolic(g, feat, boxes, batch, out_h, out_w, scale, ratio, aligned):
            mode = "half_pixel" if aligned else "output_half_pixel"  # aligned=True shifts by -0.5 pixel
            return g.op("RoiAlign", feat, boxes, batch, coordinate_transformation_mode_s=mode, mode_s="avg",
                        output_height_i=out_h, output_width_i=out_w, sampling_ratio_i=ratio,
                        spatial_scale_f=scale)

    return RoIAlign


def head_module(eager_align, settings: list[tuple], assign_levels, head):
    """levels..., rois -> head(multi-level RoIAlign) as one module: `assign_levels(rois, count)`
    gives each RoI's level (the framework's own rule), `eager_align` is the framework's RoIAlign
    (see roi_align_function), `settings` each level's (out_h, out_w, scale, ratio, aligned)."""
    import torch

    align = roi_align_function(eager_align)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, *inputs):
            feats, rois = inputs[:-1], inputs[-1]
            return self.head(pool_levels(align, feats, rois, assign_levels(rois, len(feats)), settings))

    return Head().eval()


def pool_levels(align, feats, rois, levels, settings):
    """Multi-level RoIAlign: each RoI pooled from the level `levels` assigns it (index into feats),
    with that level's (out_h, out_w, scale, ratio, aligned) from `settings`."""
    import torch

    h, w = settings[0][:2]
    out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], h, w))
    for i, feat in enumerate(feats):
        inds = torch.nonzero(levels == i).squeeze(1)
        picked = rois[inds]
        pooled = align.apply(feat, picked[:, 1:5], picked[:, 0].long(), *settings[i])
        out = out.index_put((inds,), pooled)
    return out


def example_rois(image_hw, count: int = 64):
    """Boxes of every size in the image, so that every FPN level is picked while tracing."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = image_hw
    size = torch.exp(torch.linspace(np.log(8.0), np.log(min(h, w)), count))
    x1 = torch.rand(count, generator=g) * (w - size).clamp(min=1)
    y1 = torch.rand(count, generator=g) * (h - size).clamp(min=1)
    boxes = torch.stack([x1, y1, x1 + size, y1 + size], 1)
    return torch.cat([torch.zeros(count, 1), boxes], 1)


def export_graph(module, feats: list, rois, outputs: list[str], path: str) -> None:
    """module(*feats, rois) -> outputs as ONNX at `path`: level sizes and the RoI count dynamic."""
    import torch
    from accelflow.formats.detections import quiet

    inputs = [f"feature_{i}" for i in range(len(feats))] + ["rois"]
    axes = {name: {2: f"{name}_h", 3: f"{name}_w"} for name in inputs[:-1]}
    axes.update({"rois": {0: "rois"}}, **{name: {0: "rois"} for name in outputs})
    with torch.no_grad(), quiet():
        torch.onnx.export(module, (*feats, rois), path, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


class HeadGraph:
    """One head graph in an ONNX Runtime session on the CPU."""

    def __init__(self, path: str, levels: int, threads: int):
        import onnxruntime as ort
        from accelflow.formats.onnx_model import session_options

        self.session = ort.InferenceSession(path, session_options(threads, SESSION_CONFIG),
                                            providers=["CPUExecutionProvider"])
        self.levels = levels
        self.names = [i.name for i in self.session.get_inputs()]
        self.recorded: list[dict] | None = None  # a list: every feed is kept (INT8 calibration)

    def __call__(self, x, rois):
        import torch

        arrays = [np.ascontiguousarray(f.numpy(), np.float32) for f in x[:self.levels]]
        arrays.append(np.ascontiguousarray(rois.numpy(), np.float32))
        feed = dict(zip(self.names, arrays))
        if self.recorded is not None:
            self.recorded.append(feed)
        return [torch.from_numpy(o) for o in self.session.run(None, feed)]


def heads_label(graphs: list[dict]) -> str:
    """What runs the head graphs, for a candidate's label: INT8 where they were quantized."""
    return "RoI heads (onnxruntime int8)" if any(g.get("int8") for g in graphs) else "RoI heads (onnxruntime)"


def sessions(graphs: list[dict], folder: str, threads: int) -> dict:
    """(kind, stage) -> HeadGraph for a conversion's graph entries (files in folder)."""
    return {(g["kind"], g["stage"]): HeadGraph(os.path.join(folder, g["file"]), g["levels"], threads) for g in graphs}
