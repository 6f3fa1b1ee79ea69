"""The conversion cache: a second conversion of the same bytes and tensor information is a hit."""

from __future__ import annotations

import os

import pytest
from accelflow.core import tensor_info
from accelflow.storage import cache
from accelflow.tasks.context import ModelContext
from accelflow.tasks.convert import convert_to_onnx

from tests import modelzoo

INFO = ["input_0:float(1*3*16*16,2*3*16*16)"]


def convert(model_file: str, format_name: str, lines: list[str], work_dir: str, **options):
    """The conversion step on a context made from these arguments, as the flow makes it."""
    ctx = ModelContext(model_file, format_name, tensor_info.parse(lines), work_dir, threads=1)
    return convert_to_onnx(ctx, **options)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "m").mkdir()
    return modelzoo.tiny_cnn_torchscript(str(tmp_path / "m"))


def test_second_conversion_is_taken_from_the_cache(own_cache, tmp_path):
    first = convert(own_cache, "torchscript", INFO, str(tmp_path / "w1"))
    second = convert(own_cache, "torchscript", INFO, str(tmp_path / "w2"))
    assert not first.cached and second.cached
    assert second.onnx_path == first.onnx_path and second.io == first.io
    assert second.onnx_path.startswith(str(tmp_path / "cache"))
    assert not (tmp_path / "w2" / "onnx").exists()  # nothing exported the second time


def test_other_tensor_information_or_bytes_miss(own_cache, tmp_path):
    convert(own_cache, "torchscript", INFO, str(tmp_path / "w1"))
    other_info = convert(own_cache, "torchscript", ["input_0:float(1*3*16*16)"], str(tmp_path / "w2"))
    assert not other_info.cached
    with open(own_cache, "ab") as f:
        f.write(b"\0")  # zip files tolerate trailing bytes; the hash does not
    assert not convert(own_cache, "torchscript", INFO, str(tmp_path / "w3")).cached


def test_cache_off(own_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_CACHE", "off")
    convert(own_cache, "torchscript", INFO, str(tmp_path / "w1"))
    assert not convert(own_cache, "torchscript", INFO, str(tmp_path / "w2")).cached
    assert not (tmp_path / "cache").exists()


def test_older_entries_are_evicted_past_the_size_limit(own_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_CACHE_GB", str(1e-12))  # any two entries are over the limit
    convert(own_cache, "torchscript", INFO, str(tmp_path / "w1"))
    newest = convert(own_cache, "torchscript", ["input_0:float(2*3*16*16)"], str(tmp_path / "w2"))
    entries = [e for e in os.listdir(tmp_path / "cache") if not e.startswith(".")]
    assert len(entries) == 1 and newest.onnx_path.startswith(str(tmp_path / "cache" / entries[0]))
    assert cache.lookup("missing") is None
