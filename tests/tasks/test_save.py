"""tasks/save.py: an accelerated task saved to the model repository as a new version of
`<model>-optimized`: the original's files, the optimized model and the reports, with lineage."""

from __future__ import annotations

import os
import uuid

import pytest
from accelflow.core.errors import AccelflowError, RepositoryError
from accelflow.storage.repository import ModelRepository
from accelflow.tasks import package, publish
from accelflow.tasks.save import optimized_model_name, save_task

from tests import modelzoo
from tests.files import tree, write_files

RESULT_FILES = {"model/manifest.json": b'{"engine": "onnxruntime"}', "model/model.onnx": os.urandom(3000),
                "report.json": b'{"speedup": 2.0}', "report.md": b"# cnn", "report.html": b"<p>cnn</p>",
                "work/leftover.txt": b"not part of a saved model"}


def _published(output: str, task_name: str, run_id: str) -> str:
    """A finished result, published as the optimize flow publishes one."""
    staging = package.start_staging(output)
    write_files(staging.path, RESULT_FILES)
    return publish.publish(staging, output, task_name, run_id)


@pytest.fixture
def task(tmp_path):
    """(run id, request, result) of a finished task on a local ONNX model with external data."""
    (tmp_path / "models").mkdir()
    model = modelzoo.tiny_cnn_onnx(str(tmp_path / "models"), external_data=True)
    (tmp_path / "models" / "README.txt").write_text("beside the model")
    run_id = str(uuid.uuid4())
    uri = _published(str(tmp_path / "results"), "cnn-fp16", run_id)
    request = {"model": model, "output": str(tmp_path / "saved"), "repo": str(tmp_path / "repo")}
    result = {"result_uri": uri, "model": "cnn", "version": "local", "model_id": None, "version_id": None,
              "engine": "onnxruntime", "engine_version": "1.32.0", "precision": "f32", "level": "fp16",
              "device": "cpu", "speedup": 2.0}
    return run_id, request, result


def test_a_task_is_saved_as_a_version_of_the_optimized_model(task, tmp_path):
    run_id, request, result = task
    entry = save_task(run_id, "cnn-fp16", request, result)
    assert (entry.model, entry.version) == ("cnn-optimized", "local-cnn-fp16")
    # assembled under the output in a folder named after the ids, and registered from there
    assembled = os.path.join(request["output"], f"m-{entry.model_id}", f"mv-{entry.id}")
    saved = tree(entry.home)
    assert tree(assembled) == saved
    original = tree(str(tmp_path / "models"))
    # the original's files (the ONNX file's external data with it; not the README beside it),
    # then the optimized model and the reports; nothing else of the result
    assert set(saved) == {"cnn.onnx", "cnn.onnx.data", "model/manifest.json", "model/model.onnx",
                          "report.json", "report.md", "report.html"}
    assert saved["cnn.onnx.data"] == original["cnn.onnx.data"]
    assert saved["model/model.onnx"] == RESULT_FILES["model/model.onnx"]
    repository = ModelRepository(request["repo"])
    assert (repository.show("cnn-optimized").source, repository.show("cnn-optimized").format) == (
        "optimized", "accelflow")
    lineage = repository.version("cnn-optimized", "local-cnn-fp16").extra
    assert (lineage["original_model"], lineage["original_version"]) == ("cnn", "local")
    assert (lineage["task_id"], lineage["task_name"], lineage["engine"], lineage["speedup"]) == (
        run_id, "cnn-fp16", "onnxruntime", 2.0)


def test_a_task_is_saved_once(task):
    run_id, request, result = task
    first = save_task(run_id, "cnn-fp16", request, result)
    with pytest.raises(RepositoryError, match=r"'cnn-fp16' is already saved as cnn-optimized@local-cnn-fp16"):
        save_task(run_id, "cnn-fp16", request, result)
    assert os.listdir(os.path.join(request["output"], f"m-{first.model_id}")) == [f"mv-{first.id}"]  # nothing new


