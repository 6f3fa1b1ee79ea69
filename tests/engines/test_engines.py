"""CPU engines built from a real ONNX model and run against ONNX Runtime's reference."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.errors import DeviceError, EngineError, SpecError
from accelflow.core.levels import FP16, INT8, LOSSLESS, level_named
from accelflow.core.runner import run_arrays, thread_count
from accelflow.engines import onnxruntime_engine, openvino_engine
from accelflow.engines.loading import load, serving_settings
from accelflow.engines.result import write_manifest
from accelflow.formats import onnx_model

from accelflow import engines
from tests import modelzoo

SPEC = tensor_info.parse(["image:float(1*3*16*16,4*3*16*16)"])


@pytest.fixture(scope="module")
def onnx_cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    path = modelzoo.tiny_cnn_onnx(str(folder))
    return path, onnx_model.check_inputs(path, SPEC)


def _arrays(batch: int):
    return [np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)]


@pytest.mark.parametrize("engine,precision", [(onnxruntime_engine, "f32"), (openvino_engine, "f32")])
def test_f32_engines_match_the_reference(onnx_cnn, tmp_path, engine, precision):
    path, io = onnx_cnn
    config = engine.build(path, io, SPEC, precision, str(tmp_path), threads=1)
    assert os.path.isfile(os.path.join(tmp_path, config["file"]))
    runner = engine.load(str(tmp_path), {"engine_config": config, "io": io.to_dict()}, threads=1)
    reference = onnx_model.baseline_runner(path, SPEC, io, threads=1)
    for batch in (1, 4):
        got, = run_arrays(runner, _arrays(batch))
        expected, = run_arrays(reference, _arrays(batch))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_openvino_ir_keeps_f32_weights(onnx_cnn, tmp_path):
    path, io = onnx_cnn
    openvino_engine.build(path, io, SPEC, "f32", str(tmp_path), threads=1)
    xml = open(tmp_path / "model.xml").read()
    assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml


def test_openvino_reduced_precision_follows_cpu_capabilities():
    reduced = openvino_engine.reduced_precisions()
    assert openvino_engine.precisions(LOSSLESS, "cpu") == ["f32"]
    assert openvino_engine.precisions(FP16, "cpu") == ["f32"] + reduced
    assert openvino_engine.precisions(INT8, "cpu") == ["f32"] + reduced + ["int8"]
    assert set(reduced) <= {"bf16", "f16"}


def test_the_int8_level_adds_an_int8_candidate_per_cpu_engine_and_qat_builds_only_int8():
    pairs = {(e.NAME, p) for e, p in engines.candidates("int8", "cpu")}
    assert {("onnxruntime", "f32"), ("onnxruntime", "int8"), ("openvino", "f32"), ("openvino", "int8")} <= pairs
    assert {(e.NAME, p) for e, p in engines.candidates("fp16", "cpu", qat=True)} == {
        ("onnxruntime", "int8"), ("openvino", "int8")}


def test_candidates_for_auto_and_pinned_engines():
    auto = engines.candidates("lossless", "cpu")
    assert {(e.NAME, p) for e, p in auto} == {("onnxruntime", "f32"), ("openvino", "f32")}
    pinned = engines.candidates("fp16", "cpu", "onnxruntime", onnxruntime_engine.version())
    assert [(e.NAME, p) for e, p in pinned] == [("onnxruntime", "f32")]


def test_engine_version_pin_is_checked_before_work():
    with pytest.raises(EngineError, match="pip install onnxruntime==0.0.1"):
        engines.candidates("fp16", "cpu", "onnxruntime", "0.0.1")
    with pytest.raises(EngineError, match="needs --engine"):
        engines.candidates("fp16", "cpu", "auto", "1.0")
    major_minor = ".".join(openvino_engine.version().split(".")[:2])
    assert engines.candidates("fp16", "cpu", "openvino", major_minor)


@pytest.mark.parametrize("bad,error,match", [
    ("tpu", DeviceError, "unknown device"),
    ("t4", DeviceError, "no GPU engine"),
])
def test_devices_refused_with_a_reason(bad, error, match):
    with pytest.raises(error, match=match):
        engines.check_device(bad)


def test_unknown_level_and_engine():
    with pytest.raises(SpecError, match="fp16, lossless or int8"):
        level_named("int4")
    with pytest.raises(EngineError, match="auto, onnxruntime, openvino"):
        engines.engine_named("tvm")


def _result_folder(onnx_cnn, tmp_path, **changes):
    path, io = onnx_cnn
    config = onnxruntime_engine.build(path, io, SPEC, "f32", str(tmp_path), threads=1)
    manifest = {"engine": "onnxruntime", "engine_version": onnxruntime_engine.version(),
                "precision": "f32", "engine_config": config, "io": io.to_dict(),
                "tensor_info": SPEC.lines(), **changes}
    write_manifest(str(tmp_path), manifest)
    return str(tmp_path)


def test_load_runs_with_the_original_structure(onnx_cnn, tmp_path):
    model = load(_result_folder(onnx_cnn, tmp_path))
    reference = onnx_model.baseline_runner(onnx_cnn[0], SPEC, onnx_cnn[1], threads=1)
    # ONNX models take their inputs by name and return a list of outputs.
    got = model(image=_arrays(2)[0])
    np.testing.assert_allclose(got[0], run_arrays(reference, _arrays(2))[0], rtol=1e-4, atol=1e-5)


def test_load_refuses_another_engine_version(onnx_cnn, tmp_path):
    folder = _result_folder(onnx_cnn, tmp_path, engine_version="0.0.1")
    with pytest.raises(EngineError, match="built by onnxruntime 0.0.1"):
        load(folder)


def test_load_refuses_an_unknown_engine_and_a_folder_without_manifest(onnx_cnn, tmp_path):
    folder = _result_folder(onnx_cnn, tmp_path, engine="tvm")
    with pytest.raises(EngineError, match="'tvm'"):
        load(folder)
    with pytest.raises(EngineError, match="no manifest.json"):
        load(str(tmp_path / "elsewhere"))
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert manifest["manifest_version"] == 1


def test_a_loaded_onnxruntime_result_runs_with_the_session_config_it_records(onnx_cnn, tmp_path):
    folder = _result_folder(onnx_cnn, tmp_path)
    model = load(folder)
    recorded = model.manifest["engine_config"]["options"]
    assert recorded["session_config"] == onnxruntime_engine.SESSION_CONFIG
    options = model.runner.session.get_session_options()  # read back from the live session
    for key, value in recorded["session_config"].items():
        assert options.get_session_config_entry(key) == value
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle threads do not spin
    assert recorded["intra_op_num_threads"] == 1  # the build's count; load takes the cores this process may use
    assert options.intra_op_num_threads == thread_count()
    assert load(folder, threads=1).runner.session.get_session_options().intra_op_num_threads == 1
    assert "not spinning" in serving_settings(model.manifest["engine_config"])


def test_a_result_that_records_no_session_config_keeps_onnx_runtime_defaults(onnx_cnn, tmp_path):
    folder = _result_folder(onnx_cnn, tmp_path)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    del manifest["engine_config"]["options"]["session_config"]  # as results built before it was recorded
    write_manifest(folder, manifest)
    options = load(folder).runner.session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # not set: ONNX Runtime's default
        options.get_session_config_entry("session.intra_op.allow_spinning")


def test_a_loaded_openvino_result_compiles_with_the_properties_it_records(onnx_cnn, tmp_path):
    path, io = onnx_cnn
    config = openvino_engine.build(path, io, SPEC, "f32", str(tmp_path), threads=1)
    runner = openvino_engine.load(str(tmp_path), {"engine_config": config, "io": io.to_dict()}, threads=1)
    for key, value in config["options"].items():
        live = runner.compiled.get_property(key)  # an element type, an enum, a bool or an int
        live = live.to_string() if hasattr(live, "to_string") else getattr(live, "name", live)
        assert str(live).lower() == str(value).lower(), key
    assert runner.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert "OpenVINO's 1 inference threads" in serving_settings(config)
