"""Detectors with random weights from MMDetection's own configs, for tests and the demo.

    python examples/make_detectors.py OUT_DIR [--which faster-rcnn-r50 retinanet-r18 ...]
    python examples/make_detectors.py OUT_DIR --framework detectron2 [--which faster-rcnn-r50 ...]

Detectron2 models go to OUT_DIR/d2-<name>/: config.yaml (cfg.dump()) and config.pth
({"model": ...}). Each MMDetection model is a folder OUT_DIR/<name>/ holding config.py (the config with its _base_ files
merged, so the folder stands alone) and config.pth ({"state_dict": ...}, loadable with
torch.load(weights_only=True)). No download: the backbone's ImageNet init_cfg is dropped and
MMDetection's own init_weights() initialises every layer.

Random classifiers score every class alike (about 1/81 after a softmax, 0.01 for RetinaNet's
prior), below the configs' score threshold of 0.05, so nothing would be detected. The
classification layers' weights are therefore scaled up (`--sharpen`, default 30; RetinaNet's
prior bias is set to -2) so that
random features give spread-out scores and a realistic number of detections to compare.
"""

from __future__ import annotations

import argparse
import os

CONFIGS = {  # name: (stock config under mmdet/.mim/configs, ResNet depth or None for the stock one)
    "faster-rcnn-r50": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", None),
    "faster-rcnn-r18": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 18),
    "retinanet-r18": ("retinanet/retinanet_r18_fpn_1x_coco.py", None),
    "mask-rcnn-r18": ("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", 18),
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
}


def make_detectron2(name: str, out_dir: str, seed: int = 0, sharpen: float = 30.0) -> str:
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
    model = build_model(cfg)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if module_name.endswith(("cls_score", "objectness_logits")) and hasattr(module, "weight"):
                module.weight.mul_(sharpen)
    folder = os.path.join(out_dir, f"d2-{name}")
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    torch.save({"model": model.state_dict()}, os.path.join(folder, "config.pth"))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--framework", choices=["mmdet", "detectron2"], default="mmdet")
    parser.add_argument("--which", nargs="+", default=["faster-rcnn-r50"], choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sharpen", type=float, default=30.0)
    args = parser.parse_args()
    for name in args.which:
        make = make_mmdet if args.framework == "mmdet" else make_detectron2
        print(make(name, args.out_dir, args.seed, args.sharpen))


if __name__ == "__main__":
    main()
