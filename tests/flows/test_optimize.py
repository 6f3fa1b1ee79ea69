"""The optimize flow end to end on a real Prefect server, with real engines and small models."""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest
import torch
from accelflow.core.errors import AccuracyError
from accelflow.flows.optimize import optimize
from accelflow.flows.request import OptimizeRequest

import accelflow
from tests import modelzoo

FAST = {"draws": 1, "bench_seconds": 0.2}
REPORT_KEYS = {
    "task_name", "model", "version", "format", "level", "device", "engine", "engine_version",
    "speedup", "baseline", "optimized", "accuracy", "build_seconds", "library_versions", "machine",
    "candidates", "timings",
}


def _run(**fields):
    request = OptimizeRequest(**{**FAST, **fields})
    return optimize.with_options(flow_run_name=fields.get("name") or "test")(request=request)


@pytest.fixture(scope="module")
def cnn_result(prefect_server, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    path = modelzoo.tiny_cnn_torchscript(str(models))
    out = tmp_path_factory.mktemp("out")
    result = _run(model=path, tensor_info=["input_0:float(1*3*16*16,3*3*16*16)"], output=str(out),
                  name="cnn-job", tags=["team-a"])
    return path, out, result


def test_result_folder_is_complete_and_nothing_else_is_left(cnn_result):
    _, out, result = cnn_result
    assert result["result_folder"] == str(out / "cnn-job")
    assert sorted(os.listdir(out)) == ["cnn-job"]  # no staging or work folders left
    files = set(os.listdir(result["result_folder"]))
    assert {"model", "report.json", "report.md", "report.html"} <= files
    assert "manifest.json" in os.listdir(result["model_folder"])


def test_report_json_has_the_contract_fields(cnn_result):
    _, _, result = cnn_result
    report = json.load(open(result["report_json"]))
    assert REPORT_KEYS <= set(report)
    assert report["format"] == "torchscript" and report["level"] == "fp16" and report["device"] == "cpu"
    assert set(report["baseline"]) == set(report["optimized"]) == {"min", "mid", "max"}
    for stats in report["optimized"].values():
        assert {"mean", "p50", "p90", "p99", "throughput"} <= set(stats) and stats["p50"] > 0
    output = report["accuracy"]["outputs"][0]
    assert {"max_abs_diff", "max_rel_diff", "cosine_similarity", "tolerance", "passed"} <= set(output)
    assert report["accuracy"]["passed"] and report["speedup"] > 0
    assert sum(c["selected"] for c in report["candidates"]) == 1
    assert len(report["candidates"]) >= 3  # onnxruntime f32, openvino f32, + reduced precisions
    assert report["settings"]["tags"] == ["team-a"]


def test_loaded_result_matches_the_original_model(cnn_result):
    path, _, result = cnn_result
    model = accelflow.load(result["result_folder"])
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = torch.jit.load(path)(torch.from_numpy(x)).detach().numpy()
    got = model(x)
    assert got.shape == expected.shape == (2, 10)
    np.testing.assert_allclose(got, expected, rtol=3e-2, atol=3e-2 * np.abs(expected).max())


def test_flow_run_has_name_state_progress_and_report_artifacts(cnn_result):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["cnn-job"])))
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id])))
            return runs, artifacts

    runs, artifacts = asyncio.run(read())
    assert len(runs) == 1 and runs[0].state.is_completed()
    kinds = {a.type for a in artifacts}
    assert {"markdown", "table", "progress"} <= kinds
    progress = next(a for a in artifacts if a.type == "progress")
    assert float(progress.data) == 100.0
    markdown = next(a for a in artifacts if a.type == "markdown")
    assert "cnn-job" in markdown.data


def test_onnx_with_external_data_at_lossless_on_a_pinned_engine(prefect_server, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    modelzoo.tiny_cnn_onnx(str(models), external_data=True)
    result = _run(model=str(models), tensor_info=["image:float(2*3*16*16)"], output=str(tmp_path / "out"),
                  level="lossless", engine="openvino")
    report = json.load(open(result["report_json"]))
    assert report["engine"] == "openvino" and report["precision"] == "f32" and report["format"] == "onnx"
    assert report["accuracy"]["outputs"][0]["max_abs_diff"] < 1e-4
    assert set(report["baseline"]) == {"fixed"}


def test_nested_inputs_and_outputs_round_trip_through_load(prefect_server, tmp_path):
    (tmp_path / "models").mkdir()
    path = modelzoo.nested_torchscript(str(tmp_path / "models"))
    lines = ["input_0:float(2*3)", "input_1[bias]:float(2*3)", "input_1[scale]:float(1)",
             "input_2[0]:float(4,9)", "input_2[1]:float(5)"]
    result = _run(model=path, tensor_info=lines, output=str(tmp_path / "out"), level="lossless")
    model = accelflow.load(result["result_folder"])
    x, bias, scale = np.ones((2, 3), np.float32), np.full((2, 3), 0.5, np.float32), np.array([2.0], np.float32)
    total, extra = model(x, {"bias": bias, "scale": scale}, [np.ones(6, np.float32), np.zeros(5, np.float32)])
    np.testing.assert_allclose(total, np.full((2, 3), 2.5), rtol=1e-6)
    np.testing.assert_allclose(extra["scaled"], 12.0, rtol=1e-6)
    np.testing.assert_allclose(extra["first"], np.ones(5), rtol=1e-6)


def test_no_accurate_candidate_fails_and_leaves_no_folder(prefect_server, tmp_path):
    (tmp_path / "models").mkdir()
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path / "models"))
    out = tmp_path / "out"
    with pytest.raises(AccuracyError, match="no candidate passed the accuracy gate") as err:
        _run(model=path, tensor_info=["input_0:float(1*3*16*16)"], output=str(out), min_cosine=1.5)
    assert "cosine" in str(err.value) and "required >= 1.5" in str(err.value)
    assert not out.exists()


def test_model_from_an_s3_repository(prefect_server, s3_repo_uri, tmp_path):
    from accelflow.storage.repository import ModelRepository

    (tmp_path / "models").mkdir()
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path / "models"))
    ModelRepository(s3_repo_uri).add("cnn", "v1", str(tmp_path / "models"), source="uploaded", format="torchscript")
    result = _run(model="cnn@v1", repo=s3_repo_uri, tensor_info=["input_0:float(1*3*16*16)"],
                  output=str(tmp_path / "out"), engine="onnxruntime")
    report = json.load(open(result["report_json"]))
    assert (report["model"], report["version"], report["task_name"]) == ("cnn", "v1", "cnn-v1-fp16")
    assert os.listdir(tmp_path / "out") == ["cnn-v1-fp16"]  # the fetched copy went with the staging folder
    assert os.path.getsize(path) > 0
