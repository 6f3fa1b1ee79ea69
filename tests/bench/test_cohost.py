"""The co-hosted measurement and the bench's tables, on a tiny real ONNX model (no timing assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import cohost, report
from tests import modelzoo

ARRAYS = [np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return modelzoo.tiny_cnn_onnx(str(tmp_path_factory.mktemp("cohost")))


def test_cohosted_times_the_result_alone_and_alternating(onnx_path):
    result = cohost.SessionRunner(onnx_path, threads=1, config=cohost.SPIN_OFF)
    neighbour = cohost.SessionRunner(onnx_path)  # ONNX Runtime's defaults
    figures = cohost.cohosted(result, ARRAYS, neighbour, ARRAYS, seconds=0.0, min_samples=4, calls=2)
    # Turns of two calls until the result has four co-hosted calls; alternating times both sides.
    assert len(figures.alone) == len(figures.neighbour_alone) == 4
    assert len(figures.together) == len(figures.neighbour) == 4
    assert all(ms > 0 for ms in figures.alone + figures.together + figures.neighbour + figures.neighbour_alone)
    assert figures.share == pytest.approx(figures.alone_ms / figures.cohosted_ms)
    assert figures.neighbour_share == pytest.approx(figures.neighbour_alone_ms / figures.neighbour_ms)
    row = report.cohosted_row("tiny", 1, "accelflow lossless", "onnxruntime default", figures)
    assert row["share_of_alone"] == figures.share and row["samples"] == len(figures.together)
    assert "| tiny | 1 | accelflow lossless | onnxruntime default |" in report.cohosted_markdown([row])


def test_session_runner_applies_its_session_config(onnx_path):
    options = cohost.SessionRunner(onnx_path, threads=1, config=cohost.SPIN_OFF).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1


def _row(runner: str, precision: str, p50: float) -> dict:
    return {"model": "m", "batch": 1, "runner": runner, "precision": precision, "engine": "", "p50_ms": p50,
            "mean_ms": p50, "p90_ms": p50, "samples": 10, "gflop": 1.0}


def test_every_accelflow_level_is_compared_with_the_best_alternative():
    rows = [_row("pytorch eager fp32", "f32", 100.0), _row("onnxruntime default", "f32", 50.0),
            _row("openvino default", "bf16", 40.0), _row("accelflow lossless", "f32", 50.0),
            _row("accelflow fp16", "f32", 40.0), _row("accelflow int8", "int8", 20.0)]
    peak = {"peak_gflops": 100.0, "cpu": "Test CPU", "mhz": 2000.0, "cores": 2, "cpu_flags": ["avx512_vnni"]}
    versus = report.frame(rows, peak).set_index("runner").vs_best_alternative
    assert versus["accelflow lossless"] == pytest.approx(1.0)  # against the best f32 alternative (50 ms)
    assert versus["accelflow fp16"] == pytest.approx(1.0)  # against any precision (bf16, 40 ms)
    assert versus["accelflow int8"] == pytest.approx(2.0)
    f32_versus = report.frame(rows, peak).set_index("runner").vs_best_f32_alternative
    assert f32_versus["accelflow int8"] == pytest.approx(2.5)  # against the best f32 alternative (50 ms)
    assert np.isnan(versus["onnxruntime default"])
    text = report.markdown(rows, peak)
    assert "| m | 1 | accelflow int8 | int8 | 20.00 | 5.00x | 50.0% | 2.00x | 2.50x |" in text
    assert "Test CPU" in text and "CPU flags: avx512_vnni (not present: avx512_bf16, amx_int8, amx_bf16)" in text
