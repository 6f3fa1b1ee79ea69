"""Step 5: the accuracy gate: original vs optimized outputs on the same inputs.

The comparison itself (and what passes) is core/accuracy.py; this step draws the inputs,
runs the original and every candidate on them, and judges detectors on their detections.

"""

from __future__ import annotations

import numpy as np
from accelflow.core.accuracy import Accuracy, Draw, compare, random_draws, sample_draws, tolerances
from accelflow.core.errors import AccelflowError, ModelMismatchError, last_line
from accelflow.core.runner import run_arrays
from accelflow.formats import detections
from accelflow.tasks.context import AccuracyCheck, ModelContext
from accelflow.tasks.runners import RunnerPool

from accelflow import formats

TENSOR_OPTIONS = ("rtol", "atol", "min_cosine")


def check_overrides(fmt, overrides: dict | None) -> None:
    """Refuse accuracy options that do not apply to this model's kind of outputs."""
    detector = hasattr(fmt, "postprocessor")  # formats/detections.py: judged on detections
    wrong = [k for k in overrides or {} if (k not in TENSOR_OPTIONS) != detector]
    if not wrong:
        return
    flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
    if detector:
        raise ModelMismatchError(f"{flags}: this {fmt.NAME} detector is judged on its detections, not on "
                                 "tensors; use --min-matched, --max-score-diff, --max-box-diff or --min-mask-iou.")
    raise ModelMismatchError(f"{flags} applies to detectors (MMDetection, Detectron2) only, and this model "
                             f"is {fmt.NAME}; use --rtol, --atol or --min-cosine.")


def verify_candidates(ctx: ModelContext, built: list, check: AccuracyCheck, pool: RunnerPool) -> dict[str, Accuracy]:
    """Accuracy of every built candidate against the original model, keyed by candidate.

    A detector is judged on its detections matched by IoU (formats/detections.py), on
    synthetic images with shapes in them: random noise gives a detector nothing to find.
    """
    check_overrides(formats.format_named(ctx.format), check.overrides)
    detector = detections.is_detector(ctx.io)
    if check.samples:
        inputs = sample_draws(ctx.spec, check.samples)
    elif detector:
        inputs = [Draw(label, arrays) for label, arrays in detections.image_draws(ctx.spec, check.draws)]
    else:
        inputs = random_draws(ctx.spec, ctx.int_ranges, check.draws)
    base = pool.reference(ctx)
    reference = [_reference(base, d) for d in inputs]
    tolerance = (detections.tolerances if detector else tolerances)(check.gate, check.overrides)
    results = {}
    for candidate in built:
        runner = pool.candidate(candidate, ctx.io, ctx.threads)
        optimized = [run_arrays(runner, d.arrays) for d in inputs]
        results[candidate.key] = _judge(reference, optimized, ctx.io, tolerance)
        if not results[candidate.key].passed:
            pool.release(candidate)  # never run again: its memory goes back before the next one loads
    return results


def _judge(reference, optimized, io: dict, tolerance: dict) -> Accuracy:
    if not detections.is_detector(io):
        return compare(reference, optimized, io["output_names"], tolerance)
    source = io["source"]
    return detections.compare(reference, optimized, source["detections_structure"], tolerance,
                              source.get("score_thr", 0.0), source.get("max_detections"))


def _reference(baseline, draw: Draw) -> list[np.ndarray]:
    """The original model's outputs; its failure at a declared shape is the user's to fix."""
    try:
        return run_arrays(baseline, draw.arrays)
    except AccelflowError:
        raise
    except Exception as exc:
        shapes = ", ".join(str(tuple(a.shape)) for a in draw.arrays)
        raise ModelMismatchError(
            f"the original model fails at shape point {draw.label} (inputs {shapes}): {last_line(exc)}. "
            "Check that every size the tensor information allows is one the model accepts."
        ) from exc
