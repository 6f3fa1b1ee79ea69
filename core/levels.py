"""Precision levels: every threshold a level sets, in one place.

A level says which precisions the engines may build (lossless: f32 only; fp16: also bf16 and
f16 where the CPU or GPU computes them) and how close the optimized model must stay to the
original: per output tensor, per detection (docs/detectors.md), and for a Stable Diffusion
pipeline's image (docs/diffusers.md). int8 also builds INT8 engines from a graph quantized on
calibration inputs (docs/int8.md). `qat` is not a level a user picks but the gate a model
trained with quantization-aware training is judged by (its engines build INT8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelflow.core.errors import SpecError


@dataclass(frozen=True)
class Level:
    name: str
    reduced_precision: bool  # engines may build below f32 (bf16, f16)
    description: str = ""  # what a user gets, in the CLI's help and the run form
    # Floating outputs pass when max_abs_diff <= atol + rtol * max|reference| and cosine >=
    # min_cosine (and, where set, relative L2 error <= max_rel_l2, and for a classifier's scores
    # top-1 / top-5 agreement >= min_top1 / min_top5); integer/bool outputs when at most
    # max_mismatch of their elements differ.
    tensors: dict[str, float] = field(default_factory=dict)
    # Detections matched by IoU >= min_iou; thresholds on the matched share, score and box
    # differences (pixels) and mask IoU; score_margin leaves out detections at the threshold.
    detections: dict[str, float] = field(default_factory=dict)
    min_psnr_db: float | None = None  # a pipeline's image against the original's
    int8: bool = False  # engines also build INT8 from a calibrated, quantized graph


LOSSLESS = Level(
    "lossless", reduced_precision=False, description="float32 accuracy",
    tensors={"rtol": 1e-4, "atol": 1e-5, "min_cosine": 0.99999, "max_mismatch": 0.0},
    # Same precision, another engine: only float summation order differs (a mask pixel at
    # exactly the 0.5 threshold may flip).
    detections={"min_iou": 0.5, "min_matched": 0.98, "max_score_diff": 1e-3, "max_box_diff": 0.5,
                "score_margin": 1e-3, "min_mask_iou": 0.95},
    min_psnr_db=58.0,
)
FP16 = Level(
    "fp16", reduced_precision=True, description="fastest within fp16 accuracy, bf16/f16 where faster",
    tensors={"rtol": 3e-2, "atol": 1e-3, "min_cosine": 0.999, "max_mismatch": 0.01},
    # BF16/FP16 inference: near-tied boxes may swap in NMS, scores move by ~1e-2, mask edges
    # move with their boxes.
    detections={"min_iou": 0.5, "min_matched": 0.80, "max_score_diff": 0.05, "max_box_diff": 8.0,
                "score_margin": 0.02, "min_mask_iou": 0.80},
    min_psnr_db=30.0,
)
INT8 = Level(
    "int8", reduced_precision=True, int8=True,
    description="fastest within int8 accuracy: calibrated INT8, else the fastest float that passes",
    # Post-training INT8 against the float original: every value moves by up to a quantization
    # step, so the gate judges the whole output (cosine, relative L2 error) and, for a
    # classifier's scores, whether the top classes stay the same; single elements may move more.
    tensors={"rtol": 0.25, "atol": 1e-2, "min_cosine": 0.99, "max_rel_l2": 0.1, "max_mismatch": 0.02,
             "min_top1": 0.9, "min_top5": 0.98},
    # Boxes move by a few pixels and scores by a few hundredths; near-ties swap in NMS.
    detections={"min_iou": 0.5, "min_matched": 0.75, "max_score_diff": 0.1, "max_box_diff": 12.0,
                "score_margin": 0.05, "min_mask_iou": 0.7},
    min_psnr_db=25.0,
)
QAT = Level(
    "qat", reduced_precision=False, description="the INT8 gate of a model trained with quantization",
    # INT8 kernels against the fake-quantized original: a value on a rounding boundary may land
    # one quantization step away, and that step propagates; the cosine stays high.
    tensors={"rtol": 5e-2, "atol": 1e-3, "min_cosine": 0.995, "max_mismatch": 0.02},
    detections=FP16.detections,
)

LEVELS: dict[str, Level] = {level.name: level for level in (FP16, LOSSLESS, INT8)}
GATES: dict[str, Level] = dict(LEVELS, qat=QAT)


def level_named(name: str) -> Level:
    """A level a user may ask for (`--level`)."""
    level = LEVELS.get(str(name).lower())
    if level is None:
        *others, last = LEVELS
        raise SpecError(f"unknown optimization level {name!r}; choose {', '.join(others)} or {last}.")
    return level


def gate_named(name: str) -> Level:
    """The accuracy gate: a level, or `qat`."""
    gate = GATES.get(str(name).lower())
    return gate if gate is not None else level_named(name)


def level_help() -> str:
    """Every level a user may pick and what it gives, for the CLI's help and the run form."""
    return "; ".join(f"{level.name} ({level.description})" for level in LEVELS.values())
