"""A submitted request names only what a worker on another machine can reach."""

from __future__ import annotations

import os

import numpy as np
import pytest
from accelflow.core.errors import DeviceError, SpecError
from accelflow.flows.inputs import prepare_for_submit, server_is_local
from accelflow.flows.request import OptimizeRequest
from accelflow.storage.store import Store

from tests import modelzoo

REMOTE_SERVER = "http://prefect.internal:4200/api"
INFO = ["input_0:float(1*3*16*16)"]


@pytest.fixture
def cnn(tmp_path) -> str:
    (tmp_path / "models").mkdir()
    return modelzoo.tiny_cnn_torchscript(str(tmp_path / "models"))


def _request(model, output, **fields) -> OptimizeRequest:
    return OptimizeRequest(model=model, tensor_info=INFO, output=output, **fields)


@pytest.mark.parametrize("url,local", [("http://127.0.0.1:4200/api", True), ("http://localhost:4200/api", True),
                                       (REMOTE_SERVER, False), (None, True)])
def test_which_servers_read_this_disk(url, local):
    assert server_is_local(url) is local


def test_local_paths_to_a_remote_server_without_shared_storage_are_refused(cnn, tmp_path):
    with pytest.raises(SpecError, match="--output s3://bucket/results"):
        prepare_for_submit(_request(cnn, str(tmp_path / "out")), REMOTE_SERVER)
    with pytest.raises(SpecError, match="model repository"):
        prepare_for_submit(_request("cnn@v1", "s3://b/results", repo=str(tmp_path / "repo")), REMOTE_SERVER)
    with pytest.raises(SpecError, match="is a folder on this machine"):
        prepare_for_submit(_request("cnn@v1", str(tmp_path / "out"), repo="s3://b/repo"), REMOTE_SERVER)


def test_local_paths_stay_for_a_server_on_this_machine(cnn, tmp_path):
    request = _request(cnn, str(tmp_path / "out"), samples=str(tmp_path / "s.npz"))
    assert prepare_for_submit(request, "http://127.0.0.1:4200/api") == request


def test_a_model_file_and_its_external_data_are_uploaded_once(s3_repo_uri, tmp_path):
    (tmp_path / "onnx").mkdir()
    model = modelzoo.tiny_cnn_onnx(str(tmp_path / "onnx"), external_data=True)
    output = s3_repo_uri.replace("/repo", "/results")
    first = prepare_for_submit(_request(model, output), REMOTE_SERVER)
    assert first.model.startswith(f"{output}/.inputs/") and first.model.endswith("/" + os.path.basename(model))
    folder = Store(first.model.rsplit("/", 1)[0])
    assert set(folder.files(folder.root)) == set(os.listdir(tmp_path / "onnx"))  # the external data came too
    assert prepare_for_submit(_request(model, output), REMOTE_SERVER).model == first.model


def test_a_model_folder_keeps_its_name_and_samples_are_uploaded(s3_repo_uri, cnn, tmp_path):
    samples = tmp_path / "samples.npz"
    samples.write_bytes(b"not read here")
    output = s3_repo_uri.replace("/repo", "/results")
    request = prepare_for_submit(_request(str(tmp_path / "models"), output, samples=str(samples)), REMOTE_SERVER)
    assert request.model.endswith("/models") and request.samples.endswith("/samples.npz")
    home = Store(request.model)
    assert list(home.files(home.root)) == ["cnn.pt"]


def test_symbolic_links_are_never_uploaded(s3_repo_uri, cnn, tmp_path):
    os.symlink(cnn, tmp_path / "link.pt")
    output = s3_repo_uri.replace("/repo", "/results")
    with pytest.raises(SpecError, match="symbolic link"):
        prepare_for_submit(_request(str(tmp_path / "link.pt"), output), REMOTE_SERVER)
    os.symlink("/etc/hostname", tmp_path / "models" / "secret")
    with pytest.raises(SpecError, match="symbolic link"):
        prepare_for_submit(_request(str(tmp_path / "models"), output), REMOTE_SERVER)


def test_a_cpu_class_is_a_machine_type_with_its_own_deployment():
    from accelflow.flows.batch import deployment_name

    from accelflow import engines

    assert engines.check_device("CPU-Zen4") == "cpu-zen4"
    assert deployment_name("cpu-zen4") == "optimize/cpu-zen4"
    assert [e.NAME for e, _ in engines.candidates("lossless", "cpu-zen4")] == \
        [e.NAME for e, _ in engines.candidates("lossless", "cpu")]
    with pytest.raises(DeviceError, match="cpu-<class>"):
        engines.check_device("cpu-")


def test_a_calibration_folder_is_uploaded_and_a_worker_fetches_its_npz_files(s3_repo_uri, cnn, tmp_path):
    from accelflow.tasks.fetch import local_file

    folder = tmp_path / "calibration"
    folder.mkdir()
    for k in range(2):
        np.savez(folder / f"part{k}.npz", input_0=np.full((1, 3, 16, 16), k, dtype=np.float32))
    (folder / "README.txt").write_text("not calibration data")
    output = s3_repo_uri.replace("/repo", "/results")
    request = _request(str(tmp_path / "models"), output, calibration=str(folder), level="int8")
    request = prepare_for_submit(request, REMOTE_SERVER)
    assert request.calibration.startswith("s3://") and request.calibration.endswith("/calibration")
    fetched = local_file(request.calibration, str(tmp_path / "worker"), "--calibration", folders=True)
    assert sorted(os.listdir(fetched)) == ["part0.npz", "part1.npz"]
    assert float(np.load(os.path.join(fetched, "part1.npz"))["input_0"].max()) == 1.0
