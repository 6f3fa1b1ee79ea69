"""The benchmark suite: accelflow against what users can do themselves, on the same machine.

    python -m bench.run [--models resnet50 bert-base vit-b16 unet-small] [--batches 1 8]

For each reference model (bench/models.py, random weights, no download) and batch size it
times, interleaved in one process with the same inputs and thread count: PyTorch eager FP32,
PyTorch with bf16 autocast, torch.compile, ONNX Runtime and OpenVINO with default settings,
and accelflow's results at the lossless and FP16 levels (optimized here first by the real
flow). Results go to bench/results/results.csv and results.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np
import torch
from accelflow.core.runner import thread_count
from accelflow.tasks.benchmark import TimingPlan, time_runners

from bench import alternatives, report
from bench.models import REFERENCES, build

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def optimize_levels(reference, ts_path: str, work: str, bench_seconds: float) -> dict[str, str]:
    """accelflow's result folder per level, from the real optimize flow."""
    from accelflow.flows.optimize import optimize
    from accelflow.flows.request import OptimizeRequest

    folders = {}
    for level in ("lossless", "fp16"):
        request = OptimizeRequest(model=ts_path, tensor_info=reference.tensor_info, level=level,
                                  output=os.path.join(work, "out"), name=f"{reference.name}-{level}",
                                  bench_seconds=bench_seconds)
        folders[level] = optimize.with_options(flow_run_name=request.name)(request=request)["result_folder"]
    return folders


def measure(reference, batches: list[int], plan: TimingPlan, bench_seconds: float) -> list[dict]:
    model = build(reference)
    with tempfile.TemporaryDirectory(prefix="accelflow-bench-") as work:
        ts_path = alternatives.save_torchscript(model, reference.inputs(2), os.path.join(work, "models"))
        onnx_path = alternatives.export_onnx(model, reference, os.path.join(work, "onnx"))
        folders = optimize_levels(reference, ts_path, work, bench_seconds)
        rows = []
        for batch in batches:
            inputs = reference.inputs(batch)
            runners = alternatives.runners(model, inputs, onnx_path, folders)
            samples = time_runners(runners, [t.numpy() for t in inputs], plan)
            flops = alternatives.count_flops(model, inputs)
            rows += [report.row(reference.name, batch, label, runners[label], samples[label], flops)
                     for label in runners]
            alternatives.release(runners)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[r.name for r in REFERENCES])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per model and batch, all runners")
    parser.add_argument("--min-samples", type=int, default=8)
    parser.add_argument("--bench-seconds", type=float, default=3.0, help="accelflow's own benchmark per shape")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(thread_count())
    plan = TimingPlan(seconds=args.seconds, min_samples=args.min_samples, block=2, warmup_seconds=1.0)
    peak = report.machine_peak()
    rows = []
    for reference in [r for r in REFERENCES if r.name in args.models]:
        print(f"== {reference.name}", flush=True)
        rows += measure(reference, args.batches, plan, args.bench_seconds)
        report.write(rows, peak, args.out)  # after each model, so a long run leaves partial results
    print(report.markdown(rows, peak))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
