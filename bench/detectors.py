"""Detector rows: MMDetection's stock Faster R-CNN R50-FPN and Cascade Mask R-CNN R50-FPN
(random weights, examples/make_detectors.py) at 480x640, against MMDetection's own inference.

Each is optimized by the real flow at the fp16 and int8 levels (defaults: synthetic images for
the gate and the calibration); then, in one process on one synthetic image, MMDetection's
inference and each level's result loaded with accelflow.load are timed, each runner in its own
blocks (tasks/benchmark.time_separately). A row says what the flow selected and how the int8
gate went.
"""

from __future__ import annotations

import os

import numpy as np

MODELS = ("faster-rcnn-r50", "cascade-mask-rcnn-r50")
LEVELS = ("fp16", "int8")
HEIGHT, WIDTH = 480, 640
BASELINE = "mmdetection (torch)"


def missing() -> str:
    """Why the detector rows cannot run here ('' when they can)."""
    try:
        import mmdet  # noqa: F401  (imports mmcv.ops)
    except Exception as exc:  # ImportError, or mmcv built for another torch
        return f"MMDetection with mmcv's compiled ops is not importable ({type(exc).__name__}: {exc}); see docs/detectors.md"
    return ""


def measure(plan, bench_seconds: float, work: str, models=MODELS) -> list[dict]:
    """One row per runner and model: p50 ms, speed-up against MMDetection, what was selected."""
    from accelflow.core import tensor_info
    from accelflow.core.runner import thread_count
    from accelflow.formats import detections, mmdet_model
    from accelflow.tasks.benchmark import time_separately
    from examples.make_detectors import make_mmdet

    from bench import alternatives
    from bench.optimized import int8_outcome, optimize

    spec = [f"inputs[0]:float(3*{HEIGHT}*{WIDTH})"]
    image = detections.synthetic_image((3, HEIGHT, WIDTH), np.random.default_rng(123))
    rows = []
    for name in models:
        config = make_mmdet(name, os.path.join(work, "models"))
        results = {level: optimize(os.path.dirname(config), spec, level, f"{name}-{level}", work, bench_seconds)
                   for level in LEVELS}
        runners = {BASELINE: mmdet_model.baseline_runner(config, tensor_info.parse(spec), None, thread_count())}
        runners.update({f"accelflow {level}": alternatives.AccelflowRunner(f"accelflow {level}", folder)
                        for level, (folder, _) in results.items()})
        samples = time_separately(runners, [image], plan)
        p50 = {label: float(np.median([ms for block in samples[label] for ms in block])) for label in runners}
        for label, runner in runners.items():
            report = results.get(label.removeprefix("accelflow "), (None, {}))[1]
            rows.append({"model": name, "runner": label, "selected": getattr(runner, "engine", "torch f32"),
                         "p50_ms": p50[label], "speedup": p50[BASELINE] / p50[label],
                         "flow_speedup": report.get("speedup"), "accuracy": _accuracy(report),
                         "int8_gate": int8_outcome(report)})
        alternatives.release(runners)
    return rows


def _accuracy(report: dict) -> str:
    """The gate's detection figures of the selected candidate."""
    outputs = {o["output"]: o for o in (report.get("accuracy") or {}).get("outputs", [])}
    if "detections" not in outputs:
        return ""
    found = outputs["detections"]
    text = f"{found['cosine_similarity']:.1%} matched, box diff {found['max_abs_diff']:.2g} px"
    return text + (f", mask IoU {outputs['masks']['cosine_similarity']:.3f}" if "masks" in outputs else "")


def write(rows: list[dict], peak: dict, folder: str) -> str:
    """detectors.csv and detectors.md in `folder`; the markdown."""
    import pandas as pd

    from bench.report import machine_line

    os.makedirs(folder, exist_ok=True)
    pd.DataFrame(rows).to_csv(os.path.join(folder, "detectors.csv"), index=False)
    text = markdown(rows, machine_line(peak))
    with open(os.path.join(folder, "detectors.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"## Detectors: MMDetection at {HEIGHT}x{WIDTH} (bench/detectors.py)", "", machine, "",
             "Stock configs with random weights (examples/make_detectors.py), synthetic images; each runner "
             "timed in blocks of its own in one process (tasks.benchmark.time_separately). 'flow's own speed-up' "
             "is the report's, measured by the flow when it selected the candidate.", "",
             "| model | runner | selected | p50 ms | x mmdetection | flow's own speed-up | accuracy | int8 gate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flow = f"{r['flow_speedup']:.2f}x" if r["flow_speedup"] else ""
        lines.append(f"| {r['model']} | {r['runner']} | {r['selected']} | {r['p50_ms']:.1f} | {r['speedup']:.2f}x | "
                     f"{flow} | {r['accuracy']} | {r['int8_gate']} |")
    return "\n".join(lines) + "\n"
