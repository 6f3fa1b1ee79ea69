"""TensorFlow models through the whole optimize flow, on a real Prefect server and real engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow formats need the tf extra: pip install -e '.[tf]'")
pytest.importorskip("tf2onnx", reason="TensorFlow formats need the tf extra: pip install -e '.[tf]'")

from accelflow.core.errors import ModelMismatchError  # noqa: E402
from accelflow.flows.optimize import optimize  # noqa: E402
from accelflow.flows.request import OptimizeRequest  # noqa: E402

import accelflow  # noqa: E402
from tests import tf_models  # noqa: E402

FAST = {"draws": 1, "bench_seconds": 0.2}


def _run(**fields):
    request = OptimizeRequest(**{**FAST, **fields})
    return optimize.with_options(flow_run_name=fields.get("name") or "test")(request=request)


def _report(result) -> dict:
    return json.load(open(result["report_json"]))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return tf_models.keras_cnn_savedmodel(str(tmp_path_factory.mktemp("tf") / "cnn"))


def test_savedmodel_at_fp16_with_a_dynamic_batch(prefect_server, cnn, tmp_path):
    result = _run(model=cnn, tensor_info=["image:float(1*16*16*3,4*16*16*3)"], output=str(tmp_path))
    report = _report(result)
    assert report["format"] == "savedmodel" and report["accuracy"]["passed"]
    assert set(report["optimized"]) == {"min", "mid", "max"} and report["speedup"] > 0
    assert "tensorflow-cpu" in report["library_versions"] and "tf2onnx" in report["library_versions"]

    import tensorflow as tf

    model = accelflow.load(result["result_folder"])
    x = np.random.default_rng(1).standard_normal((3, 16, 16, 3)).astype(np.float32)
    got = model(image=x)
    want = tf.saved_model.load(cnn).signatures["serving_default"](image=tf.constant(x))
    assert set(got) == set(want)  # the signature's output keys, as a dict
    for key in want:
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=3e-2, atol=3e-2 * np.abs(want[key].numpy()).max())


def test_savedmodel_two_inputs_lossless_from_an_s3_repository(prefect_server, s3_repo_uri, tmp_path):
    from accelflow.storage.repository import ModelRepository

    folder = tf_models.keras_two_input_savedmodel(str(tmp_path / "two"))
    ModelRepository(s3_repo_uri).add("ranker", "v1", folder, source="uploaded", format="savedmodel")
    result = _run(model="ranker@v1", repo=s3_repo_uri, level="lossless", output=str(tmp_path / "out"),
                  tensor_info=["tokens:int32(2*6)", "features:float(2*4)"], int_ranges={"tokens": [0, 50]})
    report = _report(result)
    assert (report["model"], report["format"], report["level"]) == ("ranker", "savedmodel", "lossless")
    assert report["precision"] == "f32" and report["accuracy"]["passed"]
    assert report["accuracy"]["outputs"][0]["max_abs_diff"] < 1e-4


def test_frozen_graph_lossless_fixed_shape_with_named_outputs(prefect_server, tmp_path):
    (tmp_path / "models").mkdir()
    graph = tf_models.frozen_graph(str(tmp_path / "models" / "graph.pb"))
    result = _run(model=graph, level="lossless", output=str(tmp_path / "out"), outputs=["out_sum", "hidden"],
                  tensor_info=["x:float(2*8)", "y:float(2*3)"])
    report = _report(result)
    assert report["format"] == "frozen-graph" and report["accuracy"]["passed"]
    assert [o["output"] for o in report["accuracy"]["outputs"]] == ["out_sum", "hidden"]
    x, y = np.ones((2, 8), np.float32), np.ones((2, 3), np.float32)
    out_sum, hidden = accelflow.load(result["result_folder"])(x=x, y=y)
    np.testing.assert_allclose(out_sum, hidden + 1, rtol=1e-5)


def test_unknown_signature_fails_before_any_result(prefect_server, cnn, tmp_path):
    with pytest.raises(ModelMismatchError, match="no signature 'predict'.*serving_default"):
        _run(model=cnn, tensor_info=["image:float(1*16*16*3)"], output=str(tmp_path / "out"), signature="predict")
    assert not (tmp_path / "out").exists()


def test_outputs_option_on_a_savedmodel_is_refused_before_any_work(prefect_server, cnn, tmp_path):
    with pytest.raises(ModelMismatchError, match="--outputs applies to TensorFlow frozen graphs only"):
        _run(model=cnn, tensor_info=["image:float(1*16*16*3)"], output=str(tmp_path / "out"), outputs=["x"])
    assert not (tmp_path / "out").exists()


def test_cli_takes_comma_separated_outputs_and_refuses_a_signature_on_a_frozen_graph(prefect_server, tmp_path, capsys):
    from accelflow.flows.cli.main import EXIT_USER_ERROR, main

    (tmp_path / "models").mkdir()
    graph = tf_models.frozen_graph(str(tmp_path / "models" / "graph.pb"))
    common = [graph, "-t", "x:float(1*8)", "-t", "y:float(1*3)", "--draws", "1", "--bench-seconds", "0.2", "--json"]
    assert main(["optimize", *common, "--outputs", "out_prod, hidden", "--output", str(tmp_path / "a")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [o["output"] for o in _report(result)["accuracy"]["outputs"]] == ["out_prod", "hidden"]
    assert main(["optimize", *common, "--signature", "serving_default", "--output", str(tmp_path / "b")]) == EXIT_USER_ERROR
    assert "--signature applies to TensorFlow SavedModels only, and this model is frozen-graph" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
