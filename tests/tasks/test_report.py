"""tasks/report.py: the candidates' results gathered, the fastest accurate one chosen, the report
assembled with its notes."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
from accelflow.core.accuracy import compare, tolerances
from accelflow.core.errors import AccuracyError, ConversionError
from accelflow.flows.request import OptimizeRequest
from accelflow.reports.results import ShapeBenchmark, Speedup
from accelflow.reports.stats import latency_stats
from accelflow.tasks.benchmark import TimingPlan, benchmark_candidates
from accelflow.tasks.build import BuiltCandidate, build_candidate
from accelflow.tasks.context import AccuracyCheck
from accelflow.tasks.fetch import fetch_model
from accelflow.tasks.report import assemble, candidates_of, engine_notes, select
from accelflow.tasks.runners import RunnerPool
from accelflow.tasks.verify import verify_candidates

from tests.tasks.conftest import CNN_INFO

REF = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
PASSED = compare([[REF]], [[REF.copy()]], ["out"], tolerances("lossless"))
FAILED = compare([[REF]], [[REF * 1.5]], ["out"], tolerances("lossless"))


def _row(label: str, ratio: float) -> ShapeBenchmark:
    base = latency_stats([2.0, 2.0, 2.0])
    return ShapeBenchmark(label, {"image": [1, 3, 16, 16]}, base, latency_stats([2.0 / ratio] * 3),
                          Speedup(ratio, ratio * 0.9, ratio * 1.1))


def _built(engine: str, precision: str, error: str = "") -> BuiltCandidate:
    return BuiltCandidate(engine, "1.0", precision, f"/work/candidates/{engine}-{precision}", 1.25, error=error)


def test_each_build_becomes_a_candidate_with_its_mean_speedup():
    built = [_built("onnxruntime", "f32"), _built("openvino", "f32"), _built("openvino", "bf16", error="no bf16")]
    candidates = candidates_of(built, {"onnxruntime-f32": PASSED, "openvino-f32": FAILED},
                               {"onnxruntime-f32": [_row("min", 2.0), _row("max", 8.0)]})
    ort, ov, bf16 = candidates
    assert (ort.engine, ort.precision, ort.build_seconds, ort.accuracy) == ("onnxruntime", "f32", 1.25, PASSED)
    assert ort.speedup == pytest.approx(4.0)  # geometric mean of 2 and 8
    assert [r.shape_point for r in ort.benchmarks] == ["min", "max"]
    assert ov.accuracy is FAILED and ov.speedup is None and ov.benchmarks == []
    assert bf16.error == "no bf16" and bf16.accuracy is None and not any(c.selected for c in candidates)


def test_the_fastest_accurate_candidate_is_selected():
    built = [_built("onnxruntime", "f32"), _built("openvino", "f32"), _built("openvino", "bf16")]
    candidates = candidates_of(built, {"onnxruntime-f32": PASSED, "openvino-f32": PASSED, "openvino-bf16": FAILED},
                               {"onnxruntime-f32": [_row("fixed", 1.5)], "openvino-f32": [_row("fixed", 1.8)],
                                "openvino-bf16": [_row("fixed", 3.0)]})  # fastest, but inaccurate
    best = select(candidates)
    assert (best.engine, best.precision) == ("openvino", "f32") and best.selected
    assert [c.selected for c in candidates] == [False, True, False]


def test_no_build_at_all_is_a_conversion_error_naming_each_failure():
    candidates = candidates_of([_built("onnxruntime", "f32", "DecodeError: corrupt"),
                                _built("openvino", "f32", "RuntimeError: unsupported op")], {}, {})
    with pytest.raises(ConversionError, match="no engine could build the model: onnxruntime f32: DecodeError: "
                                              "corrupt; openvino f32: RuntimeError: unsupported op"):
        select(candidates)


def test_no_accurate_candidate_is_an_accuracy_error_with_the_reasons_and_the_options():
    candidates = candidates_of([_built("onnxruntime", "f32"), _built("openvino", "bf16")],
                               {"onnxruntime-f32": FAILED, "openvino-bf16": FAILED}, {})
    with pytest.raises(AccuracyError) as err:
        select(candidates)
    message = str(err.value)
    assert message.startswith("no candidate passed the accuracy gate:\n  onnxruntime f32: out: max abs diff")
    assert "openvino bf16: out:" in message and "--rtol / --min-cosine" in message


def test_a_detector_failing_is_pointed_at_the_detection_options():
    detections = replace(FAILED, reason="detections: 60% matched, 80% allowed")
    with pytest.raises(AccuracyError, match="--min-matched / --max-box-diff / --max-score-diff"):
        select(candidates_of([_built("openvino", "f32")], {"openvino-f32": detections}, {}))


def _request(**fields) -> OptimizeRequest:
    return OptimizeRequest(**dict(dict(model="/models/cnn.onnx", tensor_info=CNN_INFO, output="/out",
                                       name="cnn-fp16"), **fields))


def test_the_notes_say_what_the_reader_must_know(cnn_onnx, tmp_path):
    fetched = fetch_model(cnn_onnx, None, None, str(tmp_path))
    built = [_built("onnxruntime", "f32"), _built("openvino", "bf16")]
    candidates = candidates_of(built, {"onnxruntime-f32": PASSED, "openvino-bf16": PASSED},
                               {"onnxruntime-f32": [_row("min", 1.6), _row("max", 0.8)],
                                "openvino-bf16": [_row("min", 0.9), _row("max", 0.7)]})
    report = assemble("cnn-fp16", _request(), fetched, candidates, select(candidates), {})
    notes = "\n".join(report.notes)
    assert "reduced precision was slower than f32 on this CPU (openvino bf16 0.79x); f32 was kept." in notes
    assert "slower than the original at: max (0.80x)" in notes
    assert "ONNX Runtime's offline-optimized graph" in notes
    assert "computes neither bf16 nor f16" not in notes  # a bf16 candidate was built
    only_f32 = candidates_of(built[:1], {"onnxruntime-f32": PASSED}, {"onnxruntime-f32": [_row("fixed", 2.0)]})
    report = assemble("cnn-fp16", _request(), fetched, only_f32, select(only_f32), {})
    assert report.notes[0] == "this CPU computes neither bf16 nor f16 natively, so the FP16 level ran in f32."
    assert not any("slower" in n for n in report.notes)
    lossless = assemble("cnn-lossless", _request(level="lossless"), fetched, only_f32, select(only_f32), {})
    assert not any("bf16" in n for n in lossless.notes)


def test_a_real_task_is_reported_from_its_builds_checks_and_timings(onnx_ctx, cnn_onnx, tmp_path):
    """Build, verify and benchmark steps on the ONNX CNN (a short timing plan), then the report."""
    fetched = fetch_model(cnn_onnx, None, None, str(tmp_path))
    request = _request(model=cnn_onnx, level="lossless")
    with RunnerPool() as pool:
        built = [build_candidate(onnx_ctx, "onnxruntime", "f32", pool),
                 build_candidate(onnx_ctx, "openvino", "f32", pool)]
        broken = build_candidate(replace(onnx_ctx, onnx_path=str(tmp_path / "missing.onnx")), "onnxruntime", "f32",
                                 pool)
        built.append(replace(broken, precision="int8"))  # a third configuration, whose build failed
        ok = [b for b in built if not b.error]
        accuracies = verify_candidates(onnx_ctx, ok, AccuracyCheck("lossless", draws=1), pool)
        plan = TimingPlan(seconds=0.0, min_samples=3, max_samples=6, warmup_seconds=0.0)
        timed = benchmark_candidates(onnx_ctx, ok, plan, pool)
    candidates = candidates_of(built, accuracies, timed)
    best = select(candidates)
    report = assemble(request.name, request, fetched, candidates, best, {"build engines": 1.5})
    assert (report.model, report.version, report.format, report.level) == ("cnn", "local", "onnx", "lossless")
    assert (report.engine, report.precision, report.speedup) == (best.engine, best.precision, best.speedup)
    assert best.engine in ("onnxruntime", "openvino") and report.accuracy.passed
    points = [p.label for p in onnx_ctx.spec.shape_points()]
    assert list(report.baseline) == list(report.optimized) == points
    assert [c.error != "" for c in report.candidates] == [False, False, True]
    assert report.build_seconds == pytest.approx(sum(c.build_seconds for c in candidates))
    assert report.tensor_info == CNN_INFO and report.timings == {"build engines": 1.5}
    assert report.settings["model_file"] == cnn_onnx and report.settings["model_home"] == os.path.dirname(cnn_onnx)
    assert "submitted_at" not in report.settings and report.settings["level"] == "lossless"
    assert "onnxruntime" in report.library_versions and report.machine["cores_used"] >= 1
    assert report.created.endswith("+00:00")


def test_engine_notes_tell_of_an_fp16_fallback_and_cpu_serving_settings():
    fallback = {"fp16": {"fallback": {"reason": "the all-FP16 graph failed the FP16 accuracy check",
                                      "kept_fp32_ops": ["ReduceSum", "Softmax"]}}}
    assert engine_notes(fallback) == ["FP16 fallback: the all-FP16 graph failed the FP16 accuracy check; "
                                      "kept in FP32: ReduceSum, Softmax."]
    assert engine_notes({"fp16": {"fallback": None}}) == engine_notes({}) == engine_notes(None) == []


def test_engine_notes_tell_the_threading_a_cpu_result_was_timed_and_is_served_with():
    ort = {"file": "model.onnx", "options": {"intra_op_num_threads": 2,
                                             "session_config": {"session.intra_op.allow_spinning": "0"}}}
    note, = engine_notes(ort)
    assert "2 intra-op threads" in note and "not spinning" in note and "accelflow.load" in note
    ov = {"file": "model.xml", "options": {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY",
                                           "ENABLE_CPU_PINNING": False}}
    assert "2 inference threads, LATENCY hint, CPU pinning off" in engine_notes(ov)[0]
