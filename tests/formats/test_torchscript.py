"""TorchScript: loading, argument mapping and export to ONNX, checked against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from accelflow.core import tensor_info
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError
from accelflow.core.runner import run_arrays
from accelflow.formats import torchscript

from tests import modelzoo


def _ort_outputs(onnx_path, io, arrays):
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    present = {i.name for i in session.get_inputs()}
    feed = {n: a for n, a in zip(io.input_names, arrays) if n in present}
    return session.run(io.output_names, feed)


def _example(spec, label="max", seed=0):
    point = next(p for p in spec.shape_points() if p.label == label)
    args, kwargs = spec.example_inputs(point, np.random.default_rng(seed))
    return spec.flatten(args, kwargs)


def test_export_with_dynamic_batch_matches_torch(tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    spec = tensor_info.parse(["input_0:float(1*3*16*16,4*3*16*16)"])
    onnx_path, io = torchscript.to_onnx(path, spec, str(tmp_path), _example(spec, "mid"))
    baseline = torchscript.baseline_runner(path, spec, io, threads=1)
    for label in ("min", "max"):
        arrays = _example(spec, label)
        expected = run_arrays(baseline, arrays)
        got = _ort_outputs(onnx_path, io, arrays)
        assert got[0].shape == expected[0].shape == (arrays[0].shape[0], 10)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-5)


def test_keyword_inputs_follow_forward_parameter_names(tmp_path):
    path = modelzoo.two_inputs_torchscript(str(tmp_path))
    # Given in the opposite order of forward(input_ids, attention_mask).
    spec = tensor_info.parse(["attention_mask:int64(1*4,2*16)", "input_ids:int64(1*4,2*16)"])
    onnx_path, io = torchscript.to_onnx(path, spec, str(tmp_path), _example(spec, "mid"))
    baseline = torchscript.baseline_runner(path, spec, io, threads=1)
    arrays = _example(spec, "max")
    for got, expected in zip(_ort_outputs(onnx_path, io, arrays), run_arrays(baseline, arrays)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert io.output_structure["kind"] == "tuple"


def test_unknown_keyword_is_a_mismatch_naming_forward_parameters(tmp_path):
    path = modelzoo.two_inputs_torchscript(str(tmp_path))
    spec = tensor_info.parse(["ids:int64(1*8)", "attention_mask:int64(1*8)"])
    with pytest.raises(ModelMismatchError, match="input_ids, attention_mask"):
        torchscript.baseline_runner(path, spec, None, threads=1).prepare(_example(spec, "fixed"))


def test_nested_inputs_and_outputs_export_and_keep_their_structure(tmp_path):
    path = modelzoo.nested_torchscript(str(tmp_path))
    spec = tensor_info.parse([
        "input_0:float(2*3)", "input_1[bias]:float(2*3)", "input_1[scale]:float(1)",
        "input_2[0]:float(4,9)", "input_2[1]:float(5)",
    ])
    onnx_path, io = torchscript.to_onnx(path, spec, str(tmp_path), _example(spec, "mid"))
    assert io.output_structure == {"kind": "tuple", "items": [
        {"kind": "tensor", "index": 0},
        {"kind": "dict", "items": {"scaled": {"kind": "tensor", "index": 1}, "first": {"kind": "tensor", "index": 2}}},
    ]}
    baseline = torchscript.baseline_runner(path, spec, io, threads=1)
    arrays = _example(spec, "max")
    for got, expected in zip(_ort_outputs(onnx_path, io, arrays), run_arrays(baseline, arrays)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_broken_torchscript_fails_to_load_with_a_clear_message(tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    import zipfile

    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("constants.pkl") or "/data/" in item.filename:
                data = data[: len(data) // 3]
            dst.writestr(item, data)
    assert torchscript.detect(str(broken))
    with pytest.raises(UnsupportedFormatError, match="failed to load"):
        torchscript.load(str(broken))


@pytest.mark.parametrize("make", [modelzoo.tiny_cnn_torchscript, modelzoo.two_inputs_torchscript,
                                  modelzoo.nested_torchscript])
def test_forward_parameters_read_from_the_archive_are_those_torch_loads(tmp_path, make):
    path = make(str(tmp_path))
    loaded = [a.name for a in torchscript.load(path).forward.schema.arguments][1:]
    assert torchscript.forward_parameters(path) == loaded


def test_forward_parameters_of_an_archive_laid_out_otherwise_are_unknown(tmp_path):
    import zipfile

    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    stripped = tmp_path / "no-code.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            if "/code/" not in item.filename:
                dst.writestr(item, src.read(item.filename))
    assert torchscript.forward_parameters(str(stripped)) is None
    assert torchscript.forward_parameters(modelzoo.tiny_cnn_onnx(str(tmp_path))) is None


def test_input_names_are_checked_without_loading_the_model(tmp_path):
    path = modelzoo.two_inputs_torchscript(str(tmp_path))
    with pytest.raises(ModelMismatchError, match="names ids, but forward\\(\\) takes input_ids, attention_mask"):
        torchscript.check_input_names(path, tensor_info.parse(["ids:int64(1*8)", "attention_mask:int64(1*8)"]))
    with pytest.raises(ModelMismatchError, match="input_ids come before attention_mask but have no tensor information"):
        torchscript.check_input_names(path, tensor_info.parse(["attention_mask:int64(1*8)"]))
    torchscript.check_input_names(path, tensor_info.parse(["attention_mask:int64(1*8)", "input_ids:int64(1*8)"]))
    torchscript.check_input_names(path, tensor_info.parse(["input_0:int64(1*8)"]))  # positional: at conversion
