"""The steps of optimizing a Stable Diffusion pipeline, network by network (docs/diffusers.md).

Each heavy network (text encoder, UNet, VAE decoder) goes through the same build, accuracy
and benchmark code as a single model (tasks.build, tasks.verify, tasks.benchmark), with the
network in PyTorch as its baseline. The original pipeline is loaded once per task, in the
task's RunnerPool (tasks/runners.py) like every other loaded model.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
from accelflow.core import accuracy, tensor_info
from accelflow.core.errors import AccelflowError
from accelflow.core.runner import run_arrays
from accelflow.formats import diffusers_components, diffusers_pipeline
from accelflow.reports.results import Accuracy, ShapeBenchmark
from accelflow.tasks import benchmark
from accelflow.tasks.context import AccuracyCheck, ModelContext
from accelflow.tasks.convert import ConvertedModel, example_arrays
from accelflow.tasks.runners import RunnerPool


def original(pool: RunnerPool, path: str):
    """The original pipeline, loaded once per task."""
    return pool.load(("pipeline", path), lambda: diffusers_pipeline.load(path, pool.trust_model_code))


def pipeline_class(pool: RunnerPool, path: str) -> str:
    """The original pipeline's class name (the report names it)."""
    return type(original(pool, path)).__name__


def plan_components(path: str, spec: tensor_info.TensorInfo) -> list[diffusers_pipeline.ComponentSpec]:
    """The networks to optimize and their tensor information; refused before any model loads."""
    diffusers_pipeline.read_index(path)
    diffusers_pipeline.import_diffusers()
    return diffusers_pipeline.components(path, spec.lines())


def component_context(pipeline_ctx: ModelContext, component) -> ModelContext:
    """A network of the pipeline as a model of its own: its tensor information, ranges and folder."""
    return replace(pipeline_ctx, spec=tensor_info.parse(component.lines), int_ranges=component.int_ranges,
                   work_dir=os.path.join(pipeline_ctx.work_dir, component.name))


def export_component(ctx: ModelContext, component, pool: RunnerPool) -> ConvertedModel:
    start = time.perf_counter()
    out_dir = os.path.join(ctx.work_dir, "onnx")
    onnx_path, io = diffusers_components.to_onnx(original(pool, ctx.model_file), component, out_dir,
                                                  example_arrays(ctx.spec))
    return ConvertedModel(onnx_path, io.to_dict(), time.perf_counter() - start)


def _baseline(pool: RunnerPool, ctx: ModelContext, name: str):
    return pool.load(("component", name), lambda: diffusers_components.ComponentBaseline(
        original(pool, ctx.model_file), name, ctx.threads))


def verify_component(ctx: ModelContext, component, built: list, check: AccuracyCheck,
                     pool: RunnerPool) -> dict[str, Accuracy]:
    """Every built candidate of one network against the network in PyTorch, on random draws."""
    inputs = accuracy.random_draws(ctx.spec, ctx.int_ranges, check.draws)
    base = _baseline(pool, ctx, component.name)
    reference = [run_arrays(base, d.arrays) for d in inputs]
    tolerance = accuracy.tolerances(check.gate, check.overrides)
    results = {}
    for candidate in built:
        runner = pool.candidate(candidate, ctx.io, ctx.threads)
        got = [run_arrays(runner, d.arrays) for d in inputs]
        results[candidate.key] = accuracy.compare(reference, got, ctx.io["output_names"], tolerance)
        if not results[candidate.key].passed:
            pool.release(candidate)  # never run again (tasks/runners.py)
    return results


def benchmark_component(ctx: ModelContext, component, passing: list, plan: benchmark.TimingPlan,
                        pool: RunnerPool) -> dict[str, list[ShapeBenchmark]]:
    """Every accurate candidate of one network against it in PyTorch, at each shape point."""
    base = _baseline(pool, ctx, component.name)
    optimized = {c.key: pool.candidate(c, ctx.io, ctx.threads) for c in passing}
    rng = np.random.default_rng(1)
    results: dict[str, list[ShapeBenchmark]] = {key: [] for key in optimized}
    for point in ctx.spec.shape_points():
        arrays = ctx.spec.flatten(*ctx.spec.example_inputs(point, rng, ctx.int_ranges))
        rows = benchmark.benchmark_point(point.label, point.shapes, arrays, base, optimized, plan)
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
