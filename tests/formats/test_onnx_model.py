"""formats/onnx_model.py: an ONNX model's external data is read only from inside its folder,
and keeps its relative location (a subfolder stays a subfolder)."""

from __future__ import annotations

import os

import onnx
import pytest
from accelflow.core.errors import UnsupportedFormatError
from accelflow.formats import onnx_model

from tests import modelzoo


def _with_data_at(path: str, location: str) -> None:
    """Re-save the model at `path` with every weight in the external file `location`."""
    folder = os.path.dirname(path)
    os.makedirs(os.path.dirname(os.path.join(folder, location)), exist_ok=True)
    onnx.save_model(onnx.load(path), path, save_as_external_data=True, location=location, size_threshold=0)


def _relocate(path: str, location: str) -> None:
    """Point every external tensor at `location`, the data file untouched (a crafted model)."""
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, path)


@pytest.fixture
def model(tmp_path) -> str:
    (tmp_path / "m").mkdir()
    return modelzoo.tiny_cnn_onnx(str(tmp_path / "m"))


def test_external_data_in_a_subfolder_keeps_its_relative_path(model):
    _with_data_at(model, "weights/w.bin")
    folder = os.path.dirname(model)
    assert onnx_model.companion_files(model) == [os.path.join(folder, "weights", "w.bin")]
    assert onnx_model.code_risks(model) == []
    assert onnx_model.load(model).graph.initializer  # checked and read


def test_a_model_without_external_data_has_no_companions(model):
    assert onnx_model.companion_files(model) == []
    assert onnx_model.companion_files(os.path.dirname(model)) == []  # not an ONNX file


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin", "weights/../../secret.bin"])
def test_a_location_outside_the_folder_is_refused(model, tmp_path, location):
    _with_data_at(model, "cnn.onnx.data")
    (tmp_path / "secret.bin").write_bytes(open(os.path.join(os.path.dirname(model), "cnn.onnx.data"), "rb").read())
    _relocate(model, location)
    for check in (onnx_model.companion_files, onnx_model.code_risks, onnx_model.load):
        with pytest.raises(UnsupportedFormatError, match=f"keeps its data at '{location}', outside the model's folder"):
            check(model)


def test_external_data_linked_out_of_the_folder_is_refused(model, tmp_path):
    _with_data_at(model, "cnn.onnx.data")
    data = os.path.join(os.path.dirname(model), "cnn.onnx.data")
    secret = tmp_path / "credentials"
    secret.write_bytes(open(data, "rb").read() + b"SECRET")  # would load: the weights come first
    os.unlink(data)
    os.symlink(secret, data)
    for check in (onnx_model.companion_files, onnx_model.code_risks, onnx_model.load):
        with pytest.raises(UnsupportedFormatError, match=f"{data} is a symbolic link to {secret}, outside"):
            check(model)


def test_external_data_linked_to_a_file_inside_the_folder_is_refused_as_onnx_does(model):
    """onnx's checker refuses any link in external data: said at once, naming link and target."""
    _with_data_at(model, "cnn.onnx.data")
    folder = os.path.dirname(model)
    os.makedirs(os.path.join(folder, "weights"))
    os.replace(os.path.join(folder, "cnn.onnx.data"), os.path.join(folder, "weights", "v2.bin"))
    os.symlink(os.path.join("weights", "v2.bin"), os.path.join(folder, "cnn.onnx.data"))
    target = os.path.realpath(os.path.join(folder, "weights", "v2.bin"))
    for check in (onnx_model.companion_files, onnx_model.code_risks, onnx_model.load):
        with pytest.raises(UnsupportedFormatError, match=f"cnn.onnx.data is a symbolic link to {target}: ONNX reads "
                                                         "external data only from regular files"):
            check(model)


def test_missing_external_data_is_named(model):
    _with_data_at(model, "weights/w.bin")
    os.unlink(os.path.join(os.path.dirname(model), "weights", "w.bin"))
    with pytest.raises(UnsupportedFormatError, match="keeps its data in 'weights/w.bin', which is missing"):
        onnx_model.code_risks(model)
