"""QAT models run as INT8: a fake-quantized TorchScript model and a QDQ ONNX model."""

from __future__ import annotations

import json

import pytest
from accelflow.core.errors import ModelMismatchError
from accelflow.flows.optimize import optimize
from accelflow.flows.request import OptimizeRequest

from tests import modelzoo

FAST = {"draws": 2, "bench_seconds": 0.3, "qat": True}


def _run(**fields):
    request = OptimizeRequest(**{**FAST, **fields})
    return optimize.with_options(flow_run_name="qat")(request=request)


@pytest.mark.parametrize("make,info", [
    (modelzoo.qat_torchscript, "input_0:float(1*3*16*16,2*3*16*16)"),
    (modelzoo.qdq_onnx, "image:float(1*3*16*16,2*3*16*16)"),
])
def test_qat_models_run_as_int8_within_the_gate(prefect_server, tmp_path, make, info):
    (tmp_path / "m").mkdir()
    path = make(str(tmp_path / "m"))
    result = _run(model=path, tensor_info=[info], output=str(tmp_path / "out"))
    report = json.load(open(result["report_json"]))
    assert report["precision"] == "int8"
    assert {c["precision"] for c in report["candidates"]} == {"int8"}
    assert report["accuracy"]["passed"]
    assert report["accuracy"]["outputs"][0]["tolerance"]["min_cosine"] == 0.995
    assert report["accuracy"]["outputs"][0]["cosine_similarity"] >= 0.995
    assert report["speedup"] > 0


def test_qat_flag_on_a_float_model_is_refused(prefect_server, tmp_path):
    (tmp_path / "m").mkdir()
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path / "m"))
    with pytest.raises(ModelMismatchError, match="no quantize/dequantize operations"):
        _run(model=path, tensor_info=["input_0:float(1*3*16*16)"], output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
