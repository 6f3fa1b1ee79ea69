"""Format detection by content, never by suffix."""

from __future__ import annotations

import os
import shutil

import pytest
from accelflow.core.errors import UnsupportedFormatError
from accelflow.formats import onnx_model, pytorch_checkpoint, torchscript

from accelflow import formats
from tests import modelzoo


def test_torchscript_detected_whatever_its_suffix(tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    renamed = tmp_path / "model.onnx"
    shutil.copy(path, renamed)
    assert formats.detect_format(str(renamed)) is torchscript


def test_onnx_detected_whatever_its_suffix(tmp_path):
    path = modelzoo.tiny_cnn_onnx(str(tmp_path))
    renamed = tmp_path / "model.pt"
    shutil.copy(path, renamed)
    assert formats.detect_format(str(renamed)) is onnx_model


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoints_are_recognised_and_refused_with_a_how_to(tmp_path, legacy):
    import torch

    path = str(tmp_path / "weights.pth")
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=not legacy)
    assert pytorch_checkpoint.detect(path)
    with pytest.raises(UnsupportedFormatError, match="torch.jit.trace"):
        formats.detect_format(path)


@pytest.mark.parametrize("content", [b"", b"hello world, not a model", os.urandom(4096), b"PK\x03\x04broken zip"])
def test_unknown_content_is_refused(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormatError, match="not a supported model"):
        formats.detect_format(str(path))


def test_truncated_onnx_is_detected_then_refused_on_load(tmp_path):
    path = modelzoo.tiny_cnn_onnx(str(tmp_path))
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    assert formats.detect_format(str(truncated)) is onnx_model
    with pytest.raises(UnsupportedFormatError, match="not a valid ONNX model"):
        onnx_model.load(str(truncated))


def test_folder_with_one_model_finds_it_and_ignores_other_files(tmp_path):
    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    (tmp_path / "README.txt").write_text("notes")
    assert formats.find_model_file(str(tmp_path)) == path
    assert formats.detect_format_name(str(tmp_path)) == "torchscript"


def test_folder_with_several_models_needs_model_file(tmp_path):
    modelzoo.tiny_cnn_torchscript(str(tmp_path))
    modelzoo.tiny_cnn_onnx(str(tmp_path))
    with pytest.raises(UnsupportedFormatError, match="--model-file"):
        formats.find_model_file(str(tmp_path))
    assert formats.find_model_file(str(tmp_path), "cnn.onnx") == str(tmp_path / "cnn.onnx")


def test_model_file_outside_the_folder_is_refused(tmp_path):
    modelzoo.tiny_cnn_torchscript(str(tmp_path))
    with pytest.raises(UnsupportedFormatError, match="outside"):
        formats.find_model_file(str(tmp_path), "../etc/passwd")


def test_folder_with_only_a_checkpoint_points_at_the_checkpoint(tmp_path):
    path = modelzoo.checkpoint(str(tmp_path))
    assert formats.find_model_file(str(tmp_path)) == path
    with pytest.raises(UnsupportedFormatError, match="plain PyTorch checkpoint"):
        formats.detect_format_name(str(tmp_path))


def test_missing_path(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="not found"):
        formats.detect_format(str(tmp_path / "nope.onnx"))
