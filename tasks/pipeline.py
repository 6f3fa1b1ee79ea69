"""The steps of optimizing a Stable Diffusion pipeline, network by network (docs/diffusers.md).

Each heavy network (text encoder, UNet, VAE decoder) goes through the same build, accuracy
and benchmark code as a single model (tasks.build, tasks.verify, tasks.benchmark), with the
network in PyTorch as its baseline. The original pipeline is loaded once per task and kept
here, like tasks.runners keeps loaded models, until `release()`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from accelflow.formats import diffusers_components, diffusers_pipeline
from accelflow.core import tensor_info
from accelflow.core.errors import AccelflowError
from accelflow.core.runner import run_arrays
from accelflow.reports.results import Accuracy, ShapeBenchmark
from accelflow.core import accuracy
from accelflow.tasks import benchmark, runners
from accelflow.tasks.convert import ConvertedModel, example_arrays

_PIPELINES: dict[str, object] = {}


def original(path: str):
    """The original pipeline, loaded once per task."""
    if path not in _PIPELINES:
        _PIPELINES[path] = diffusers_pipeline.load(path)
    return _PIPELINES[path]


def release() -> None:
    _PIPELINES.clear()


def plan_components(path: str, lines: list[str]) -> list[diffusers_pipeline.ComponentSpec]:
    """The networks to optimize and their tensor information; refused before any model loads."""
    diffusers_pipeline.read_index(path)
    diffusers_pipeline.import_diffusers()
    return diffusers_pipeline.components(path, lines)


def export_component(path: str, component, work_dir: str) -> ConvertedModel:
    start = time.perf_counter()
    spec = tensor_info.parse(component.lines)
    out_dir = os.path.join(work_dir, component.name, "onnx")
    onnx_path, io = diffusers_components.to_onnx(original(path), component, out_dir, example_arrays(spec))
    return ConvertedModel(onnx_path, io.to_dict(), time.perf_counter() - start)


def _baseline(path: str, name: str, threads: int):
    return diffusers_components.ComponentBaseline(original(path), name, threads)


def verify_component(path: str, component, converted: ConvertedModel, built: list, gate: str,
                     overrides: dict | None, draws: int, threads: int) -> dict[str, Accuracy]:
    """Every built candidate of one network against the network in PyTorch, on random draws."""
    spec = tensor_info.parse(component.lines)
    inputs = accuracy.random_draws(spec, component.int_ranges, draws)
    base = _baseline(path, component.name, threads)
    reference = [run_arrays(base, d.arrays) for d in inputs]
    tolerance = accuracy.tolerances(gate, overrides)
    results = {}
    for candidate in built:
        runner = runners.candidate(candidate, converted.io, threads)
        got = [run_arrays(runner, d.arrays) for d in inputs]
        results[candidate.key] = accuracy.compare(reference, got, converted.io["output_names"], tolerance)
    return results


def benchmark_component(path: str, component, converted: ConvertedModel, passing: list,
                        plan: benchmark.TimingPlan, threads: int) -> dict[str, list[ShapeBenchmark]]:
    """Every accurate candidate of one network against it in PyTorch, at each shape point."""
    spec = tensor_info.parse(component.lines)
    base = _baseline(path, component.name, threads)
    optimized = {c.key: runners.candidate(c, converted.io, threads) for c in passing}
    rng = np.random.default_rng(1)
    results: dict[str, list[ShapeBenchmark]] = {key: [] for key in optimized}
    for point in spec.shape_points():
        args, kwargs = spec.example_inputs(point, rng, component.int_ranges)
        rows = benchmark.benchmark_point(point.label, point.shapes, spec.flatten(args, kwargs), base, optimized, plan)
        for key, row in rows.items():
            results[key].append(row)
    return results


def select_component(name: str, candidates: list):
    """tasks.report.select for one network, its errors naming the network."""
    from accelflow.tasks.report import select

    try:
        return select(candidates)
    except AccelflowError as exc:
        raise type(exc)(f"pipeline component {name}: {exc}") from exc
