"""Step 6: time the original model and every accurate candidate, interleaved, in one process.

At each shape point all runners take turns in rounds (the order rotates each round); in its
turn a runner makes one untimed call (to reload caches another runner evicted) and then
`block` timed calls. Rounds continue until every runner has `min_samples` and `seconds`
have passed, or `max_samples` is reached. Only the inference call is timed; inputs are
prepared beforehand, the same way for every runner.

`time_separately` times each runner in blocks of its own instead, a few passes over all
(bench/run.py's table): a comparison of runtimes whose idle threads behave differently after
a call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from accelflow.core.runner import Runner
from accelflow.formats import detections
from accelflow.reports.results import ShapeBenchmark
from accelflow.reports.stats import latency_stats, speedup
from accelflow.tasks.context import ModelContext
from accelflow.tasks.runners import RunnerPool

BASELINE = "baseline"


@dataclass
class TimingPlan:
    seconds: float = 5.0  # per shape point, all runners together
    min_samples: int = 10
    max_samples: int = 300
    block: int = 3
    warmup_seconds: float = 0.5
    max_warmup_calls: int = 20


def time_runners(runners: dict[str, Runner], arrays: list[np.ndarray], plan: TimingPlan) -> dict[str, list[list[float]]]:
    """Latency samples in ms per runner, grouped by round: {label: [[ms, ...], ...]}."""
    feeds = {label: runner.prepare(arrays) for label, runner in runners.items()}
    for label, runner in runners.items():
        _warm_up(runner, feeds[label], plan)
    rounds: dict[str, list[list[float]]] = {label: [] for label in runners}
    labels, start, turn = list(runners), time.perf_counter(), 0
    while not _done(rounds, time.perf_counter() - start, plan):
        order = labels[turn % len(labels):] + labels[: turn % len(labels)]
        for label in order:
            rounds[label].append(_timed_block(runners[label], feeds[label], plan.block))
        turn += 1
    return rounds


def time_separately(runners: dict[str, Runner], arrays: list[np.ndarray], plan: TimingPlan,
                    passes: int = 3) -> dict[str, list[list[float]]]:
    """Latency samples in ms per runner, each runner timed in blocks of its own, never call by
    call with another: {label: [[ms, ...] per pass]}. In each of `passes` passes every runner
    times one block (an equal share of `seconds`; `min_samples` and `max_samples` are split
    over the passes), in an order that rotates each pass.

    Alternating runners call by call measures each next to the others: a runtime whose idle
    threads spin after a call (ONNX Runtime's, OpenMP's) slows whoever runs next, so the
    verdict would depend on the neighbours' threading rather than the runner's own speed.
    Several passes, rather than one block each, keep a change in a shared machine's load from
    landing on one runner only. A block starts with two untimed calls: the previous runner's
    spinning threads may still hold the cores, and its data evicted this runner's from the caches.
    """
    feeds = {label: runner.prepare(arrays) for label, runner in runners.items()}
    for label, runner in runners.items():
        _warm_up(runner, feeds[label], plan)
    share = plan.seconds / max(1, len(runners) * passes)
    least, most = -(-plan.min_samples // passes), max(1, plan.max_samples // passes)
    timed: dict[str, list[list[float]]] = {label: [] for label in runners}
    labels = list(runners)
    for turn in range(passes):
        for label in labels[turn % len(labels):] + labels[: turn % len(labels)]:
            runners[label].run(feeds[label])
            runners[label].run(feeds[label])
            timed[label].append(_timed_for(runners[label], feeds[label], share, least, most))
    return timed


def _timed_for(runner: Runner, feed, seconds: float, least: int, most: int) -> list[float]:
    samples, start = [], time.perf_counter()
    while len(samples) < most and (len(samples) < least or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        runner.run(feed)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _warm_up(runner: Runner, feed, plan: TimingPlan) -> None:
    start, calls = time.perf_counter(), 0
    while calls < 3 or (time.perf_counter() - start < plan.warmup_seconds and calls < plan.max_warmup_calls):
        runner.run(feed)
        calls += 1


def _timed_block(runner: Runner, feed, block: int) -> list[float]:
    runner.run(feed)
    samples = []
    for _ in range(block):
        t0 = time.perf_counter()
        runner.run(feed)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _done(rounds: dict[str, list[list[float]]], elapsed: float, plan: TimingPlan) -> bool:
    counts = [sum(len(r) for r in runner_rounds) for runner_rounds in rounds.values()]
    if max(counts) >= plan.max_samples:
        return True
    return min(counts) >= plan.min_samples and elapsed >= plan.seconds


def benchmark_point(label: str, shapes: dict, arrays: list[np.ndarray], baseline: Runner,
                    candidates: dict[str, Runner], plan: TimingPlan) -> dict[str, ShapeBenchmark]:
    """Each candidate's ShapeBenchmark against the baseline at one shape point."""
    rounds = time_runners({BASELINE: baseline, **candidates}, arrays, plan)
    batch = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
    base_stats = latency_stats(_flat(rounds[BASELINE]), batch)
    plain_shapes = {k: [int(d) for d in v] for k, v in shapes.items()}
    return {
        key: ShapeBenchmark(label, plain_shapes, base_stats, latency_stats(_flat(rounds[key]), batch),
                            speedup(rounds[BASELINE], rounds[key]))
        for key in candidates
    }


def _flat(rounds: list[list[float]]) -> list[float]:
    return [ms for block in rounds for ms in block]


def benchmark_candidates(ctx: ModelContext, passing: list, plan: TimingPlan, pool: RunnerPool,
                         progress=None) -> dict[str, list[ShapeBenchmark]]:
    """Every passing candidate against the baseline at every shape point, keyed by candidate.

    Integer inputs are drawn from the same ranges as the accuracy check's (token ids must stay
    inside the vocabulary, or the original model fails). A detector is timed on a synthetic
    image with shapes in it, as its accuracy is checked: on noise it would find nothing, and
    its heads and NMS would cost less than on a real image."""
    base = pool.baseline(ctx)
    optimized = {c.key: pool.candidate(c, ctx.io, ctx.threads) for c in passing}
    rng = np.random.default_rng(1)
    results: dict[str, list[ShapeBenchmark]] = {key: [] for key in optimized}
    points = ctx.spec.shape_points()
    for i, point in enumerate(points):
        if detections.is_detector(ctx.io):
            arrays = detections.point_images(ctx.spec, point, rng)
        else:
            arrays = ctx.spec.flatten(*ctx.spec.example_inputs(point, rng, ctx.int_ranges))
        rows = benchmark_point(point.label, point.shapes, arrays, base, optimized, plan)
        for key, row in rows.items():
            results[key].append(row)
        if progress:
            progress(i + 1, len(points), point.label)
    return results