def test_another_task_of_the_model_is_another_version_of_the_same_model(task, tmp_path):
    run_id, request, result = task
    first = save_task(run_id, "cnn-fp16", request, result)
    other_run = str(uuid.uuid4())
    other = dict(result, result_uri=_published(str(tmp_path / "results"), "cnn-lossless", other_run))
    second = save_task(other_run, "cnn-lossless", request, other)
    assert second.model_id == first.model_id and second.id != first.id
    assert ModelRepository(request["repo"]).show("cnn-optimized").versions == ["local-cnn-fp16", "local-cnn-lossless"]


def test_the_result_must_be_the_tasks_own(task):
    run_id, request, result = task
    with pytest.raises(publish.ResultError, match=f"belongs to flow run {run_id}, not to task 'other'"):
        save_task(str(uuid.uuid4()), "other", request, result)
    assert not os.path.exists(request["output"])


def test_a_failed_save_leaves_no_folder_and_no_version(task):
    run_id, request, result = task
    os.remove(os.path.join(result["result_uri"], "report.html"))  # the result lost a file after publishing
    with pytest.raises(AccelflowError, match="report.html"):
        save_task(run_id, "cnn-fp16", request, result)
    assert os.path.isdir(request["output"])  # the save had started writing there
    leftovers = [os.path.join(root, n) for root, _, names in os.walk(request["output"]) for n in names]
    assert leftovers == []
    with pytest.raises(RepositoryError):
        ModelRepository(request["repo"]).show(optimized_model_name("cnn"))


def test_the_optimized_name_fits_the_repository():
    assert optimized_model_name("bert") == "bert-optimized"
    assert len(optimized_model_name("m" * 128)) == 128  # the repository's longest name


def _no_leftovers(request) -> None:
    leftovers = [os.path.join(root, n) for root, _, names in os.walk(request["output"]) for n in names]
    assert leftovers == []
    with pytest.raises(RepositoryError):
        ModelRepository(request["repo"]).show(optimized_model_name("cnn"))


@pytest.mark.parametrize("given", ["file", "folder"])
def test_a_link_out_of_the_original_folder_is_refused_naming_link_and_target(task, tmp_path, given):
    """The external data replaced by a link to a secret after the task ran: the save would copy
    the secret into the repository; it is refused, naming the link and where it points."""
    run_id, request, result = task
    data = tmp_path / "models" / "cnn.onnx.data"
    secret = tmp_path / "credentials"
    secret.write_bytes(data.read_bytes() + b"SECRET")
    data.unlink()
    data.symlink_to(secret)
    model = request["model"] if given == "file" else str(tmp_path / "models")
    with pytest.raises(AccelflowError, match=f"{data} is a symbolic link to {secret}"):
        save_task(run_id, "cnn-fp16", dict(request, model=model), result)
    _no_leftovers(request)


def test_a_link_inside_the_original_folder_is_saved_as_the_file_it_names(task, tmp_path):
    run_id, request, result = task
    (tmp_path / "models" / "notes").mkdir()
    (tmp_path / "models" / "notes" / "v2.txt").write_text("trained on ...")
    (tmp_path / "models" / "NOTES.txt").symlink_to(os.path.join("notes", "v2.txt"))
    entry = save_task(run_id, "cnn-fp16", dict(request, model=str(tmp_path / "models")), result)
    saved = tree(entry.home)
    assert saved["NOTES.txt"] == saved["notes/v2.txt"] == b"trained on ..."
    assert not os.path.islink(os.path.join(entry.home, "NOTES.txt"))


def test_external_data_in_a_subfolder_is_saved_in_its_subfolder(tmp_path):
    import onnx

    (tmp_path / "models" / "weights").mkdir(parents=True)
    model = modelzoo.tiny_cnn_onnx(str(tmp_path / "models"))
    onnx.save_model(onnx.load(model), model, save_as_external_data=True, location="weights/w.bin", size_threshold=0)
    run_id = str(uuid.uuid4())
    request = {"model": model, "output": str(tmp_path / "saved"), "repo": str(tmp_path / "repo")}
    result = {"result_uri": _published(str(tmp_path / "results"), "cnn-fp16", run_id), "model": "cnn",
              "version": "local"}
    entry = save_task(run_id, "cnn-fp16", request, result)
    assert {"cnn.onnx", "weights/w.bin"} <= set(tree(entry.home))
    onnx.checker.check_model(os.path.join(entry.home, "cnn.onnx"))  # its external data is where it says
