"""Precision levels: every threshold a level sets, in one place.

A level says which precisions the engines may build (lossless: f32 only; fp16: also bf16 and
f16 where the CPU or GPU computes them) and how close the optimized model must stay to the
original: per output tensor, per detection (docs/detectors.md), and for a Stable Diffusion
pipeline's image (docs/diffusers.md). `qat` is not a level a user picks but the gate a model
trained with quantization-aware training is judged by (its engines build INT8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelflow.core.errors import SpecError


@dataclass(frozen=True)
class Level:
    name: str
    reduced_precision: bool  # engines may build below f32 (bf16, f16)
    # Floating outputs pass when max_abs_diff <= atol + rtol * max|reference| and cosine >=
    # min_cosine; integer/bool outputs when at most max_mismatch of their elements differ.
    tensors: dict[str, float] = field(default_factory=dict)
    # Detections matched by IoU >= min_iou; thresholds on the matched share, score and box
    # differences (pixels) and mask IoU; score_margin leaves out detections at the threshold.
    detections: dict[str, float] = field(default_factory=dict)
    min_psnr_db: float | None = None  # a pipeline's image against the original's


LOSSLESS = Level(
    "lossless", reduced_precision=False,
    tensors={"rtol": 1e-4, "atol": 1e-5, "min_cosine": 0.99999, "max_mismatch": 0.0},
    # Same precision, another engine: only float summation order differs (a mask pixel at
    # exactly the 0.5 threshold may flip).
    detections={"min_iou": 0.5, "min_matched": 0.98, "max_score_diff": 1e-3, "max_box_diff": 0.5,
                "score_margin": 1e-3, "min_mask_iou": 0.95},
    min_psnr_db=58.0,
)
FP16 = Level(
    "fp16", reduced_precision=True,
    tensors={"rtol": 3e-2, "atol": 1e-3, "min_cosine": 0.999, "max_mismatch": 0.01},
    # BF16/FP16 inference: near-tied boxes may swap in NMS, scores move by ~1e-2, mask edges
    # move with their boxes.
    detections={"min_iou": 0.5, "min_matched": 0.80, "max_score_diff": 0.05, "max_box_diff": 8.0,
                "score_margin": 0.02, "min_mask_iou": 0.80},
    min_psnr_db=30.0,
)
QAT = Level(
    "qat", reduced_precision=False,
    # INT8 kernels against the fake-quantized original: a value on a rounding boundary may land
    # one quantization step away, and that step propagates; the cosine stays high.
    tensors={"rtol": 5e-2, "atol": 1e-3, "min_cosine": 0.995, "max_mismatch": 0.02},
    detections=FP16.detections,
)

LEVELS: dict[str, Level] = {level.name: level for level in (FP16, LOSSLESS)}
GATES: dict[str, Level] = dict(LEVELS, qat=QAT)


def level_named(name: str) -> Level:
    """A level a user may ask for (`--level`)."""
    level = LEVELS.get(str(name).lower())
    if level is None:
        raise SpecError(f"unknown optimization level {name!r}; choose {' or '.join(LEVELS)}.")
    return level


def gate_named(name: str) -> Level:
    """The accuracy gate: a level, or `qat`."""
    gate = GATES.get(str(name).lower())
    return gate if gate is not None else level_named(name)
