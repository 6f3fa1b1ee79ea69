"""Detectron2 detectors: a config file (.yaml, detected by content) and its checkpoint (.pth).

Detectron2 is not on PyPI: it is supported where it is installed (docs/detectors.md says how).
The model file is the config (merged, as `cfg.dump()` writes it, or with its `_BASE_` files
at their relative paths); its checkpoint is the one PyTorch checkpoint beside it, read with
torch.load(weights_only=True) ({"model": state_dict} or a plain state_dict).

Input structure: the framework's own `model([{"image": CHW tensor}, ...])`, in the config's
INPUT.FORMAT (BGR by default) pixel values, one image per call:

    input_0[0][image]:float(3*320*320,3*800*1333)

What goes to ONNX: normalisation and zero padding to the backbone's size divisibility (in the
graph, dynamic sizes) + backbone with FPN + the RPN head's convolutions (StandardRPNHead):
the feature graph, which the engine runs. The RoI
heads (pooling, box head and predictor of every cascade stage, mask head) become head graphs
beside it, run in ONNX Runtime (formats/detectron2_roi_heads.py). Proposal generation, box
decoding, NMS and mask pasting run after them in PyTorch with Detectron2's own code
(`model.inference` with `preprocess_image` and the backbone answered by the engine, the RoI
heads' forwards by the graphs), as for MMDetection.
Result: one dict per image, bboxes (pred_boxes), scores, labels (pred_classes), masks
(pred_masks) where the model has a mask head (formats/detections.py).
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line, missing_dependency
from accelflow.core.modelio import ModelIO, flat_structure
from accelflow.formats import detections, detectron2_roi_heads
from accelflow.formats.detections import quiet as _quiet
from accelflow.formats.roi_graphs import heads_label

NAME = "detectron2"
# Bumped when the conversion's files change (2: RoI head graphs; 3: the RPN head's convolutions
# in the feature graph), so that cached conversions of an older kind are not reused
# (tasks/convert.py keys on it).
EXPORT_VERSION = 3
_LEAF = "input_0[0][image]"


def detect(path: str) -> bool:
    """A YAML config with a top-level MODEL: section and a META_ARCHITECTURE or _BASE_."""
    text = detections.config_text(path)
    if text is None:
        return False
    return bool(re.search(r"^MODEL:\s*$", text, re.M)) and bool(re.search(r"^\s*(META_ARCHITECTURE|_BASE_):", text, re.M))


def code_risks(path: str) -> list[str]:
    """What in the config at `path`, or in the `_BASE_` files it inherits, would run code when
    Detectron2 reads it: a python tag (`!!python/object/apply:os.system [...]`), which fvcore's
    merge_from_file constructs with yaml.unsafe_load unless allow_unsafe is off; and a `_BASE_`
    outside the model's folder (a URL, or another file on the worker) is refused too."""
    home = os.path.dirname(os.path.realpath(path))
    risks, seen, current = [], set(), os.path.realpath(path)
    while current and current not in seen:  # the _BASE_ chain, as fvcore follows it
        seen.add(current)
        label = os.path.relpath(current, home)
        data, found = detections.yaml_risks(current, label)
        risks += found
        base = data.get("_BASE_") if isinstance(data, dict) else None
        current, risk = _base_file(base, os.path.dirname(current), home, label) if isinstance(base, str) else (None, None)
        risks += [risk] if risk else []
    return risks


def _base_file(base: str, folder: str, home: str, label: str) -> tuple[str | None, str | None]:
    """(the _BASE_ file to read next, or None; a risk, or None), resolved as fvcore does."""
    if base.startswith(("http://", "https://")):
        return None, f"{label}: a _BASE_ fetched from the network ({base})"
    target = os.path.realpath(os.path.join(folder, os.path.expanduser(base)))
    if os.path.commonpath([target, home]) != home:
        return None, f"{label}: a _BASE_ {base!r} outside the model's folder"
    return (target if os.path.isfile(target) else None), None


def checkpoint_for(config: str) -> str:
    return detections.checkpoint_for(config, "Detectron2")


def import_detectron2():
    try:
        import detectron2  # noqa: F401
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
    except ImportError as exc:
        raise missing_dependency("detectron2", "detectron2", first_line(exc)) from exc
    return get_cfg, build_model


