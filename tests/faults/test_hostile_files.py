"""Symbolic links out of a model's folder are never followed: not when optimizing, adding to the
model repository (local or S3) or saving a task; ONNX external data in a subfolder keeps its
relative path through all of them (issue 17, item 3; docs/security.md).

The hostile model is an ONNX model whose external-data file is a link to a "secret" file outside
its folder. The secret file starts with the model's real weights, so the model would load and
run through the link: only the link rule stops it. Every file accelflow wrote (outputs, the
repository, the S3 bucket) is searched for the secret afterwards.
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main
from accelflow.storage.store import Store

import accelflow
from tests import modelzoo

FAST = ["--draws", "1", "--bench-seconds", "0.2", "--engine", "onnxruntime"]
INFO = ["-t", "image:float(2*3*16*16)"]


def _fails(args, capsys, *needles) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


def _succeeds(args, capsys) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _files_holding(root, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and needle in open(path, "rb").read():
                found.append(path)
    return found


def _objects_holding(uri: str, needle: bytes) -> list[str]:
    store = Store(uri)
    return [rel for rel in store.files(store.root) if needle in store.read_bytes(store.path(rel))]


@pytest.fixture
def secret(tmp_path) -> bytes:
    return f"SECRET-{uuid.uuid4().hex}".encode()


@pytest.fixture
def linked(tmp_path, secret) -> dict:
    """models/m/cnn.onnx whose external data cnn.onnx.data is a link to secrets/credentials,
    a file outside the model's folder holding the real weights followed by the secret."""
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    model = modelzoo.tiny_cnn_onnx(str(folder), external_data=True)
    data = folder / "cnn.onnx.data"
    (tmp_path / "secrets").mkdir()
    target = tmp_path / "secrets" / "credentials"
    target.write_bytes(data.read_bytes() + secret)
    data.unlink()
    data.symlink_to(target)
    return {"folder": str(folder), "model": model, "link": str(data), "target": str(target)}


def _no_secret_anywhere(tmp_path, secret: bytes, linked: dict) -> None:
    """Only the secret file itself holds the secret (the link resolves to it, so it is skipped)."""
    found = [p for p in _files_holding(tmp_path, secret) if os.path.realpath(p) != linked["target"]]
    assert found == []


@pytest.mark.parametrize("given", ["model", "folder"])
def test_optimize_refuses_external_data_linked_out_of_the_folder(prefect_server, linked, given, secret,
                                                                 tmp_path, capsys):
    out = tmp_path / "out"
    _fails(["optimize", linked[given], *INFO, *FAST, "--output", str(out)], capsys,
           linked["link"], linked["target"], "outside the model's folder")
    assert not out.exists()
    _no_secret_anywhere(tmp_path, secret, linked)


@pytest.mark.parametrize("given", ["model", "folder"])
def test_repo_add_refuses_a_link_out_of_the_folder(linked, given, secret, tmp_path, capsys):
    repo = tmp_path / "repo"
    _fails(["repo", "add", "cnn", "v1", linked[given], "--source", "uploaded", "--repo", str(repo)], capsys,
           linked["link"], linked["target"])
    assert not os.path.exists(repo / "models" / "cnn")
    _no_secret_anywhere(tmp_path, secret, linked)


def test_repo_add_to_s3_refuses_a_link_out_of_the_folder(s3_repo_uri, linked, secret, tmp_path, capsys):
    for given in ("folder", "model"):
        _fails(["repo", "add", "cnn", "v1", linked[given], "--source", "uploaded", "--repo", s3_repo_uri], capsys,
               linked["link"], linked["target"])
    assert _objects_holding(s3_repo_uri, secret) == []
    assert Store(s3_repo_uri).files(Store(s3_repo_uri).root) == {}  # nothing uploaded at all
    _no_secret_anywhere(tmp_path, secret, linked)


def test_a_link_to_a_file_inside_the_folder_is_copied_as_that_file(tmp_path, capsys):
    """The choice for links that stay inside: followed, the copy holds the target's bytes.
    (Not for ONNX external data, which onnx itself refuses as a link: tests/formats/test_onnx_model.py.)"""
    folder = tmp_path / "m"
    (folder / "labels").mkdir(parents=True)
    modelzoo.tiny_cnn_onnx(str(folder))
    (folder / "labels" / "v2.txt").write_text("cat\ndog\n")
    (folder / "labels.txt").symlink_to(os.path.join("labels", "v2.txt"))
    repo = tmp_path / "repo"
    _succeeds(["repo", "add", "cnn", "v1", str(folder), "--source", "uploaded", "--repo", str(repo)], capsys)
    home = json.loads(_succeeds(["repo", "show", "cnn@v1", "--repo", str(repo), "--json"], capsys))["home"]
    copied = os.path.join(home, "labels.txt")
    assert not os.path.islink(copied) and open(copied).read() == "cat\ndog\n"


