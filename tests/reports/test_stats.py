import time

import numpy as np
import pandas as pd
import pytest
from accelflow.reports.stats import (
    SUMMARY_COLUMNS,
    _bootstrap_medians,
    _resample_counts,
    geometric_mean,
    latency_stats,
    speedup,
    summary_frame,
)

from tests.reports.test_render import make_report


def test_latency_stats_match_numpy():
    samples = [12.0, 10.5, 11.2, 30.0, 10.9, 11.1, 10.7, 11.8, 10.2, 13.4, 10.8]
    stats = latency_stats(samples, batch_size=8)
    array = np.array(samples)
    assert stats.mean == pytest.approx(array.mean())
    assert stats.p50 == pytest.approx(np.percentile(array, 50))
    assert stats.p90 == pytest.approx(np.percentile(array, 90))
    assert stats.p99 == pytest.approx(np.percentile(array, 99))
    assert stats.std == pytest.approx(array.std(ddof=1))
    assert stats.iterations == 11
    assert stats.throughput == pytest.approx(8 * 1000 / array.mean())
    assert all(type(v) in (float, int) for v in vars(stats).values())


def test_latency_stats_single_sample_has_zero_spread():
    stats = latency_stats([4.0])
    assert (stats.mean, stats.p50, stats.p99, stats.std, stats.throughput) == (4.0, 4.0, 4.0, 0.0, 250.0)


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [0.0, 0.0], [1.0, float("inf")]])
def test_latency_stats_rejects_bad_samples(samples):
    with pytest.raises(ValueError):
        latency_stats(samples)


def _synthetic(rng, rounds=200, calls=10):
    return rng.normal(10, 0.2, (rounds, calls)), rng.normal(5, 0.1, (rounds, calls))


def test_speedup_ci_contains_true_ratio_and_is_narrow():
    base, opt = _synthetic(np.random.default_rng(1))
    result = speedup(base, opt)
    assert result.ratio == pytest.approx(np.median(base) / np.median(opt))
    assert result.ratio == pytest.approx(2.0, abs=0.01)
    assert result.ci_low < 2.0 < result.ci_high
    assert result.ci_low <= result.ratio <= result.ci_high
    assert result.ci_high - result.ci_low < 0.03
    assert result.confidence == 0.95


def test_speedup_identical_data_is_one():
    base, _ = _synthetic(np.random.default_rng(2))
    result = speedup(base, base.copy())
    assert result.ratio == 1.0
    assert result.ci_low <= 1.0 <= result.ci_high
    assert result.ci_high - result.ci_low < 1e-12


def test_speedup_pairing_cancels_drift_shared_by_a_round():
    # Each round's machine drift (+-30 %) hits both runners; paired rounds keep it out of the CI.
    rng = np.random.default_rng(3)
    drift = 1 + rng.normal(0, 0.3, (50, 1)).clip(-0.6, 0.6)
    base = 10 * drift * rng.normal(1, 0.005, (50, 4))
    opt = 5 * drift * rng.normal(1, 0.005, (50, 4))
    result = speedup(base, opt)
    assert result.ci_low < 2.0 < result.ci_high
    assert result.ci_high - result.ci_low < 0.15
    unpaired = speedup(base, opt[rng.permutation(50)])
    assert unpaired.ci_high - unpaired.ci_low > 2 * (result.ci_high - result.ci_low)


def test_speedup_is_reproducible_by_seed_and_confidence_widens():
    base, opt = _synthetic(np.random.default_rng(4), rounds=30)
    assert speedup(base, opt, seed=5) == speedup(base, opt, seed=5)
    narrow = speedup(base, opt, confidence=0.5)
    wide = speedup(base, opt, confidence=0.99)
    assert wide.ci_low < narrow.ci_low <= narrow.ci_high < wide.ci_high
    assert wide.confidence == 0.99


def test_speedup_accepts_ragged_rounds():
    base = [[10.0, 10.2], [9.9], [10.1, 10.0, 10.3]]
    opt = [[5.0], [5.1, 4.9], [5.0, 5.05]]
    result = speedup(base, opt, resamples=500)
    assert result.ratio == pytest.approx(np.median(sum(base, [])) / np.median(sum(opt, [])))
    assert result.ci_low <= result.ratio <= result.ci_high


@pytest.mark.parametrize("base, opt", [([[1.0]], [[1.0], [1.0]]), ([], []), ([[1.0], []], [[1.0], [1.0]]),
                                       ([[1.0]], [[float("nan")]]), ([[1.0]], [[0.0]])])
def test_speedup_rejects_bad_rounds(base, opt):
    with pytest.raises(ValueError):
        speedup(base, opt)


def test_bootstrap_medians_equal_materialised_resamples():
    rng = np.random.default_rng(6)
    rounds = [rng.normal(size=rng.integers(1, 7)) for _ in range(9)]
    rounds[3] = rounds[2].copy()  # ties across rounds
    counts = _resample_counts(np.random.default_rng(8), len(rounds), 400)
    assert (counts.sum(axis=1) == len(rounds)).all()
    expected = [np.median(np.concatenate([np.tile(r, k) for r, k in zip(rounds, row)])) for row in counts]
    np.testing.assert_allclose(_bootstrap_medians(rounds, counts), expected, rtol=0, atol=1e-12)


def test_speedup_is_fast_enough():
    base, opt = _synthetic(np.random.default_rng(9))
    best = min(_timed(speedup, base, opt) for _ in range(5))
    assert best < 0.05


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def test_geometric_mean():
    assert geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    values = [1.3, 2.7, 0.9, 5.0]
    assert geometric_mean(values) == pytest.approx(np.exp(np.mean(np.log(values))))
    assert geometric_mean([3.0]) == pytest.approx(3.0)


@pytest.mark.parametrize("values", [[], [1.0, 0.0], [2.0, -1.0], [float("nan")]])
def test_geometric_mean_rejects_non_positive(values):
    with pytest.raises(ValueError):
        geometric_mean(values)


def test_summary_frame_one_row_per_candidate_and_shape_point():
    report = make_report()
    frame = summary_frame(report)
    assert list(frame.columns) == SUMMARY_COLUMNS
    assert len(frame) == 3 + 1 + 1  # timed candidate x 3 points, then untimed failed and broken ones
    chosen = frame[frame["selected"]]
    assert list(chosen["shape_point"]) == ["min", "mid", "max"]
    for (_, row), bench in zip(chosen.iterrows(), report.candidates[0].benchmarks):
        assert row["baseline_p50_ms"] == bench.baseline.p50
        assert row["optimized_p50_ms"] == bench.optimized.p50
        assert (row["speedup"], row["ci_low"], row["ci_high"]) == (
            bench.speedup.ratio, bench.speedup.ci_low, bench.speedup.ci_high)
        assert row["engine"] == "openvino" and row["precision"] == "bf16" and bool(row["accuracy_passed"])
    failed = frame[frame["engine"] == "onnxruntime"].iloc[0]
    assert failed["accuracy_passed"] is not pd.NA and not failed["accuracy_passed"]
    assert pd.isna(failed["speedup"]) and pd.isna(failed["shape_point"])
    broken = frame[frame["engine"] == "tensorrt"].iloc[0]
    assert pd.isna(broken["accuracy_passed"]) and not broken["selected"]
