"""Detectors with random weights from MMDetection's and Detectron2's own configs, for tests and the demo.

    python examples/make_detectors.py OUT_DIR [--which faster-rcnn-r50 retinanet-r18 ...]
    python examples/make_detectors.py OUT_DIR --framework detectron2 [--which faster-rcnn-r50 ...]

Each MMDetection model is a folder OUT_DIR/<name>/ holding config.py (the config with its _base_ files
merged, so the folder stands alone) and config.pth ({"state_dict": ...}, loadable with
torch.load(weights_only=True)). No download: the backbone's ImageNet init_cfg is dropped and
MMDetection's own init_weights() initialises every layer. Detectron2 models go to
OUT_DIR/d2-<name>/: config.yaml (cfg.dump()) and config.pth ({"model": ...}).

Random classifiers score every class alike (about 1/81 after a softmax, 0.01 for RetinaNet's
prior), below the configs' score threshold of 0.05, so nothing would be detected. For
MMDetection the classification layers' weights are therefore scaled up (`--sharpen`, default
30; RetinaNet's prior bias is set to -2) so that random features give spread-out scores and a
realistic number of detections to compare. Detectron2's random init is degenerate in the other
direction (exploding activations, every score 1.0): its models get a data-dependent
initialisation instead, see calibrate_detectron2 (`--sharpen` does not apply to them).
"""

from __future__ import annotations

import argparse
import os

CONFIGS = {  # name: (stock config under mmdet/.mim/configs, ResNet depth or None for the stock one)
    "faster-rcnn-r50": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", None),
    "faster-rcnn-r18": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 18),
    "retinanet-r18": ("retinanet/retinanet_r18_fpn_1x_coco.py", None),
    "mask-rcnn-r18": ("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", 18),
    "cascade-mask-rcnn-r18": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", 18),
    "cascade-mask-rcnn-r50": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", None),
}
_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}


def mmdet_config(name: str):
    import mmdet
    from mmengine.config import Config

    relative, depth = CONFIGS[name]
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", relative))
    cfg.model.backbone.init_cfg = None  # no torchvision://resnet50 download
    if depth:
        cfg.model.backbone.depth = depth
        cfg.model.neck.in_channels = _CHANNELS[depth]
    return cfg


def make_mmdet(name: str, out_dir: str, seed: int = 0, sharpen: float = 30.0) -> str:
    """OUT_DIR/<name>/config.py and config.pth; returns the config's path."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    cfg = mmdet_config(name)
    model = MODELS.build(cfg.model)
    model.init_weights()
    _sharpen(model, sharpen)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "config.py")
    cfg.dump(config)
    torch.save({"state_dict": model.state_dict()}, os.path.join(folder, "config.pth"))
    return config


def _sharpen(model, factor: float) -> None:
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("fc_cls", "retina_cls", "conv_cls", "rpn_cls")) and hasattr(module, "weight"):
                module.weight.mul_(factor)
            if name.endswith("retina_cls"):  # its prior bias (p = 0.01) keeps every score below 0.05
                module.bias.fill_(-2.0)


D2_CONFIGS = {  # name: (model zoo config, ResNet depth or None for the stock one)
    "faster-rcnn-r50": ("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", None),
    "faster-rcnn-r18": ("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", 18),
    "retinanet-r18": ("COCO-Detection/retinanet_R_50_FPN_3x.yaml", 18),
    "mask-rcnn-r18": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", 18),
    "cascade-mask-rcnn-r18": ("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", 18),
    "cascade-mask-rcnn-r50": ("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", None),
}


def make_detectron2(name: str, out_dir: str, seed: int = 0) -> str:
    """OUT_DIR/d2-<name>/config.yaml and config.pth; returns the config's path."""
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    relative, depth = D2_CONFIGS[name]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(relative))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    if depth:
        cfg.MODEL.RESNETS.DEPTH = depth
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    calibrate_detectron2(model, seed)
    folder = os.path.join(out_dir, f"d2-{name}")
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    torch.save({"model": model.state_dict()}, os.path.join(folder, "config.pth"))
    return config


# Detectron2 with random weights is numerically degenerate: its FrozenBatchNorm starts as the
# identity, so activations grow through the ResNet (std ~700 at res5 of R50), objectness and
# class logits reach thousands (every class score is 1.0, exactly tied, so ONNX Runtime and
# torch disagree on 10% of the detections) and box deltas are huge (about 10 proposals survive).
# calibrate_detectron2 gives the random network the scales training would: each FrozenBatchNorm
# is set to the statistics of its input on calibration images (what BatchNorm would have
# learned), and every layer after the ResNet gets an output scale (std over those images): 1 for
# hidden layers; for the prediction layers the values below, chosen so that Faster R-CNN R50 at
# 480x640 finds 20-100 detections on the gate's synthetic images, scores spread from 0.05 to 0.91.
_D2_OUTPUT_SCALES = (  # name suffix: (std, mean) of the layer's output on the calibration images
    ("objectness_logits", (2.0, 0.0)),  # RPN: spread-out proposal scores
    ("anchor_deltas", (0.1, 0.0)),  # RPN: proposals near their anchors
    ("box_predictor.cls_score", (2.0, 0.0)),  # Fast R-CNN softmax logits; background raised below
    ("box_predictor.bbox_pred", (0.5, 0.0)),  # /(10, 10, 5, 5): box shifts of a few percent
    ("mask_head.predictor", (2.0, 0.0)),  # mask logits away from the 0.5 threshold
    ("head.cls_score", (0.6, -5.0)),  # RetinaNet sigmoid logits: p ~ 0.007, the top 100 spread
    ("head.bbox_pred", (0.1, 0.0)),
)
_D2_RESIDUAL_SCALE = 0.2  # std of each residual branch's output, against ~1 for its shortcut
_D2_BACKGROUND_BIAS = 12.0  # most proposals are background: its logit sits this far above the classes'


