"""The benchmark suite: accelflow against what users can do themselves, on the same machine.

    python -m bench.run [--models resnet50 bert-base vit-b16 unet-small] [--batches 1 8]

For each reference model (bench/models.py, random weights, no download) and batch size it
times, in one process with the same inputs and thread count: PyTorch eager FP32, PyTorch
with bf16 autocast, torch.compile, ONNX Runtime and OpenVINO with default settings, and
accelflow's results at every level (lossless, fp16, int8; optimized here first by the real
flow, loaded with accelflow.load). Each runner is timed in blocks of its own (three passes
over all runners): alternating call by call would time each next to the others' spinning threads.

Then each accelflow result is timed co-hosted: alternating call by call with the plain ONNX
Runtime session, against each alone (bench/cohost.py). Results go to
bench/results/results.csv, cohosted.csv and results.md, with the CPU and its flags.

Then a pretrained model on real images (bench/pretrained.py: PP-OCRv4's text detector from
the rapidocr wheel, scikit-image's photographs): the int8 gate judged on meaningful activations.
Last, MMDetection's Faster R-CNN and Cascade Mask R-CNN R50 at 480x640 against MMDetection's own
inference, at the fp16 and int8 levels (bench/detectors.py), to detectors.md and detectors.csv.

A quick check: python -m bench.run --models resnet50 --batches 1 --seconds 5 --cohost-seconds 3
Detectors alone (the other files are left as they are): python -m bench.run --models --no-pretrained
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np
import torch
from accelflow.core.levels import LEVELS
from accelflow.core.runner import thread_count
from accelflow.tasks.benchmark import TimingPlan, time_separately

from bench import alternatives, cohost, detectors, pretrained, report
from bench.models import REFERENCES, build
from bench.optimized import optimize

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def optimize_levels(reference, ts_path: str, work: str, bench_seconds: float) -> dict[str, str]:
    """accelflow's result folder per level, from the real optimize flow."""
    return {level: optimize(ts_path, reference.tensor_info, level, f"{reference.name}-{level}", work, bench_seconds)[0]
            for level in ("lossless", "fp16", "int8") if level in LEVELS}


def measure(reference, batches: list[int], plan: TimingPlan, bench_seconds: float,
            cohost_seconds: float) -> tuple[list[dict], list[dict]]:
    """The main table's rows and the co-hosted rows for one reference model."""
    model = build(reference)
    with tempfile.TemporaryDirectory(prefix="accelflow-bench-") as work:
        ts_path = alternatives.save_torchscript(model, reference.inputs(2), os.path.join(work, "models"))
        onnx_path = alternatives.export_onnx(model, reference, os.path.join(work, "onnx"))
        folders = optimize_levels(reference, ts_path, work, bench_seconds)
        rows, cohosted = [], []
        for batch in batches:
            inputs = reference.inputs(batch)
            arrays = [t.numpy() for t in inputs]
            runners = alternatives.runners(model, inputs, onnx_path, folders)
            samples = time_separately(runners, arrays, plan)
            flops = alternatives.count_flops(model, inputs)
            rows += [report.row(reference.name, batch, label, runners[label], samples[label], flops)
                     for label in runners]
            cohosted += measure_cohosted(reference.name, batch, runners, onnx_path, arrays, cohost_seconds)
            alternatives.release(runners)
        return rows, cohosted


def measure_cohosted(model: str, batch: int, runners: dict, onnx_path: str, arrays: list,
                     seconds: float) -> list[dict]:
    """Each accelflow result next to a plain ONNX Runtime session: with ONNX Runtime's defaults
    (idle threads spinning), and with spinning off (as accelflow serves its ONNX Runtime results)."""
    neighbours = {"onnxruntime default": runners["onnxruntime default"],
                  "onnxruntime, spinning off": cohost.SessionRunner(onnx_path, thread_count(), cohost.SPIN_OFF)}
    return [report.cohosted_row(model, batch, label, name, cohost.cohosted(runner, arrays, neighbour, arrays, seconds))
            for label, runner in runners.items() if label.startswith(report.ACCELFLOW)
            for name, neighbour in neighbours.items()]


def extra_sections(args, plan: TimingPlan, peak: dict) -> str:
    """The pretrained model's and the detectors' sections of results.md (the detectors' are also
    written to detectors.md and detectors.csv, so that a run of them alone keeps the rest)."""
    extra = ""
    if args.pretrained:
        print("== ppocrv4-det (pretrained)", flush=True)
        with tempfile.TemporaryDirectory(prefix="accelflow-bench-") as work:
            extra = pretrained.markdown(pretrained.measure(plan, args.bench_seconds, work))
    if args.detectors:
        print("== detectors (MMDetection)", flush=True)
        if detectors.missing():
            print(f"   skipped: {detectors.missing()}")
        else:
            with tempfile.TemporaryDirectory(prefix="accelflow-bench-") as work:
                extra += "\n" + detectors.write(detectors.measure(plan, args.bench_seconds, work), peak, args.out)
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [r.name for r in REFERENCES]
    parser.add_argument("--models", nargs="*", default=names, choices=names, help="none: only the extra sections")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per model and batch, all runners")
    parser.add_argument("--min-samples", type=int, default=8)
    parser.add_argument("--cohost-seconds", type=float, default=12.0,
                        help="co-hosted timing per accelflow result: alone and alternating phases together")
    parser.add_argument("--bench-seconds", type=float, default=3.0, help="accelflow's own benchmark per shape")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                        help="also PP-OCRv4's pretrained detector on real images (bench/pretrained.py)")
    parser.add_argument("--detectors", action=argparse.BooleanOptionalAction, default=True,
                        help="also MMDetection's Faster R-CNN and Cascade Mask R-CNN R50 at 480x640 (bench/detectors.py)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(thread_count())
    plan = TimingPlan(seconds=args.seconds, min_samples=args.min_samples, warmup_seconds=1.0)
    peak = report.machine_peak()
    rows, cohosted = [], []
    for reference in [r for r in REFERENCES if r.name in args.models]:
        print(f"== {reference.name}", flush=True)
        main_rows, cohosted_rows = measure(reference, args.batches, plan, args.bench_seconds, args.cohost_seconds)
        rows, cohosted = rows + main_rows, cohosted + cohosted_rows
        report.write(rows, peak, args.out, cohosted)  # after each model, so a long run leaves partial results
    extra = extra_sections(args, plan, peak)
    if rows:
        report.write(rows, peak, args.out, cohosted, extra)
    print((report.markdown(rows, peak) + "\n" + report.cohosted_markdown(cohosted) if rows else "") + "\n" + extra)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
