"""Hostile TensorFlow models (issue 17): a SavedModel whose serving function writes a file is
refused before TensorFlow loads it, by `optimize` and by `repo add`; --trust-model-code lets it
past the trust check (what then happens is asserted as it is)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import tf_models

# Not pytest.importorskip("tf2onnx"): with it, pytest's own stderr capture was found closed after
# this file's first flow run ("I/O operation on closed file"; TF 2.21, tf2onnx 1.17).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs the tf extra")

FAST = ["--draws", "1", "--bench-seconds", "0.2"]
LINE = "x:float(1*4)"


def _writer(tmp_path):
    """(model folder, absolute marker path its serving function writes)."""
    marker = tmp_path / "elsewhere" / "pwned"
    marker.parent.mkdir()
    return tf_models.writing_savedmodel(str(tmp_path / "models" / "writer"), str(marker)), marker


def _refused(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err, err
    assert "WriteFile op in function __inference_serve_" in err and "--trust-model-code" in err, err
    return err


def test_optimize_refuses_a_savedmodel_that_writes_a_file(prefect_server, tmp_path, capsys):
    model, marker = _writer(tmp_path)
    out = tmp_path / "out"
    _refused(["optimize", model, "-t", LINE, *FAST, "--output", str(out)], capsys)
    assert not marker.exists()
    assert not out.exists()


def test_repo_add_refuses_a_savedmodel_that_writes_a_file(tmp_path, capsys):
    model, marker = _writer(tmp_path)
    repo = tmp_path / "repo"
    _refused(["repo", "add", "writer", "v1", model, "--source", "uploaded", "--repo", str(repo)], capsys)
    assert not marker.exists()
    assert not (repo / "writer").exists()


def test_trusted_the_model_runs_and_says_so(prefect_server, tmp_path, capsys):
    """--trust-model-code passes the trust check; tf2onnx prunes WriteFile (nothing reads it), so the
    engines never write, but the TensorFlow baseline runs the signature: the model's write happens
    (here at the absolute path it names). The report records the trust and what ran."""
    model, marker = _writer(tmp_path)
    out = tmp_path / "out"
    code = main(["optimize", model, "-t", LINE, *FAST, "--trust-model-code", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert marker.exists()
    (task,) = os.listdir(out)
    settings = json.loads((out / task / "report.json").read_text())["settings"]
    assert settings["trust_model_code"] is True
    assert [r for r in settings["model_code"] if r.startswith("WriteFile op in function __inference_serve_")]


def test_trusted_a_relative_write_lands_in_the_scratch_folder_not_the_callers(prefect_server, tmp_path,
                                                                              monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    model = tf_models.writing_savedmodel(str(tmp_path / "models" / "relative"), "pwned-relative")
    assert main(["optimize", model, "-t", LINE, *FAST, "--trust-model-code", "--output", str(tmp_path / "out")]) == 0
    assert os.listdir(cwd) == []


def test_trusted_the_model_sees_no_credentials(prefect_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-3f9a")
    monkeypatch.setenv("PREFECT_API_KEY", "sentinel-key-77c1")
    seen = tmp_path / "environ"
    model = tf_models.environ_copying_savedmodel(str(tmp_path / "models" / "env"), str(seen))
    assert main(["optimize", model, "-t", LINE, *FAST, "--trust-model-code", "--output", str(tmp_path / "out")]) == 0
    # Written from inside the model: it ran. /proc/self/environ is a process's environment as it
    # was started, so the credentials set here show only in a child started with them.
    assert int(seen.with_suffix(".stat").read_text().split()[0]) != os.getpid()
    environ = seen.read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"AWS_", b"PREFECT_API_KEY"))]
    assert not [v for v in environ if b"sentinel-" in v]