def load(path: str, trusted: bool = False):
    """The detector built from the config (python tags in the YAML constructed only if
    `trusted`), weights from its checkpoint, in eval mode on the CPU."""
    get_cfg, build_model = import_detectron2()
    checkpoint = checkpoint_for(path)
    try:
        with _quiet():
            cfg = get_cfg()
            cfg.merge_from_file(path, allow_unsafe=trusted)  # Detectron2's default is True
            cfg.MODEL.DEVICE = "cpu"
            cfg.MODEL.WEIGHTS = ""
            model = build_model(cfg)
    except Exception as exc:
        raise UnsupportedFormatError(f"{path}: Detectron2 could not build the model of this config: {first_line(exc)}") from exc
    detections.load_weights(model, checkpoint, path, "model")
    model.cfg = cfg
    return model.eval()


def check_spec(spec) -> None:
    leaves = spec.leaves
    if spec.root != "args" or len(leaves) != 1 or leaves[0].name != _LEAF or leaves[0].shape.rank != 3:
        raise ModelMismatchError(
            "a Detectron2 model takes one image per call: give tensor information "
            f"{_LEAF}:float(3*H*W) (or a range of sizes, e.g. {_LEAF}:float(3*320*320,3*800*1333)), "
            f"not {', '.join(l.name for l in leaves)}."
        )


def _instances(result: dict) -> dict:
    inst = result["instances"]
    out = {"bboxes": inst.pred_boxes.tensor.detach().float().numpy(), "scores": inst.scores.detach().float().numpy(),
           "labels": inst.pred_classes.detach().long().numpy()}
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks.detach().numpy().astype(bool)
    return out


class Detectron2Baseline(detections.DetectorBaseline):
    """The original detector in Detectron2: `model([{"image": ...}])` in eval mode."""

    def __init__(self, path: str, spec, io: ModelIO, threads: int, trusted: bool = False):
        super().__init__(load(path, trusted), f"detectron2 {_version()}", threads)

    def prepare(self, arrays):
        return [{"image": self.torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32))}]

    def infer(self, feed):
        return self.model(feed)

    instances = staticmethod(_instances)


def baseline_runner(path: str, spec, io: ModelIO, threads: int, trusted: bool = False) -> Detectron2Baseline:
    return Detectron2Baseline(path, spec, io, threads, trusted)


def postprocessor(config: str, io: dict, trusted: bool = False):
    """Detectron2's proposals, box decoding and NMS on the engine's features (formats/detections.py
    wraps an engine's runner with it); the RoI heads run in their ONNX graphs where the
    conversion wrote them (io.source's `roi_heads`, see detections.head_graphs_folder), else in PyTorch."""
    import torch

    model = load(config, trusted)
    source = io["source"]
    names = source["feature_names"]
    graphs = source.get("roi_heads") or []
    detections.beside_config(sys.modules[__name__], source)  # plain names: nothing outside the folder
    folder = detections.head_graphs_folder(source, config)
    sessions = detectron2_roi_heads.attach(model.roi_heads, graphs, folder, torch.get_num_threads()) if graphs else {}

    rpn_levels = source.get("rpn_levels") or 0

    def postprocess(outputs, arrays):
        tensors = [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outputs]
        feats = dict(zip(names, tensors))
        at = len(names)
        rpn_maps = (tensors[at:at + rpn_levels], tensors[at + rpn_levels:at + 2 * rpn_levels]) if rpn_levels else None
        image = torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32))
        return [_instances(r) for r in predict_from_features(model, feats, image, rpn_maps)]

    postprocess.label = "detectron2 NMS (torch)" + (f", {heads_label(graphs)}" if graphs else ", heads (torch)")
    postprocess.head_graphs = sessions  # (kind, stage) -> HeadGraph: INT8 calibration records their feeds
    return postprocess


def files_beside_config(source: dict) -> list[str]:
    """The RoI heads' graphs of a conversion: files beside its config (formats/detections.py)."""
    return [g["file"] for g in source.get("roi_heads") or []]


