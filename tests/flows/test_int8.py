"""The int8 level end to end on a real Prefect server: calibration, the gate, the fallback, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from accelflow.core.errors import SpecError
from accelflow.flows.optimize import optimize
from accelflow.flows.request import OptimizeRequest, check_request

import accelflow
from tests import modelzoo

FAST = {"draws": 2, "bench_seconds": 0.2, "level": "int8"}
CNN_INFO = ["input_0:float(1*3*16*16,3*3*16*16)"]
MLP_INFO = ["input_0:float(1*32,8*32)"]


def _report(tmp_path, make, info, **fields) -> dict:
    (tmp_path / "m").mkdir(exist_ok=True)
    request = OptimizeRequest(**{**FAST, "model": make(str(tmp_path / "m")), "tensor_info": info,
                                 "output": str(tmp_path / "out"), **fields})
    result = optimize.with_options(flow_run_name="int8")(request=request)
    return json.load(open(result["report_json"]))


def _selected(report: dict) -> dict:
    return next(c for c in report["candidates"] if c["selected"])


def test_int8_builds_every_engine_and_reports_how_it_was_calibrated(prefect_server, tmp_path):
    report = _report(tmp_path, modelzoo.tiny_cnn_torchscript, CNN_INFO)
    assert report["level"] == "int8"
    precisions = {(c["engine"], c["precision"]) for c in report["candidates"]}
    assert {("onnxruntime", "int8"), ("openvino", "int8"), ("onnxruntime", "f32")} <= precisions
    int8 = report["int8"]
    assert int8["calibration"].startswith("drawn from the tensor information") and int8["quantized_ops"] >= 3
    assert "real data calibrates better" in " ".join(int8["warnings"]) and int8["attempts"][0]["kept_in_float"] == []
    assert int8["attempts"][0]["passed"], int8["attempts"][0]["reason"]
    tolerance = report["accuracy"]["outputs"][0]["tolerance"]
    assert tolerance["max_rel_l2"] == 0.1 and tolerance["min_top1"] == 0.9
    assert _selected(report)["accuracy"]["passed"]
    assert any(note.startswith("INT8: ") for note in report["notes"])
    folder = tmp_path / "out" / report["task_name"]
    markdown = open(folder / "report.md").read()
    assert "## INT8" in markdown and "relative L2 error" in markdown
    manifest = json.load(open(folder / "model" / "manifest.json"))
    if report["precision"] == "int8":
        assert manifest["engine_config"]["int8"]["calibration"] == report["int8"]["calibration"]
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    original = torch.jit.load(str(tmp_path / "m" / "cnn.pt"))(torch.from_numpy(x)).detach().numpy()
    got = accelflow.load(str(folder))(x)
    assert float(np.dot(got.ravel(), original.ravel()) / np.linalg.norm(got) / np.linalg.norm(original)) > 0.99


def test_a_failing_int8_graph_falls_back_to_float_for_its_most_sensitive_operation(prefect_server, tmp_path):
    report = _report(tmp_path, modelzoo.outlier_mlp_torchscript, MLP_INFO)
    first, second = report["int8"]["attempts"][:2]
    assert not first["passed"] and "relative L2 error" in first["reason"]
    assert second["passed"] and len(second["kept_in_float"]) == 1 and second["kept_in_float"][0].endswith("c/Gemm")
    assert report["accuracy"]["passed"] and _selected(report)["accuracy"]["passed"]
    if report["precision"] == "int8":  # the fastest passing candidate wins: INT8 with an exception, or a float one
        assert report["int8"]["outcome"] == "int8 with exceptions" and report["int8"]["kept_in_float"]
    else:
        assert report["int8"]["outcome"] == f"int8 passed the gate, but {report['precision']} was faster"


def test_when_no_int8_graph_passes_the_fastest_passing_float_candidate_is_kept(prefect_server, tmp_path):
    # A gate only float arithmetic meets: every INT8 attempt fails, and a failing candidate never wins.
    report = _report(tmp_path, modelzoo.tiny_cnn_torchscript, CNN_INFO, min_cosine=0.999999)
    attempts = report["int8"]["attempts"]
    assert len(attempts) >= 2 and not any(a["passed"] for a in attempts)
    assert [len(a["kept_in_float"]) for a in attempts] == [0, 1, 2, 4][:len(attempts)]
    assert report["precision"] in ("f32", "bf16") and report["accuracy"]["passed"]
    assert report["int8"]["outcome"].startswith("no INT8 candidate passed the gate")
    assert not [c for c in report["candidates"] if c["selected"] and not c["accuracy"]["passed"]]


def test_calibration_inputs_from_a_file_are_used_and_named(prefect_server, tmp_path):
    rng = np.random.default_rng(5)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **{f"{k}/input_0": rng.standard_normal((2, 32)).astype(np.float32) for k in range(5)})
    report = _report(tmp_path, modelzoo.outlier_mlp_torchscript, MLP_INFO, calibration=str(calibration))
    assert report["int8"]["calibration"] == "--calibration calibration.npz (5 inputs)"
    assert report["int8"]["warnings"] == []


def test_calibration_is_refused_at_a_level_without_int8_and_when_missing(tmp_path):
    base = {"model": "m.pt", "tensor_info": MLP_INFO, "output": str(tmp_path / "out")}
    with pytest.raises(SpecError, match="--level fp16 builds none: use --level int8"):
        check_request(OptimizeRequest(**base, level="fp16", calibration=str(tmp_path)), local=False)
    with pytest.raises(SpecError, match="holds no .npz file"):
        check_request(OptimizeRequest(**base, level="int8", calibration=str(tmp_path)), local=False)
    with pytest.raises(SpecError, match="no such file or folder"):
        check_request(OptimizeRequest(**base, level="int8", calibration=str(tmp_path / "nope.npz")), local=False)
