"""`accelflow optimize --submit` checks what it can before it creates a flow run.

The server is a real Prefect server holding the optimize deployments (no runner: a submitted run
stays Scheduled, which is all these tests look at), so a refused request is seen to create nothing.
"""

from __future__ import annotations

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import modelzoo


@pytest.fixture(scope="module")
def deployed(prefect_server):
    from accelflow.flows.service.serve import deployments

    for deployment in deployments():
        deployment.apply()


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def _flow_runs() -> list:
    from accelflow.flows.runs import client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with client() as c:
        return c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["optimize", "optimize-batch"])))


def _refused(args, capsys) -> str:
    before = len(_flow_runs())
    code = main(["optimize", *args, "--submit"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(_flow_runs()) == before  # nothing created on the server
    return err


def test_a_wrong_tensor_name_for_a_local_onnx_model_is_refused_before_submitting(deployed, models, tmp_path, capsys):
    path = modelzoo.tiny_cnn_onnx(str(models))
    err = _refused([path, "-t", "input:float(1*3*16*16)", "--output", str(tmp_path / "out")], capsys)
    assert "tensor information names input but the ONNX model's inputs are image" in err


def test_an_output_inside_the_model_folder_is_refused_before_submitting(deployed, models, capsys):
    path = modelzoo.tiny_cnn_onnx(str(models))
    err = _refused([path, "-t", "image:float(1*3*16*16)", "--output", str(models / "results")], capsys)
    assert "overlaps the model's home directory" in err


def test_a_wrong_dtype_for_a_local_onnx_model_is_refused_before_submitting(deployed, models, tmp_path, capsys):
    path = modelzoo.tiny_cnn_onnx(str(models))
    err = _refused([path, "-t", "image:int32(1*3*16*16)", "--output", str(tmp_path / "out")], capsys)
    assert "image: the model takes float32, tensor information says int32" in err


def test_a_wrong_tensor_name_for_a_local_torchscript_model_is_refused_before_submitting(deployed, models, tmp_path,
                                                                                       capsys):
    path = modelzoo.two_inputs_torchscript(str(models))  # forward(self, input_ids, attention_mask)
    err = _refused([path, "-t", "ids:int64(1*8)", "-t", "attention_mask:int64(1*8)",
                    "--output", str(tmp_path / "out")], capsys)
    assert "tensor information names ids, but forward() takes input_ids, attention_mask" in err


def test_a_wrong_tensor_name_for_a_local_repository_entry_is_refused_before_submitting(deployed, models, tmp_path,
                                                                                      capsys):
    path = modelzoo.tiny_cnn_torchscript(str(models))  # forward(self, x)
    repo = str(tmp_path / "repo")
    assert main(["repo", "add", "cnn", "v1", path, "--source", "uploaded", "--repo", repo]) == 0
    err = _refused(["cnn@v1", "--repo", repo, "-t", "image:float(1*3*16*16)", "--output", str(tmp_path / "out")],
                   capsys)
    assert "tensor information names image, but forward() takes x" in err


def test_a_missing_model_is_refused_before_submitting(deployed, tmp_path, capsys):
    missing = str(tmp_path / "nowhere.onnx")
    err = _refused([missing, "-t", "image:float(1*3*16*16)", "--output", str(tmp_path / "out")], capsys)
    assert f"model not found: {missing}" in err


def test_a_request_that_passes_the_checks_is_submitted(deployed, models, tmp_path, capsys):
    onnx = modelzoo.tiny_cnn_onnx(str(models))
    script = modelzoo.two_inputs_torchscript(str(models))
    before = {r.id for r in _flow_runs()}
    assert main(["optimize", onnx, "-t", "image:float(1*3*16*16)", "--output", str(tmp_path / "out"),
                 "--name", "checked-onnx", "--submit"]) == 0, capsys.readouterr().err
    assert main(["optimize", script, "-t", "input_ids:int64(1*8)", "-t", "attention_mask:int64(1*8)",
                 "--output", str(tmp_path / "out"), "--name", "checked-torchscript", "--submit"]) == 0
    created = [r for r in _flow_runs() if r.id not in before]
    assert sorted(r.name for r in created) == ["checked-onnx", "checked-torchscript"]
