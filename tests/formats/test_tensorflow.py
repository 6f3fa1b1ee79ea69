"""TensorFlow SavedModel and frozen graph formats: detection, checks, conversion, baselines."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow formats need the tf extra: pip install -e '.[tf]'")
pytest.importorskip("tf2onnx", reason="TensorFlow formats need the tf extra: pip install -e '.[tf]'")

from accelflow.core import tensor_info
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError  # noqa: E402
from accelflow.core.modelio import ModelIO  # noqa: E402
from accelflow.core.runner import run_arrays  # noqa: E402
from accelflow.formats import tf_frozen_graph, tf_savedmodel  # noqa: E402
from accelflow.formats.onnx_model import OrtRunner  # noqa: E402
from accelflow.tasks.context import ModelContext
from accelflow.tasks.convert import convert_to_onnx  # noqa: E402

from accelflow import formats  # noqa: E402
from tests import tf_models  # noqa: E402


def convert(model_file: str, format_name: str, lines: list[str], work_dir: str, **options):
    """The conversion step on a context made from these arguments, as the flow makes it."""
    ctx = ModelContext(model_file, format_name, tensor_info.parse(lines), work_dir, threads=1)
    return convert_to_onnx(ctx, **options)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf")
    return {
        "cnn": tf_models.keras_cnn_savedmodel(str(root / "cnn")),
        "two": tf_models.keras_two_input_savedmodel(str(root / "two")),
        "frozen": tf_models.frozen_graph(str(root / "graph.pb")),
    }


def _spec(*lines):
    return tensor_info.parse(list(lines))


# ---------------------------------------------------------------- detection


def test_savedmodel_folder_and_its_pb_file_are_detected_by_content(models):
    folder = models["cnn"]
    assert formats.detect_format(folder) is tf_savedmodel
    assert formats.detect_format(os.path.join(folder, "saved_model.pb")) is tf_savedmodel
    assert formats.find_model_file(folder) == folder


def test_frozen_graph_is_detected_by_content_whatever_its_name(models, tmp_path):
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(open(models["frozen"], "rb").read())
    assert formats.detect_format(str(renamed)) is tf_frozen_graph


def test_a_folder_holding_a_savedmodel_finds_the_savedmodel_once(models, tmp_path):
    import shutil

    shutil.copytree(models["cnn"], tmp_path / "files" / "sm")
    assert formats.find_model_file(str(tmp_path / "files")) == str(tmp_path / "files" / "sm")
    shutil.copy(models["frozen"], tmp_path / "files" / "graph.pb")
    with pytest.raises(UnsupportedFormatError, match="several model files.*graph.pb.*sm"):
        formats.find_model_file(str(tmp_path / "files"))
    assert formats.find_model_file(str(tmp_path / "files"), "sm") == str(tmp_path / "files" / "sm")


def test_onnx_is_still_onnx_and_random_bytes_are_nothing(tmp_path):
    from tests import modelzoo

    onnx_path = modelzoo.tiny_cnn_onnx(str(tmp_path))
    assert formats.detect_format(onnx_path).NAME == "onnx"
    junk = tmp_path / "junk.pb"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnsupportedFormatError, match="not a supported model"):
        formats.detect_format(str(junk))


def test_truncated_models_fail_with_a_clear_error(models, tmp_path):
    import shutil

    folder = tmp_path / "cut"
    shutil.copytree(models["cnn"], folder)
    pb = folder / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200])
    with pytest.raises(UnsupportedFormatError, match="SavedModel but failed to load"):
        tf_savedmodel.load(str(folder))
    whole = open(models["frozen"], "rb").read()
    cut = tmp_path / "cut.pb"
    for size in (301, len(whole) // 2, 40):
        cut.write_bytes(whole[:size])
        with pytest.raises(UnsupportedFormatError, match="not a valid GraphDef|incomplete frozen graph"):
            tf_frozen_graph.load(str(cut))


def test_without_tensorflow_the_error_names_the_extra(models):
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from accelflow import formats\n"
        f"fmt = formats.detect_format({models['cnn']!r})\n"
        "try:\n    fmt.load(" + repr(models["cnn"]) + ")\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingDependencyError") and "bash scripts/install.sh tf" in out


# ---------------------------------------------------------------- SavedModel


def test_unknown_signature_lists_the_signatures(models):
    loaded = tf_savedmodel.load(models["cnn"])
    with pytest.raises(ModelMismatchError, match="no signature 'predict'.*serving_default"):
        tf_savedmodel.find_signature(loaded, "predict")


@pytest.mark.parametrize("line, message", [
    ("image:int32(1*16*16*3)", "image is float32, tensor information says int32"),
    ("image:float(1*16*16)", "rank 4 .*tensor information has rank 3"),
    ("image:float(1*8*8*3)", "dimension 1 .* fixed at 16"),
    ("pixels:float(1*16*16*3)", "names pixels but signature 'serving_default''s inputs are image"),
    ("image[0]:float(1*16*16*3)", "takes flat tensors"),
])
def test_tensor_information_is_checked_against_the_signature(models, line, message):
    fn = tf_savedmodel.find_signature(tf_savedmodel.load(models["cnn"]), None)
    with pytest.raises(ModelMismatchError, match=message):
        tf_savedmodel.check_inputs(fn, _spec(line), "serving_default")


def test_every_signature_input_needs_a_line(models):
    fn = tf_savedmodel.find_signature(tf_savedmodel.load(models["two"]), None)
    with pytest.raises(ModelMismatchError, match="no line for .*tokens"):
        tf_savedmodel.check_inputs(fn, _spec("features:float(2*4)"), "serving_default")


def _check_conversion(model, fmt_name, lines, tmp_path, options=None, int_high=50):
    converted = convert(model, fmt_name, lines, str(tmp_path), options=options)
    spec = _spec(*lines)
    io = ModelIO.from_dict(converted.io)
    fmt = formats.format_named(fmt_name)
    baseline = fmt.baseline_runner(model, spec, io, 1)
    engine = OrtRunner(converted.onnx_path, io, 1)
    for point in spec.shape_points():
        args, kwargs = spec.example_inputs(point, np.random.default_rng(0), int_ranges={"*": (0, int_high)})
        arrays = spec.flatten(args, kwargs)
        for want, got in zip(run_arrays(baseline, arrays), run_arrays(engine, arrays)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return converted, io


def test_savedmodel_converts_and_matches_tensorflow_at_every_shape(models, tmp_path):
    converted, io = _check_conversion(models["cnn"], "savedmodel", ["image:float(1*16*16*3,3*16*16*3)"], tmp_path)
    assert io.input_names == ["image"] and io.source == {"signature": "serving_default"}
    assert io.output_structure["kind"] == "dict" and list(io.output_structure["items"]) == io.output_names

    import onnx

    dims = onnx.load(converted.onnx_path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [16, 16, 3]


def test_two_named_inputs_of_two_dtypes(models, tmp_path):
    lines = ["tokens:int32(2*6)", "features:float(2*4)"]
    _, io = _check_conversion(models["two"], "savedmodel", lines, tmp_path)
    assert io.input_names == ["tokens", "features"]


def test_signature_option_is_refused_for_other_formats(tmp_path):
    from tests import modelzoo

    path = modelzoo.tiny_cnn_torchscript(str(tmp_path))
    with pytest.raises(ModelMismatchError, match="--signature applies to TensorFlow SavedModels only"):
        convert(path, "torchscript", ["input_0:float(1*3*16*16)"], str(tmp_path), options={"signature": "x"})


# ---------------------------------------------------------------- frozen graph


def test_frozen_graph_outputs_default_to_its_sinks(models, tmp_path):
    graph_def = tf_frozen_graph.load(models["frozen"])
    assert set(tf_frozen_graph.placeholders(graph_def)) == {"x", "y"}
    sinks = tf_frozen_graph.sinks(graph_def)
    assert len(sinks) == 2 and "hidden" not in sinks
    _, io = _check_conversion(models["frozen"], "frozen-graph", ["x:float(1*8,4*8)", "y:float(1*3,4*3)"], tmp_path)
    assert io.output_names == sinks


def test_frozen_graph_named_outputs_and_positional_inputs(models, tmp_path):
    lines = ["input_0:float(2*8)", "input_1:float(2*3)"]
    _, io = _check_conversion(models["frozen"], "frozen-graph", lines, tmp_path, {"outputs": ["hidden", "out_sum:0"]})
    assert io.input_names == ["x", "y"] and io.output_names == ["hidden", "out_sum"]


def test_unknown_output_lists_the_candidates(models, tmp_path):
    with pytest.raises(ModelMismatchError, match="--outputs logits: no such node.*candidates.*Identity"):
        convert(models["frozen"], "frozen-graph", ["x:float(1*8)", "y:float(1*3)"], str(tmp_path),
                        options={"outputs": ["logits"]})


def test_frozen_graph_placeholders_are_checked(models):
    graph_def = tf_frozen_graph.load(models["frozen"])
    with pytest.raises(ModelMismatchError, match="dimension 1 of the model's placeholder x is fixed at 8"):
        tf_frozen_graph.check_inputs(graph_def, _spec("x:float(1*9)", "y:float(1*3)"))
