"""Hostile TensorFlow models (issue 17): a SavedModel whose serving function writes a file is
refused before TensorFlow loads it, by `optimize` and by `repo add`; --trust-model-code lets it
past the trust check (what then happens is asserted as it is)."""

from __future__ import annotations

import importlib.util

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import tf_models

# Not pytest.importorskip: importing tf2onnx while pytest collects leaves pytest's own stderr
# capture closed by the end of the first flow run ("I/O operation on closed file").
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
