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


def _staging(root, name: str, age_s: float, file_age_s: float | None = None) -> str:
    """A staging folder as a writer leaves it, its folder and file last written `age_s` ago."""
    import time

    folder = os.path.join(root, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "model.onnx"), "wb") as f:
        f.write(b"half a model")
    now = time.time()
    file_time = now - (age_s if file_age_s is None else file_age_s)
    os.utime(os.path.join(folder, "model.onnx"), (file_time, file_time))
    os.utime(folder, (now - age_s, now - age_s))
    return folder


def test_stale_staging_folders_are_removed_by_the_eviction(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ACCELFLOW_CACHE_DIR", str(root))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"not the cache's")
    hour = cache.STALE_PARTIAL_S
    stale = _staging(root, ".partial-killed", 2 * hour)
    fresh = _staging(root, ".partial-writing", 60)
    long_copy = _staging(root, ".partial-big-copy", 2 * hour, file_age_s=5)  # a big file still being written
    other = _staging(root, ".tmp-not-a-staging-folder", 2 * hour)
    os.symlink(outside, root / ".partial-link")
    (tmp_path / "conversion").mkdir()
    (tmp_path / "conversion" / "model.onnx").write_bytes(b"onnx bytes")
    cached, _ = cache.store("k1", str(tmp_path / "conversion" / "model.onnx"), {"inputs": []})  # runs the eviction
    assert open(cached, "rb").read() == b"onnx bytes"
    assert sorted(os.listdir(root)) == [".partial-big-copy", ".partial-link", ".partial-writing",
                                        ".tmp-not-a-staging-folder", "k1"]
    assert not os.path.exists(stale) and all(os.path.isdir(f) for f in (fresh, long_copy, other))
    assert (outside / "keep.bin").read_bytes() == b"not the cache's"  # a link is never followed
