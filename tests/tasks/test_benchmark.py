"""The timing loops (interleaved rounds, separate blocks), on real ONNX Runtime sessions (no timing assertions)."""

from __future__ import annotations

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.formats import onnx_model
from accelflow.tasks.benchmark import TimingPlan, benchmark_point, time_runners, time_separately

from tests import modelzoo

SPEC = tensor_info.parse(["image:float(1*3*16*16)"])


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    path = modelzoo.tiny_cnn_onnx(str(tmp_path_factory.mktemp("bench")))
    io = onnx_model.check_inputs(path, SPEC)
    return {name: onnx_model.baseline_runner(path, SPEC, io, threads=1) for name in ("a", "b")}


ARRAYS = [np.zeros((1, 3, 16, 16), np.float32)]


def test_every_runner_gets_the_same_rounds_of_full_blocks(runners):
    plan = TimingPlan(seconds=0.0, min_samples=7, block=2, warmup_seconds=0.0)
    rounds = time_runners(runners, ARRAYS, plan)
    assert len(rounds["a"]) == len(rounds["b"]) == 4  # ceil(7 / 2) rounds
    assert all(len(block) == 2 and min(block) > 0 for r in rounds.values() for block in r)


def test_max_samples_stops_a_long_budget(runners):
    plan = TimingPlan(seconds=3600.0, min_samples=1, max_samples=6, block=3, warmup_seconds=0.0)
    rounds = time_runners(runners, ARRAYS, plan)
    assert sum(len(b) for b in rounds["a"]) == 6


def test_benchmark_point_reports_each_candidate_against_the_baseline(runners):
    plan = TimingPlan(seconds=0.0, min_samples=6, warmup_seconds=0.0)
    rows = benchmark_point("fixed", {"image": (1, 3, 16, 16)}, ARRAYS, runners["a"], {"b": runners["b"]}, plan)
    row = rows["b"]
    assert row.shape_point == "fixed" and row.shapes == {"image": [1, 3, 16, 16]}
    assert row.baseline.iterations == row.optimized.iterations == 6
    assert row.speedup.ci_low <= row.speedup.ratio <= row.speedup.ci_high
    assert row.optimized.throughput == pytest.approx(1000.0 / row.optimized.mean)


def test_time_separately_gives_each_runner_a_block_of_its_own_in_each_pass(runners):
    plan = TimingPlan(seconds=0.0, min_samples=5, max_samples=50, warmup_seconds=0.0)
    blocks = time_separately(runners, ARRAYS, plan, passes=2)
    assert set(blocks) == {"a", "b"}
    # min_samples split over the passes, rounded up: two blocks of three calls each.
    assert all(len(r) == 2 and [len(b) for b in r] == [3, 3] and min(map(min, r)) > 0 for r in blocks.values())


def test_time_separately_stops_at_max_samples(runners):
    plan = TimingPlan(seconds=3600.0, min_samples=1, max_samples=8, warmup_seconds=0.0)
    blocks = time_separately(runners, ARRAYS, plan, passes=2)
    assert [[len(b) for b in r] for r in blocks.values()] == [[4, 4], [4, 4]]