def test_tasks_save_refuses_a_link_planted_in_the_original_folder(prefect_server, secret, tmp_path, capsys):
    """Save copies the original model's folder: a link put there after the task ran is refused."""
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    modelzoo.tiny_cnn_onnx(str(folder), external_data=True)
    out, repo = tmp_path / "out", tmp_path / "repo"
    name = f"save-{uuid.uuid4().hex[:8]}"
    _succeeds(["optimize", str(folder), *INFO, *FAST, "--output", str(out), "--repo", str(repo), "--name", name],
              capsys)
    target = tmp_path / "secrets" / "credentials"
    target.parent.mkdir()
    target.write_bytes(secret)
    link = folder / "notes.txt"
    link.symlink_to(target)
    _fails(["tasks", "save", name], capsys, str(link), str(target), "outside the model's folder")
    assert not os.path.exists(repo / "models")  # nothing registered
    assert [p for p in _files_holding(tmp_path, secret) if os.path.realpath(p) != str(target)] == []


# -- external data in a subfolder ---------------------------------------------------------------


def _runs(folder: str, x: np.ndarray) -> list[float]:
    """The optimized model at `folder`, loaded back and run on x."""
    return np.asarray(accelflow.load(folder)(image=x)).ravel().tolist()


def _ort_outputs(path: str) -> list[float]:
    import onnxruntime as ort

    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0].ravel().tolist()


@pytest.fixture
def subfolder_model(tmp_path) -> str:
    """models/sub/cnn.onnx keeping its weights in models/sub/weights/w.bin."""
    import onnx

    folder = tmp_path / "models" / "sub"
    folder.mkdir(parents=True)
    path = modelzoo.tiny_cnn_onnx(str(folder))
    (folder / "weights").mkdir()
    onnx.save_model(onnx.load(path), path, save_as_external_data=True, location="weights/w.bin", size_threshold=0)
    assert os.path.getsize(folder / "weights" / "w.bin") > 1000
    return path


def test_external_data_in_a_subfolder_optimizes_adds_fetches_and_saves(prefect_server, s3_repo_uri, subfolder_model,
                                                                       tmp_path, capsys):
    expected = _ort_outputs(subfolder_model)
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    # optimized from the file: the result loads and runs
    out = tmp_path / "out"
    result = json.loads(_succeeds(["optimize", subfolder_model, *INFO, *FAST, "--output", str(out), "--json"], capsys))
    assert _runs(result["result_folder"], x) == pytest.approx(expected, abs=1e-4)
    # added to a local and an S3 repository with its relative path, fetched back and optimized from there
    folder = os.path.dirname(subfolder_model)
    local_repo = str(tmp_path / "repo")
    for repo in (local_repo, s3_repo_uri):
        entry = json.loads(_succeeds(["repo", "add", "sub", "v1", folder, "--source", "uploaded", "--repo", repo,
                                      "--json"], capsys))
        assert sorted(entry["files"]) == ["cnn.onnx", "weights/w.bin"]
    from accelflow.storage.repository import ModelRepository

    fetched = ModelRepository(s3_repo_uri).fetch("sub", "v1", str(tmp_path / "fetched"))
    assert _ort_outputs(os.path.join(fetched, "cnn.onnx")) == pytest.approx(expected)
    name = f"sub-{uuid.uuid4().hex[:8]}"
    from_s3 = json.loads(_succeeds(["optimize", "sub@v1", "--repo", s3_repo_uri, *INFO, *FAST, "--output",
                                    str(tmp_path / "out-s3"), "--json", "--name", name], capsys))
    assert _runs(from_s3["result_folder"], x) == pytest.approx(expected, abs=1e-4)
    # saved: the original's weights keep weights/w.bin, so the saved original model still loads
    local_name = f"subl-{uuid.uuid4().hex[:8]}"
    _succeeds(["optimize", subfolder_model, *INFO, *FAST, "--output", str(tmp_path / "out-save"), "--repo", local_repo,
               "--name", local_name], capsys)
    saved = json.loads(_succeeds(["tasks", "save", local_name, "--json"], capsys))
    home = saved["home"]
    assert os.path.isfile(os.path.join(home, "weights", "w.bin"))
    assert _ort_outputs(os.path.join(home, "cnn.onnx")) == pytest.approx(expected)
    assert _runs(os.path.join(home, "model"), x) == pytest.approx(expected, abs=1e-4)