def calibrate_detectron2(model, seed: int = 0, shape=(3, 320, 416), images: int = 3) -> None:
    """Data-dependent initialisation of a random-weight Detectron2 model (in place), on a batch
    of synthetic images (formats/detections.py; another seed than the accuracy gate's images)."""
    import numpy as np
    import torch
    from accelflow.formats.detections import synthetic_image

    model.eval()
    rng = np.random.default_rng(1000 + seed)
    inputs = [{"image": torch.from_numpy(synthetic_image(shape, rng))} for _ in range(images)]
    # Layers with a bias and no norm after the ResNet (its convs have none: their norms are
    # set from data), in order; FPN lateral convs are left as they are (only the FPN outputs
    # are read downstream).
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d))
              and m.bias is not None and getattr(m, "norm", None) is None and "fpn_lateral" not in n]
    backbone = [(n, m) for n, m in layers if n.startswith("backbone.")]
    features = _calibrate_backbone(model, model.preprocess_image(inputs).tensor, backbone)
    _calibrate_heads(model, inputs, features, layers[len(backbone):])


def _calibrate_backbone(model, batch, layers: list) -> dict:
    """Norms to their inputs' statistics and the backbone's layers to set output scales, in one
    pass (each runs once per pass); the backbone's features."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    # The last norm of each residual branch scales the branch down: a trained ResNet adds
    # small corrections to its residual stream; unit-variance random branches stacked 16 deep
    # would be a chaotic map (FPN features 20-40% off in bf16 instead of a few percent).
    last = {id(block.conv3.norm if hasattr(block, "conv3") else block.conv2.norm)
            for block in model.modules() if type(block).__name__ in ("BottleneckBlock", "BasicBlock")}

    def normalise(module, inputs):  # forward pre-hook: the norm learns its input's statistics
        x = inputs[0].double()
        var = x.var(dim=(0, 2, 3))
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)).float())
        module.running_var.copy_(var.clamp(min=0.1 * float(var.median()) + 1e-12).float())
        module.weight.fill_(_D2_RESIDUAL_SCALE if id(module) in last else 1.0)
        module.bias.zero_()

    def rescale(name):  # forward hook: scale the layer, and its output at once
        def hook(layer, _inputs, out):
            return out * _set_output_scale(name, layer, [out.detach().double()])
        return hook

    hooks = [m.register_forward_pre_hook(normalise) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    hooks += [m.register_forward_hook(rescale(n)) for n, m in layers]
    try:
        with torch.no_grad():
            return model.backbone(batch)
    finally:
        for h in hooks:
            h.remove()


def _calibrate_heads(model, inputs, features, layers: list) -> None:
    """The heads run a layer several times per image (once per FPN level): one pass per layer,
    on the backbone's features, with at most 300 proposals (cheaper; statistics alike)."""
    import torch

    rpn = getattr(model, "proposal_generator", None)
    topk = rpn.post_nms_topk[False] if rpn is not None else None
    model.backbone.forward = lambda _tensor: features
    try:
        if rpn is not None:
            rpn.post_nms_topk[False] = min(topk, 300)
        for name, layer in layers:
            seen = []
            hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().double()))
            with torch.no_grad():
                model(inputs)
            hook.remove()
            if seen:  # (a head that did not run on this image, e.g. no detection for masks, stays)
                _set_output_scale(name, layer, seen)
    finally:
        del model.backbone.forward
        if rpn is not None:
            rpn.post_nms_topk[False] = topk


def _set_output_scale(name: str, layer, outs: list) -> float:
    """Scale `layer` so that its outputs `outs` (each (N, C, ...)) get the std of
    _D2_OUTPUT_SCALES, and where a mean is given there, shift each output channel's mean to it
    (a prediction layer: no class or anchor wins everywhere); returns the factor (for a layer
    without a mean, what its output was multiplied by)."""
    import torch

    std, mean = next((s for suffix, s in _D2_OUTPUT_SCALES if name.endswith(suffix)), (1.0, None))
    channels = torch.cat([o.transpose(0, 1).reshape(o.shape[1], -1) for o in outs], dim=1)  # (C, values)
    centred = channels - channels.mean(dim=1, keepdim=True) if mean is not None else channels
    factor = std / max(float(centred.std()), 1e-12)
    with torch.no_grad():
        layer.weight.mul_(factor)
        if mean is None:
            layer.bias.mul_(factor)
        else:
            layer.bias.copy_((layer.bias - channels.mean(dim=1).to(layer.bias)) * factor + mean)
        if name.endswith("box_predictor.cls_score"):
            layer.bias[-1] += _D2_BACKGROUND_BIAS
    return factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--framework", choices=["mmdet", "detectron2"], default="mmdet")
    parser.add_argument("--which", nargs="+", default=["faster-rcnn-r50"], choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sharpen", type=float, default=30.0)
    args = parser.parse_args()
    for name in args.which:
        if args.framework == "mmdet":
            print(make_mmdet(name, args.out_dir, args.seed, args.sharpen))
        else:
            print(make_detectron2(name, args.out_dir, args.seed))


if __name__ == "__main__":
    main()
