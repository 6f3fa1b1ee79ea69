"""Broken and hostile inputs: each a clear error (exit 2, no traceback), nothing run that the
user did not intend, nothing written outside the output folder."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import modelzoo

FAST = ["--draws", "1", "--bench-seconds", "0.2"]


def _fails(args, capsys, *needles) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One good model file of each single-file format."""
    root = tmp_path_factory.mktemp("originals")
    return {"torchscript": modelzoo.tiny_cnn_torchscript(str(root)), "onnx": modelzoo.tiny_cnn_onnx(str(root))}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_damaged_model_files_fail_cleanly(prefect_server, originals, fmt, damage, tmp_path, capsys):
    data = open(originals[fmt], "rb").read()
    bad = {"empty": b"", "truncated": data[: len(data) // 2],
           "random": np.random.default_rng(0).bytes(len(data))}[damage]
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.bin"
    path.write_bytes(bad)
    out = tmp_path / "out"
    _fails(["optimize", str(path), "-t", "input_0:float(1*3*16*16)", *FAST, "--output", str(out)], capsys, "error: ")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_damaged_tensorflow_models_fail_cleanly(prefect_server, damage, tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs the tf extra")
    from tests import tf_models

    folder = tf_models.keras_cnn_savedmodel(str(tmp_path / "m" / "sm"))
    graph = tf_models.frozen_graph(str(tmp_path / "m" / "graph.pb"))
    for path in (os.path.join(folder, "saved_model.pb"), graph):
        data = open(path, "rb").read()
        cut = {"empty": b"", "truncated": data[: len(data) // 2], "random": np.random.default_rng(1).bytes(len(data))}
        open(path, "wb").write(cut[damage])
    for model, line in ((folder, "image:float(1*16*16*3)"), (graph, "x:float(1*8)")):
        _fails(["optimize", model, "-t", line, *FAST, "--output", str(tmp_path / "out")], capsys, "error: ")
    assert not (tmp_path / "out").exists()


class _RunsCode:
    """Unpickling this runs `touch MARKER`: what a crafted model file would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_torchscript_archive_runs_no_code(prefect_server, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsCode(str(marker)), protocol=2)
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/code/__torch__.py", "class Model:\n  pass\n")
        archive.writestr("model/constants.pkl", payload)
        archive.writestr("model/data.pkl", payload)
        archive.writestr("model/version", "3\n")
    _fails(["optimize", str(path), "-t", "input_0:float(1*4)", *FAST, "--output", str(tmp_path / "out")],
           capsys, "failed to load")
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False])
def test_a_crafted_checkpoint_is_refused_unread(tmp_path, capsys, zipped):
    import torch

    marker = tmp_path / "pwned"
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "weights.pt"
    torch.save({"state": _RunsCode(str(marker))}, path, _use_new_zipfile_serialization=zipped)
    _fails(["optimize", str(path), "-t", "input_0:float(1*4)", "--output", str(tmp_path / "out")],
           capsys, "plain PyTorch checkpoint")
    assert not marker.exists()


def test_crafted_samples_file_is_never_unpickled(prefect_server, originals, tmp_path, capsys):
    marker = tmp_path / "pwned"
    samples = tmp_path / "samples.npz"
    np.savez(samples, input_0=np.array([_RunsCode(str(marker))], dtype=object))
    _fails(["optimize", originals["torchscript"], "-t", "input_0:float(1*3*16*16)", *FAST, "--samples", str(samples),
            "--output", str(tmp_path / "out")], capsys, "error: ")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "a/../../b", ".."])
def test_task_names_never_escape_the_output_folder(prefect_server, originals, tmp_path, name):
    out = tmp_path / "out"
    assert main(["optimize", originals["onnx"], "-t", "input_0:float(1*3*16*16)", *FAST, "--engine", "onnxruntime",
                 "--name", name, "--output", str(out)]) == 0
    made = os.listdir(out)
    assert len(made) == 1 and made[0] not in (".", "..") and "/" not in made[0] and os.path.isdir(out / made[0])
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing written beside it


@pytest.mark.parametrize("option, value", [
    ("--name", "bad\x1b[31mred"), ("--name", "two\nlines"), ("--name", "x" * 500),
    ("--tag", "tab\there"), ("--tag", "t" * 100), ("--tag", "\x00"),
])
def test_control_characters_and_huge_names_are_refused(originals, tmp_path, capsys, option, value):
    _fails(["optimize", originals["onnx"], "-t", "input_0:float(1*3*16*16)", option, value,
            "--output", str(tmp_path / "out")], capsys, "printable characters")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 300, "bad\x00name", "..", "name with\nnewline"])
def test_repository_names_never_escape_the_repository(tmp_path, capsys, name):
    (tmp_path / "m").mkdir()
    model = modelzoo.tiny_cnn_onnx(str(tmp_path / "m"))
    repo = tmp_path / "repo"
    _fails(["repo", "add", name, "v1", model, "--source", "uploaded", "--repo", str(repo)], capsys, "invalid model name")
    _fails(["repo", "add", "ok", name, model, "--source", "uploaded", "--repo", str(repo)], capsys, "invalid version name")
    assert not (repo / "models").exists() or list((repo / "models").iterdir()) == []


@pytest.mark.parametrize("line", ["input_0:float(100000*100000*100000)", "input_0:float(1*3*65536*65536)",
                                  "input_0:int64(1*1,1*99999999999999999999)"])
def test_absurd_sizes_are_refused_before_any_allocation(originals, tmp_path, capsys, line):
    _fails(["optimize", originals["onnx"], "-t", line, "--output", str(tmp_path / "out")], capsys, "error: ")
    assert not (tmp_path / "out").exists()  # refused before any work (bench/service_latency.py times it)