def save_config(config: str, folder: str, trusted: bool = False) -> str:
    """The config with its _BASE_ files merged, as <folder>/config.yaml (a result's copy: plain
    values only, as yacs keeps, so it reads back without allow_unsafe)."""
    get_cfg, _ = import_detectron2()
    cfg = get_cfg()
    cfg.merge_from_file(config, allow_unsafe=trusted)
    target = os.path.join(folder, "config.yaml")
    with open(target, "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    return target


def predict_from_features(model, feats: dict, image, rpn_maps=None):
    """`model.inference` with preprocessing and the backbone answered by the engine's `feats`,
    and the RPN head by `rpn_maps` (objectness logits, anchor deltas: lists per level) where
    the engine computed them too."""
    import torch
    from detectron2.structures import ImageList

    h, w = int(image.shape[-2]), int(image.shape[-1])
    d = max(int(model.backbone.size_divisibility), 1)
    padded = torch.empty((1, image.shape[0], -(-h // d) * d, -(-w // d) * d))  # shape only, never read
    model.preprocess_image = lambda _inputs: ImageList(padded, [(h, w)])
    model.backbone.forward = lambda _tensor: feats
    if rpn_maps is not None:
        model.proposal_generator.rpn_head.forward = lambda _features: (list(rpn_maps[0]), list(rpn_maps[1]))
    try:
        with torch.no_grad(), _quiet():
            return model([{"image": image}])
    finally:
        del model.preprocess_image
        del model.backbone.forward
        if rpn_maps is not None:
            del model.proposal_generator.rpn_head.forward


def _rpn_in_graph(model) -> bool:
    """A StandardRPNHead, whose forward is convolutions only: it goes into the feature graph."""
    rpn = getattr(model, "proposal_generator", None)
    return rpn is not None and type(getattr(rpn, "rpn_head", None)).__name__ == "StandardRPNHead"


def _feature_graph(model, rpn: bool = False):
    """normalise, pad, backbone (+ FPN) as one module taking one CHW image; with `rpn`, the RPN
    head's objectness logits and then its anchor deltas (one map per level) follow the features."""
    import torch
    import torch.nn.functional as F

    class _Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.divisor = max(int(model.backbone.size_divisibility), 1)

        def forward(self, image):
            x = (image.float() - self.model.pixel_mean) / self.model.pixel_std
            h, w = x.shape[-2], x.shape[-1]
            d = self.divisor
            x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d)).unsqueeze(0)
            feats = self.model.backbone(x)
            if not rpn:
                return tuple(feats.values())
            generator = self.model.proposal_generator
            logits, deltas = generator.rpn_head([feats[f] for f in generator.in_features])
            return (*feats.values(), *logits, *deltas)

    return _Features().eval()


def to_onnx(path: str, spec, out_dir: str, example: list, trusted: bool = False) -> tuple[str, ModelIO]:
    import torch

    check_spec(spec)
    model = load(path, trusted)
    rpn = _rpn_in_graph(model)
    graph = _feature_graph(model, rpn)
    image = torch.from_numpy(np.ascontiguousarray(example[0], dtype=np.float32))
    with torch.no_grad(), _quiet():
        feats = model.backbone(graph_input(model, image))
        masks = "masks" in _instances(model([{"image": image}])[0])
    names = list(feats.keys())
    output_names = [f"feature_{n}" for n in names]
    rpn_levels = len(model.proposal_generator.in_features) if rpn else 0
    output_names += [f"rpn_{kind}_{i}" for kind in ("objectness", "deltas") for i in range(rpn_levels)]
    onnx_path, input_names = detections.export_features(graph, image, spec, out_dir, output_names, "Detectron2 backbone")
    roi_heads = detectron2_roi_heads.export(model, feats, image.shape[-2:], out_dir)
    heads = ("RPN head convolutions in the engine, " if rpn else "") + (
        "RoI heads in onnxruntime" if roi_heads else "RoI heads (if any) in torch")
    source = {"detector": NAME, "postprocess": f"{heads}; proposals, box decoding and NMS in torch (detectron2)",
              "rpn_levels": rpn_levels,
              **detections.own_copies(sys.modules[__name__], path, out_dir, trusted),
              "roi_heads": roi_heads, "feature_names": names, "score_thr": score_threshold(model.cfg),
              "max_detections": int(model.cfg.TEST.DETECTIONS_PER_IMAGE),
              "detections_structure": detections.output_structure(1, masks)}
    return onnx_path, ModelIO(input_names, output_names, flat_structure(len(output_names)), source)


def graph_input(model, image):
    """The normalised, padded batch the backbone sees (what the ONNX graph computes first)."""
    return model.preprocess_image([{"image": image}]).tensor


def score_threshold(cfg) -> float:
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "RetinaNet":
        return float(cfg.MODEL.RETINANET.SCORE_THRESH_TEST)
    return float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)


def _version() -> str:
    import detectron2

    return detectron2.__version__
