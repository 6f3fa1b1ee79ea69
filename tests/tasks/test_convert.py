"""tasks/convert.py: the tensor information parsed once, and the model converted to ONNX."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from accelflow.core import tensor_info
from accelflow.core.errors import ModelMismatchError, SpecError
from accelflow.formats import torchscript
from accelflow.tasks.context import ModelContext
from accelflow.tasks.convert import convert_to_onnx, example_arrays, format_options, parse_tensor_info

from tests import modelzoo

INFO = ["input_0:float(1*3*16*16,4*3*16*16)"]


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_CACHE", "off")  # the export itself, into the task's work folder


def _context(model_file: str, fmt: str, lines: list[str], work_dir) -> ModelContext:
    return ModelContext(model_file, fmt, tensor_info.parse(lines), str(work_dir), threads=1)


def test_a_torchscript_cnn_becomes_onnx_with_a_dynamic_batch(no_cache, tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    converted = convert_to_onnx(_context(path, "torchscript", INFO, tmp_path / "work"))
    assert converted.onnx_path == str(tmp_path / "work" / "onnx" / "model.onnx") and not converted.cached
    assert converted.seconds > 0
    assert converted.io["input_names"] == ["input_0"] and converted.io["output_names"] == ["output_0"]
    assert converted.io["output_structure"] == {"kind": "tensor", "index": 0}
    model = onnx.load(converted.onnx_path)
    onnx.checker.check_model(model)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # the range 1..4 stays open
    session = ort.InferenceSession(converted.onnx_path, providers=["CPUExecutionProvider"])
    module = torch.jit.load(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
        want = module(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {"input_0": x})[0], want, rtol=1e-4, atol=1e-5)


def test_nested_outputs_keep_their_structure(no_cache, tmp_path):
    path = modelzoo.nested_torchscript(str(tmp_path))
    lines = ["input_0:float(2*3)", "input_1[bias]:float(2*3)", "input_1[scale]:float(1)",
             "input_2[0]:float(4,9)", "input_2[1]:float(5)"]
    converted = convert_to_onnx(_context(path, "torchscript", lines, tmp_path / "work"))
    assert converted.io["input_names"] == ["input_0", "input_1_bias", "input_1_scale", "input_2_0", "input_2_1"]
    structure = converted.io["output_structure"]
    assert structure["kind"] == "tuple" and structure["items"][0] == {"kind": "tensor", "index": 0}
    assert set(structure["items"][1]["items"]) == {"scaled", "first"}
    assert len(converted.io["output_names"]) == 3


def test_an_onnx_model_is_checked_in_place(cnn_onnx, tmp_path):
    converted = convert_to_onnx(_context(cnn_onnx, "onnx", ["image:float(1*3*16*16)"], tmp_path / "work"))
    assert converted.onnx_path == cnn_onnx and not converted.cached
    assert converted.io["input_names"] == ["image"] and converted.io["output_names"] == ["logits"]
    assert not (tmp_path / "work").exists()  # nothing was written


def test_an_onnx_model_with_other_inputs_is_refused(cnn_onnx, tmp_path):
    with pytest.raises(ModelMismatchError, match="pixels"):
        convert_to_onnx(_context(cnn_onnx, "onnx", ["pixels:float(1*3*16*16)"], tmp_path / "work"))


def test_qat_on_a_model_without_quantize_operations_is_refused(no_cache, tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    with pytest.raises(ModelMismatchError, match="--qat was given but the model has no quantize/dequantize"):
        convert_to_onnx(_context(path, "torchscript", INFO, tmp_path / "work"), qat=True)


def test_a_qdq_onnx_model_passes_the_qat_check(tmp_path):
    path = modelzoo.qdq_onnx(str(tmp_path))
    converted = convert_to_onnx(_context(path, "onnx", ["image:float(1*3*16*16)"], tmp_path / "work"), qat=True)
    assert converted.onnx_path == path


def test_format_options_apply_to_their_formats_only():
    assert format_options(torchscript, {"signature": None, "outputs": []}) == {}  # not given
    with pytest.raises(ModelMismatchError, match="--signature applies to TensorFlow SavedModels only, "
                                                 "and this model is torchscript"):
        format_options(torchscript, {"signature": "serving_default"})


def test_example_arrays_are_drawn_at_the_middle_of_the_ranges():
    (x,) = example_arrays(tensor_info.parse(INFO))
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32
    (fixed,) = example_arrays(tensor_info.parse(["input_0:float(3*5)"]))
    assert fixed.shape == (3, 5)
    np.testing.assert_array_equal(example_arrays(tensor_info.parse(INFO), seed=7)[0],
                                  example_arrays(tensor_info.parse(INFO), seed=7)[0])


def test_parse_tensor_info_returns_the_parsed_lines_or_a_spec_error():
    spec = parse_tensor_info(["input_0 : float(1*3)"])
    assert spec.lines() == ["input_0:float32(1*3)"] and [leaf.name for leaf in spec.leaves] == ["input_0"]
    with pytest.raises(SpecError):
        parse_tensor_info(["input_0:float(1*3"])


def test_the_work_folder_holds_only_the_export(no_cache, tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    convert_to_onnx(_context(path, "torchscript", INFO, tmp_path / "work"))
    assert os.listdir(tmp_path / "work") == ["onnx"]
