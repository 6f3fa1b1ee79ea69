"""The S3-compatible store frozen in the middle of a save, then continued (a real moto server,
stopped with SIGSTOP: connections hang as in a network partition or a restarting store)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from accelflow.core.errors import RepositoryError
from accelflow.storage.repository import ModelRepository
from accelflow.tasks.publish import read_manifest
from accelflow.tasks.save import optimized_model_name, save_task

from tests import modelzoo
from tests.conftest import running_moto, set_s3_env

EXTRA_FILES = 24  # 1 MB each beside the model, so a save takes long enough to stop in the middle


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with running_moto(tmp_path_factory, "moto-faults") as server:
        yield server


@pytest.fixture
def repo_uri(store, monkeypatch):
    set_s3_env(monkeypatch, store.endpoint_url)
    monkeypatch.setenv("ACCELFLOW_S3_TIMEOUT", "1")
    monkeypatch.setenv("ACCELFLOW_STORAGE_BACKOFF", "0.5")
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    import boto3

    boto3.client("s3", endpoint_url=store.endpoint_url).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/repo"


@pytest.fixture
def optimized(prefect_server, repo_uri, tmp_path):
    """A real accelerated task of cnn@v1 from the S3 repository: (request, result) as `tasks save` gets them."""
    from accelflow.flows.optimize import optimize
    from accelflow.flows.request import OptimizeRequest

    models = tmp_path / "models"
    models.mkdir()
    modelzoo.tiny_cnn_torchscript(str(models))
    for i in range(EXTRA_FILES):
        (models / f"asset-{i:02d}.bin").write_bytes(os.urandom(1 << 20))
    ModelRepository(repo_uri).add("cnn", "v1", str(models), source="uploaded", format="torchscript")
    request = OptimizeRequest(model="cnn@v1", repo=repo_uri, tensor_info=["input_0:float(1*3*16*16)"],
                              output=str(tmp_path / "out"), engine="onnxruntime", draws=1, bench_seconds=0.2)
    result = optimize(request=request)
    result["task_id"] = read_manifest(result["result_uri"])["flow_run_id"]
    return request.model_dump(), result


def _freeze_once_saving_started(store, repo_uri: str, started: threading.Event) -> None:
    """Pause the store as soon as the first file of the saved version is in it."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    target = f"{repo_uri[5:]}/models/{optimized_model_name('cnn')}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if fs.exists(target) and fs.find(target):
            store.pause()
            started.set()
            return
        time.sleep(0.02)


def _save_in_thread(request, result):
    box = {}

    def run():
        try:
            box["entry"] = save_task(result["task_id"], "cnn-job", request, result)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _versions(repo_uri: str, name: str) -> list[str]:
    try:
        return ModelRepository(repo_uri).show(name).versions
    except RepositoryError:
        return []


def test_save_completes_on_retry_after_the_store_comes_back(store, repo_uri, optimized, capfd):
    request, result = optimized
    frozen = threading.Event()
    watcher = threading.Thread(target=_freeze_once_saving_started, args=(store, repo_uri, frozen))
    watcher.start()
    thread, box = _save_in_thread(request, result)
    watcher.join()
    assert frozen.is_set(), "the save finished before the store could be stopped"
    time.sleep(8)  # attempts time out (1 MB uploads: 5 s deadline) and back off while the store is down
    assert thread.is_alive() and _nothing_visible_yet(box)
    store.resume()
    thread.join(timeout=120)
    assert "error" not in box, box.get("error")
    entry = box["entry"]
    repository = ModelRepository(repo_uri)
    assert repository.show(entry.model).versions == [entry.version]
    saved = repository.version(entry.model, entry.version)
    assert sum(f.startswith("asset-") for f in saved.files) == EXTRA_FILES  # every file, whole
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert all(fs.size(f"{saved.home}/{f}") == 1 << 20 for f in saved.files if f.startswith("asset-"))
    assert "storage unreachable while trying to save" in capfd.readouterr().err  # the user is told


def _nothing_visible_yet(box) -> bool:
    return "entry" not in box and "error" not in box


def test_save_fails_cleanly_when_the_store_stays_away_and_leaves_no_version(store, repo_uri, optimized, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_STORAGE_RETRIES", "2")
    request, result = optimized
    frozen = threading.Event()
    watcher = threading.Thread(target=_freeze_once_saving_started, args=(store, repo_uri, frozen))
    watcher.start()
    started = time.monotonic()
    thread, box = _save_in_thread(request, result)
    watcher.join()
    assert frozen.is_set(), "the save finished before the store could be stopped"
    thread.join(timeout=180)
    took = time.monotonic() - started
    store.resume()
    assert isinstance(box.get("error"), RepositoryError), box
    assert "could not add" in str(box["error"]) and took < 180
    assert _versions(repo_uri, optimized_model_name("cnn")) == []  # no partial version shows
    saved_dirs = [d for d in os.listdir(request["output"]) if d.startswith("m-")]
    assert all(not os.listdir(os.path.join(request["output"], d)) for d in saved_dirs)  # local copy removed
    entry = save_task(result["task_id"], "cnn-job", request, result)  # the store is back: a new save works
    assert _versions(repo_uri, entry.model) == [entry.version]
