"""MMDetection detectors: a config file (.py, detected by content) and its checkpoint (.pth).

The model file is the config; its checkpoint is the one PyTorch checkpoint beside it (or the
one named like it). Input structure: the framework's own `inputs` list of CHW images in BGR
pixel values, as `model.test_step({"inputs": [...], ...})` takes them:

    inputs[0]:float(3*320*320,3*800*1333)

The image is taken at the size given (no resize: declare the sizes the model serves at).

What goes to ONNX: the data preprocessor (BGR->RGB, mean/std, zero padding to the size
divisor, all in the graph, dynamic sizes) + backbone + neck, i.e. everything that scales
with the image. Box decoding, NMS and the RoI heads run after the engine as a documented
post-processing step, in PyTorch with MMDetection's own head code on the engine's features
(`model.predict` with `extract_feat` answered by the engine): mmdet's NMS and RoIAlign are
mmcv ops without an ONNX export in mmcv 2.x. The result, original or optimized, is one dict
per image: bboxes, scores, labels (and masks for a mask head), see formats/detections.py.

Security: an MMDetection config is Python that mmengine executes when it reads it; only
optimize configs you trust. The checkpoint is read with torch.load(weights_only=True).
"""

from __future__ import annotations

import os
import re

import numpy as np
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line, missing_dependency
from accelflow.core.modelio import ModelIO, flat_structure
from accelflow.formats import detections
from accelflow.formats.detections import quiet as _quiet

NAME = "mmdet"
_MODEL_LINE = re.compile(r"^model\s*=\s*dict\(", re.M)


def detect(path: str) -> bool:
    """A Python config assigning `model = dict(type=...)`, as MMDetection configs do."""
    text = detections.config_text(path)
    return text is not None and bool(_MODEL_LINE.search(text)) and "type=" in text.replace(" ", "")


def code_risks(path: str) -> list[str]:
    """What in the model at `path` would run its author's code when loaded (issue 17: in progress)."""
    return []


def checkpoint_for(config: str) -> str:
    return detections.checkpoint_for(config, "MMDetection")


def import_mmdet():
    try:
        import mmdet  # noqa: F401  (imports mmcv.ops: needs mmcv built with its ops)
        from mmdet.utils import register_all_modules
    except ImportError as exc:
        raise missing_dependency("mmdet, mmengine or mmcv with its compiled ops", "mmdet", first_line(exc)) from exc
    register_all_modules(init_default_scope=True)


def load(path: str):
    """The detector built from the config, weights from its checkpoint, in eval mode on the CPU."""
    import_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import Config

    checkpoint = checkpoint_for(path)
    try:
        with _quiet():
            cfg = Config.fromfile(path)
            model = MODELS.build(cfg.model)
    except Exception as exc:
        raise UnsupportedFormatError(f"{path}: MMDetection could not build the model of this config: {first_line(exc)}") from exc
    detections.load_weights(model, checkpoint, path, "state_dict")
    model.cfg = cfg
    return model.eval()


def check_spec(spec) -> None:
    leaves = spec.leaves
    if spec.root != "kwargs" or len(leaves) != 1 or leaves[0].name != "inputs[0]" or leaves[0].shape.rank != 3:
        raise ModelMismatchError(
            "an MMDetection model takes one image per call: give tensor information "
            "inputs[0]:float(3*H*W) (or a range of sizes, e.g. inputs[0]:float(3*320*320,3*800*1333)), "
            f"not {', '.join(l.name for l in leaves)}."
        )


