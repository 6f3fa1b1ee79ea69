"""tasks/fetch.py: the model to optimize, from a path, a URI or the model repository, as a local file."""

from __future__ import annotations

import os

import pytest
from accelflow.core.errors import SpecError, UnsupportedFormatError
from accelflow.storage.repository import ModelRepository
from accelflow.storage.store import Store
from accelflow.tasks.fetch import fetch_model, local_file

from tests import modelzoo


@pytest.fixture
def models(tmp_path) -> str:
    folder = tmp_path / "models"
    folder.mkdir()
    modelzoo.tiny_cnn_onnx(str(folder))
    return str(folder)


def test_a_local_model_file_is_used_in_place(models, tmp_path):
    scratch = tmp_path / "scratch"
    fetched = fetch_model(os.path.join(models, "cnn.onnx"), None, None, str(scratch))
    assert (fetched.name, fetched.version, fetched.format, fetched.source) == ("cnn", "local", "onnx", "local")
    assert fetched.model_file == os.path.join(models, "cnn.onnx") and fetched.home == models
    assert not scratch.exists()  # nothing copied


def test_a_folder_with_one_model_names_the_model_after_the_folder(models, tmp_path):
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    fetched = fetch_model(models, None, None, str(tmp_path / "scratch"))
    assert fetched.name == "models" and fetched.model_file == os.path.join(models, "cnn.onnx")


def test_a_folder_with_several_models_needs_the_model_file(models, tmp_path):
    modelzoo.tiny_cnn_torchscript(models)
    with pytest.raises(UnsupportedFormatError, match="several model files.*--model-file"):
        fetch_model(models, None, None, str(tmp_path / "scratch"))
    fetched = fetch_model(models, None, "cnn.pt", str(tmp_path / "scratch"))
    assert fetched.format == "torchscript" and fetched.model_file == os.path.join(models, "cnn.pt")
    with pytest.raises(UnsupportedFormatError, match="outside"):
        fetch_model(models, None, "../elsewhere.onnx", str(tmp_path / "scratch"))


def test_a_missing_model_says_what_to_give(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="model not found: .*NAME@VERSION"):
        fetch_model(str(tmp_path / "nothing.onnx"), None, None, str(tmp_path / "scratch"))


def test_a_version_of_a_local_repository_is_used_in_place(models, tmp_path):
    repo = ModelRepository(str(tmp_path / "repo"))
    entry = repo.add("cnn", "v1", os.path.join(models, "cnn.onnx"), source="uploaded", format="onnx")
    scratch = tmp_path / "scratch"
    fetched = fetch_model("cnn@v1", repo.uri, None, str(scratch))
    assert (fetched.name, fetched.version, fetched.format, fetched.source) == ("cnn", "v1", "onnx", "uploaded")
    assert (fetched.model_id, fetched.version_id, fetched.repo) == (entry.model_id, entry.id, repo.uri)
    assert fetched.home == entry.home and fetched.model_file == os.path.join(entry.home, "cnn.onnx")
    assert not scratch.exists()


def test_a_model_file_uri_is_fetched_into_the_work_folder_with_its_folder(s3_repo_uri, tmp_path):
    (tmp_path / "models").mkdir()
    modelzoo.tiny_cnn_onnx(str(tmp_path / "models"), external_data=True)
    bucket = s3_repo_uri.split("/")[2]
    store = Store(f"s3://{bucket}/models/cnn")
    for name in ("cnn.onnx", "cnn.onnx.data"):
        store.put_file(str(tmp_path / "models" / name), store.path(name))
    scratch = tmp_path / "scratch"
    fetched = fetch_model(f"s3://{bucket}/models/cnn/cnn.onnx", None, None, str(scratch))
    assert (fetched.name, fetched.format, fetched.source) == ("cnn", "onnx", "uri")
    assert fetched.repo == f"s3://{bucket}/models/cnn"
    assert fetched.model_file == str(scratch / "model" / "cnn.onnx")
    assert sorted(os.listdir(scratch / "model")) == ["cnn.onnx", "cnn.onnx.data"]  # the external data came along
    assert (scratch / "model" / "cnn.onnx.data").read_bytes() == (tmp_path / "models" / "cnn.onnx.data").read_bytes()


def test_samples_by_uri_are_copied_local_paths_kept(s3_repo_uri, tmp_path):
    import boto3  # comes with moto; imported here so tests without S3 do not pay for it

    assert local_file(None, str(tmp_path)) is None
    assert local_file(str(tmp_path / "samples.npz"), str(tmp_path / "scratch")) == str(tmp_path / "samples.npz")
    bucket = s3_repo_uri.split("/")[2]
    boto3.client("s3").put_object(Bucket=bucket, Key="inputs/samples.npz", Body=b"npz bytes")
    copied = local_file(f"s3://{bucket}/inputs/samples.npz", str(tmp_path / "scratch"))
    assert copied == str(tmp_path / "scratch" / "inputs" / "samples.npz")
    assert open(copied, "rb").read() == b"npz bytes"
    with pytest.raises(SpecError, match="--samples file not found"):
        local_file(f"s3://{bucket}/inputs/missing.npz", str(tmp_path / "scratch"))


def test_a_model_folder_holding_a_link_out_of_it_is_refused(models, tmp_path):
    """Any file of the folder may be read as the model's (a SavedModel's variables, a pipeline's
    weights) and is copied with it: a link out is refused before any step reads the folder."""
    secret = tmp_path / "credentials"
    secret.write_text("SECRET")
    link = os.path.join(models, "variables.data")
    os.symlink(secret, link)
    with pytest.raises(UnsupportedFormatError, match=f"{link} is a symbolic link to {secret}, outside the model's"):
        fetch_model(models, None, None, str(tmp_path / "scratch"))
    fetched = fetch_model(os.path.join(models, "cnn.onnx"), None, None, str(tmp_path / "scratch"))
    assert fetched.model_file == os.path.join(models, "cnn.onnx")  # a file given alone: only its own data counts


def test_a_link_planted_in_a_local_repository_version_is_refused(models, tmp_path):
    repo = ModelRepository(str(tmp_path / "repo"))
    entry = repo.add("cnn", "v1", models, source="uploaded", format="onnx")
    secret = tmp_path / "credentials"
    secret.write_text("SECRET")
    os.symlink(secret, os.path.join(entry.home, "notes.txt"))  # by someone who can write the repository's folder
    with pytest.raises(UnsupportedFormatError, match=f"notes.txt is a symbolic link to {secret}"):
        fetch_model("cnn@v1", repo.uri, None, str(tmp_path / "scratch"))
