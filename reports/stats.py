"""Statistics over measured latencies: summaries, speed-up with a bootstrap interval, tables.

Pure pandas/numpy on numbers the tasks measured; nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from accelflow.reports.results import Candidate, LatencyStats, Speedup, TaskReport


def latency_stats(samples_ms: Sequence[float], batch_size: int = 1) -> LatencyStats:
    """Summarise one runner's latency samples (ms); throughput in samples per second."""
    samples = pd.Series(samples_ms, dtype="float64")
    if samples.empty or not np.isfinite(samples).all():
        raise ValueError(f"latency samples must be a non-empty list of finite numbers, got {len(samples)} values")
    mean = float(samples.mean())
    if mean <= 0 or batch_size < 1:
        raise ValueError(f"latency mean must be positive and batch size >= 1 (mean {mean} ms, batch {batch_size})")
    quantiles = samples.quantile([0.5, 0.9, 0.99])
    # Sample std (ddof=1) estimates the runner's spread; one sample has no spread to estimate.
    std = float(samples.std(ddof=1)) if len(samples) > 1 else 0.0
    return LatencyStats(
        mean=mean,
        p50=float(quantiles[0.5]),
        p90=float(quantiles[0.9]),
        p99=float(quantiles[0.99]),
        std=std,
        iterations=int(len(samples)),
        throughput=batch_size * 1000.0 / mean,
    )


def speedup(
    baseline_rounds_ms: Sequence[Sequence[float]],
    optimized_rounds_ms: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Speedup:
    """Median(baseline) / median(optimized) with a paired percentile bootstrap over rounds.

    Rounds are resampled, not single calls, because the two runners were timed interleaved
    round by round: drift of the machine (heat, other load) hits both within a round, and
    keeping rounds paired keeps that drift out of the ratio's interval.
    """
    base, opt = _as_rounds(baseline_rounds_ms), _as_rounds(optimized_rounds_ms)
    if len(base) != len(opt):
        raise ValueError(f"baseline has {len(base)} rounds but optimized has {len(opt)}; rounds must be paired")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence}, {resamples}")
    opt_median = float(np.median(np.concatenate(opt)))
    if opt_median <= 0:
        raise ValueError(f"optimized median latency must be positive, got {opt_median} ms")
    ratio = float(np.median(np.concatenate(base))) / opt_median
    counts = _resample_counts(np.random.default_rng(seed), len(base), resamples)
    ratios = _bootstrap_medians(base, counts) / _bootstrap_medians(opt, counts)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return Speedup(ratio=ratio, ci_low=float(low), ci_high=float(high), confidence=confidence)


def _as_rounds(rounds_ms: Sequence[Sequence[float]]) -> list[np.ndarray]:
    rounds = [np.asarray(r, dtype=np.float64).ravel() for r in rounds_ms]
    if not rounds or any(r.size == 0 for r in rounds):
        raise ValueError("need at least one round, and every round needs at least one sample")
    if not all(np.isfinite(r).all() for r in rounds):
        raise ValueError("latency samples must be finite numbers")
    return rounds


def _resample_counts(rng: np.random.Generator, n_rounds: int, resamples: int) -> np.ndarray:
    """How often each round is drawn in each resample: (resamples, n_rounds) int32."""
    drawn = rng.integers(0, n_rounds, size=(resamples, n_rounds))
    flat = drawn + n_rounds * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_rounds).reshape(resamples, n_rounds).astype(np.int32)


def _bootstrap_medians(rounds: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Median of the union of rounds repeated counts[b] times, for every resample b.

    Materialising each resample (2000 x all samples) and taking medians costs ~150 ms;
    instead sort all samples once and binary-search each resample's middle ranks, where
    a resample's rank of a value is counts[b] @ (per-round samples at or below it).
    """
    lengths = np.array([r.size for r in rounds])
    values = np.concatenate(rounds)
    order = np.argsort(values, kind="stable")
    values = values[order]
    owner = np.repeat(np.arange(len(rounds)), lengths)[order]
    at_or_below = np.zeros((values.size, len(rounds)), dtype=np.int32)
    at_or_below[np.arange(values.size), owner] = 1
    np.cumsum(at_or_below, axis=0, out=at_or_below)
    total = counts @ lengths
    lower = _first_reaching(at_or_below, counts, (total + 1) // 2)
    upper = _first_reaching(at_or_below, counts, total // 2 + 1)
    return (values[lower] + values[upper]) / 2.0


def _first_reaching(at_or_below: np.ndarray, counts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Per resample, the first sorted index whose resampled rank reaches `rank` (1-based)."""
    low = np.zeros(len(counts), dtype=np.int64)
    high = np.full(len(counts), len(at_or_below) - 1, dtype=np.int64)
    for _ in range(max(1, math.ceil(math.log2(len(at_or_below)))) + 1):
        middle = (low + high) // 2
        reached = np.einsum("ij,ij->i", counts, at_or_below[middle]) >= rank
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle + 1)
    return low


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive ratios: the fair average of speed-ups across shape points."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or not np.isfinite(array).all() or (array <= 0).any():
        raise ValueError(f"geometric mean needs a non-empty list of positive finite numbers, got {list(values)}")
    return float(np.exp(np.log(array).mean()))


SUMMARY_COLUMNS = [
    "candidate", "engine", "engine_version", "precision", "shape_point",
    "baseline_p50_ms", "optimized_p50_ms", "speedup", "ci_low", "ci_high",
    "selected", "accuracy_passed",
]


def summary_frame(report: TaskReport) -> pd.DataFrame:
    """One row per (candidate, shape point); a candidate never timed still gets one row."""
    rows = [row for index, cand in enumerate(report.candidates) for row in _candidate_rows(index, cand)]
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    # Nullable dtypes: an unchecked or unbuilt candidate has no verdict, which is not False.
    return frame.astype({"selected": "bool", "accuracy_passed": "boolean"})


def _candidate_rows(index: int, cand: Candidate) -> list[dict]:
    common = {
        "candidate": index,
        "engine": cand.engine,
        "engine_version": cand.engine_version,
        "precision": cand.precision,
        "selected": cand.selected,
        "accuracy_passed": None if cand.accuracy is None else cand.accuracy.passed,
    }
    if not cand.benchmarks:
        return [{**common, "shape_point": None}]
    return [
        {
            **common,
            "shape_point": bench.shape_point,
            "baseline_p50_ms": bench.baseline.p50,
            "optimized_p50_ms": bench.optimized.p50,
            "speedup": bench.speedup.ratio,
            "ci_low": bench.speedup.ci_low,
            "ci_high": bench.speedup.ci_high,
        }
        for bench in cand.benchmarks
    ]
