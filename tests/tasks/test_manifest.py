"""tasks/manifest.py: the manifest of an optimized model folder holds everything needed to load
the model and to trust it; the folder it describes loads back with accelflow.load."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime
from accelflow.core import VERSION
from accelflow.core.accuracy import compare, tolerances
from accelflow.core.runner import run_arrays
from accelflow.engines.loading import load
from accelflow.engines.result import write_manifest
from accelflow.flows.request import OptimizeRequest
from accelflow.reports.results import ShapeBenchmark, Speedup
from accelflow.reports.stats import latency_stats
from accelflow.tasks.build import build_candidate
from accelflow.tasks.convert import convert_to_onnx
from accelflow.tasks.fetch import fetch_model
from accelflow.tasks.manifest import gpu_fields, manifest_for
from accelflow.tasks.report import assemble, candidates_of, select
from accelflow.tasks.runners import RunnerPool

from tests.tasks.conftest import CNN_INFO, images


def test_the_manifest_of_a_built_candidate_loads_back_as_the_model(onnx_ctx, cnn_onnx, tmp_path):
    request = OptimizeRequest(model=cnn_onnx, tensor_info=CNN_INFO, output=str(tmp_path / "out"), level="lossless")
    fetched = fetch_model(cnn_onnx, None, None, str(tmp_path))
    converted = convert_to_onnx(onnx_ctx)
    with RunnerPool() as pool:
        chosen = build_candidate(onnx_ctx, "onnxruntime", "f32", pool)
        reference = pool.reference(onnx_ctx)
        x = images(2, seed=3)
        want = run_arrays(reference, x)[0]
    ref = np.ones((1, 4), np.float32)
    rows = [ShapeBenchmark("max", {"image": [2, 3, 16, 16]}, latency_stats([2.0] * 3), latency_stats([1.0] * 3),
                           Speedup(2.0, 1.8, 2.2))]
    candidates = candidates_of([chosen], {chosen.key: compare([[ref]], [[ref]], ["logits"], tolerances("lossless"))},
                               {chosen.key: rows})
    report = assemble("cnn-lossless", request, fetched, candidates, select(candidates), {})

    manifest = manifest_for("cnn-lossless", request, fetched, chosen, converted, report)
    assert (manifest["task_name"], manifest["model"], manifest["version"], manifest["format"]) == (
        "cnn-lossless", "cnn", "local", "onnx")
    assert (manifest["engine"], manifest["engine_version"], manifest["precision"]) == (
        "onnxruntime", onnxruntime.__version__, "f32")
    assert manifest["engine_config"] == chosen.engine_config and manifest["io"] == converted.io
    assert manifest["tensor_info"] == CNN_INFO and manifest["speedup"] == report.speedup == 2.0
    assert manifest["accelflow_version"] == VERSION and manifest["created"] == report.created
    assert manifest["level"] == "lossless" and manifest["device"] == "cpu"
    assert "gpu" not in manifest and "built_for" not in manifest  # a CPU result

    folder = tmp_path / "model"
    shutil.copytree(chosen.folder, folder)
    write_manifest(str(folder), manifest)
    model = load(str(folder), threads=1)
    np.testing.assert_allclose(model(image=x[0])[0], want, rtol=1e-4, atol=1e-5)  # "image": a keyword input


def test_a_gpu_result_records_its_gpu_and_what_loading_checks():
    built_for = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "machine_type": "h100"}
    gpu = dict(built_for, memory_mib=81559, driver="570.86", sm_clock_mhz=1980)
    assert gpu_fields({"file": "model.engine", "built_for": built_for, "gpu": gpu}) == {"gpu": gpu,
                                                                                         "built_for": built_for}
    assert gpu_fields({"file": "model.engine", "built_for": built_for}) == {"gpu": {}, "built_for": built_for}
    assert gpu_fields({"file": "model.onnx", "options": {}}) == {}