def _sample(image_shape, pad: int | None = None):
    from mmdet.structures import DetDataSample

    h, w = int(image_shape[-2]), int(image_shape[-1])
    meta = {"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)}
    if pad:
        padded = (-(-h // pad) * pad, -(-w // pad) * pad)
        meta.update(pad_shape=padded, batch_input_shape=padded)
    return DetDataSample(metainfo=meta)


def _instances(sample) -> dict:
    pred = sample.pred_instances
    out = {"bboxes": pred.bboxes.detach().float().numpy(), "scores": pred.scores.detach().float().numpy(),
           "labels": pred.labels.detach().long().numpy()}
    if "masks" in pred:
        out["masks"] = pred.masks.detach().cpu().numpy().astype(bool)
    return out


class MMDetBaseline(detections.DetectorBaseline):
    """The original detector in MMDetection: `model.test_step` (data preprocessor, predict)."""

    def __init__(self, path: str, spec, io: ModelIO, threads: int):
        super().__init__(load(path), f"mmdet {_version()}", threads)

    def prepare(self, arrays):
        image = self.torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32))
        return {"inputs": [image], "data_samples": [_sample(image.shape)]}

    def infer(self, feed):
        return self.model.test_step(feed)

    instances = staticmethod(_instances)


def baseline_runner(path: str, spec, io: ModelIO, threads: int) -> MMDetBaseline:
    return MMDetBaseline(path, spec, io, threads)


def postprocessor(config: str, io: dict):
    """MMDetection's heads, box decoding and NMS on the engine's features (formats/detections.py
    wraps an engine's runner with it)."""
    import torch

    model = load(config)
    divisor = int(getattr(model.data_preprocessor, "pad_size_divisor", 1))

    def postprocess(features, arrays):
        feats = tuple(torch.from_numpy(np.asarray(f, dtype=np.float32)) for f in features)
        samples = [_sample(arrays[0].shape, divisor)]
        return [_instances(s) for s in predict_from_features(model, feats, samples)]

    return postprocess


def save_config(config: str, folder: str) -> str:
    """The config with its _base_ files merged, as <folder>/config.py (a result's copy)."""
    import_mmdet()
    from mmengine.config import Config

    target = os.path.join(folder, "config.py")
    with _quiet():
        Config.fromfile(config).dump(target)
    return target


def predict_from_features(model, feats, samples):
    """`model.predict` with the backbone and neck answered by `feats` (the engine's outputs)."""
    import torch

    model.extract_feat = lambda _inputs: feats
    try:
        with torch.no_grad(), _quiet():
            return model.predict(None, samples, rescale=True)
    finally:
        del model.extract_feat


def _feature_graph(model):
    """preprocess (in graph) + backbone + neck, as one nn.Module taking one CHW BGR image."""
    import torch
    import torch.nn.functional as F

    pre = model.data_preprocessor  # its batch_augments apply in training only

    class _Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.divisor = int(getattr(pre, "pad_size_divisor", 1))
            self.pad_value = float(getattr(pre, "pad_value", 0))

        def forward(self, image):
            x = image.unsqueeze(0).float()
            if getattr(pre, "_channel_conversion", False):
                x = x[:, [2, 1, 0], ...]
            if getattr(pre, "_enable_normalize", False):
                x = (x - pre.mean.view(1, -1, 1, 1)) / pre.std.view(1, -1, 1, 1)
            h, w = x.shape[-2], x.shape[-1]
            d = self.divisor
            x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d), value=self.pad_value)
            return tuple(self.model.extract_feat(x))

    return _Features().eval()


def to_onnx(path: str, spec, out_dir: str, example: list) -> tuple[str, ModelIO]:
    import torch

    check_spec(spec)
    model = load(path)
    graph = _feature_graph(model)
    image = torch.from_numpy(np.ascontiguousarray(example[0], dtype=np.float32))
    with torch.no_grad(), _quiet():
        features = graph(image)
        masks = "masks" in _instances(model.test_step({"inputs": [image], "data_samples": [_sample(image.shape)]})[0])
    output_names = [f"feature_{i}" for i in range(len(features))]
    onnx_path, input_names = detections.export_features(graph, image, spec, out_dir, output_names,
                                                        "MMDetection backbone and neck")
    source = {"detector": NAME, "postprocess": "mmdet heads, box decoding and NMS in torch",
              "config": os.path.abspath(path), "checkpoint": os.path.abspath(checkpoint_for(path)),
              "score_thr": score_threshold(model.cfg), "max_detections": max_detections(model.cfg),
              "detections_structure": detections.output_structure(1, masks)}
    # The engine's own outputs are the FPN features; the detections come after post-processing.
    return onnx_path, ModelIO(input_names, output_names, flat_structure(len(output_names)), source)


def score_threshold(cfg) -> float:
    """The detector's own final score threshold (RoI head's for two-stage detectors)."""
    test_cfg = cfg.model.get("test_cfg") or {}
    final = test_cfg.get("rcnn", test_cfg) or {}
    return float(final.get("score_thr", 0.0) or 0.0)


def max_detections(cfg) -> int | None:
    test_cfg = cfg.model.get("test_cfg") or {}
    final = test_cfg.get("rcnn", test_cfg) or {}
    return final.get("max_per_img")


def _version() -> str:
    import mmdet

    return mmdet.__version__
