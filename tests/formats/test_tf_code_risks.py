"""TensorFlow code risks (issue 17): the operations of a SavedModel or frozen graph that reach
outside the model, found in the parsed protobuf before anything loads or runs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest

pytest.importorskip("tensorflow", reason="TensorFlow formats need the tf extra: pip install -e '.[tf]'")

from accelflow.core.errors import UnsupportedFormatError, UntrustedModelError
from accelflow.formats import check_model_code, tf_frozen_graph, tf_savedmodel
from accelflow.formats import tensorflow_common as tfc

from tests import tf_models

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """Ordinary models: Keras exports, a frozen graph, a TF1 SavedModel with its saver's nodes."""
    root = tmp_path_factory.mktemp("stock")
    return {
        "cnn": tf_models.keras_cnn_savedmodel(str(root / "cnn")),
        "two": tf_models.keras_two_input_savedmodel(str(root / "two")),
        "tf1": tf_models.tf1_savedmodel(str(root / "tf1")),
        "frozen": tf_models.frozen_graph(str(root / "graph.pb")),
    }


def _copy(folder: str, tmp_path) -> str:
    return shutil.copytree(folder, str(tmp_path / os.path.basename(folder)))


def _functions(meta, pattern: str) -> list:
    return [f for f in meta.graph_def.library.function if re.fullmatch(pattern, f.signature.name)]


# ---------------------------------------------------------------- ordinary models need no flag


@pytest.mark.parametrize("name", ["cnn", "two", "tf1"])
def test_stock_savedmodels_have_no_risks(stock, name):
    assert tf_savedmodel.code_risks(stock[name]) == []
    assert tf_savedmodel.code_risks(os.path.join(stock[name], "saved_model.pb")) == []
    assert check_model_code(tf_savedmodel, stock[name], trusted=False) == []


def test_stock_frozen_graph_has_no_risks(stock):
    assert tf_frozen_graph.code_risks(stock["frozen"]) == []


def test_the_examples_tensorflow_models_have_no_risks(tmp_path):
    """examples/make_tf_models.py's MobileNetV2, both ways (at 32x32: the graph is the same)."""
    spec = importlib.util.spec_from_file_location("make_tf_models", os.path.join(EXAMPLES, "make_tf_models.py"))
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    model = make.mobilenet(32)
    folder = make.save_savedmodel(model, str(tmp_path / "mobilenet_savedmodel"))
    graph = make.save_frozen_graph(model, str(tmp_path / "mobilenet_frozen.pb"))
    assert tf_savedmodel.code_risks(folder) == []
    assert tf_frozen_graph.code_risks(graph) == []


# ---------------------------------------------------------------- what is found, and where


def test_a_serving_function_that_writes_a_file_is_found_unrun(tmp_path):
    marker = tmp_path / "pwned"
    folder = tf_models.writing_savedmodel(str(tmp_path / "writer"), str(marker))
    risks = tf_savedmodel.code_risks(folder)
    assert len(risks) == 1 and re.fullmatch(r"WriteFile op in function __inference_serve_\d+", risks[0]), risks
    with pytest.raises(UntrustedModelError, match=r"WriteFile op in function .*--trust-model-code"):
        check_model_code(tf_savedmodel, folder, trusted=False)
    assert check_model_code(tf_savedmodel, folder, trusted=True) == risks
    assert not marker.exists()


def test_a_serving_function_that_reads_a_file_is_found(tmp_path):
    folder = tf_models.reading_savedmodel(str(tmp_path / "reader"), "/etc/hostname")
    assert [r.split(" op ")[0] for r in tf_savedmodel.code_risks(folder)] == ["ReadFile"]


def test_a_frozen_graph_node_that_reads_a_file_is_found(tmp_path):
    graph = tf_models.reading_frozen_graph(str(tmp_path / "graph.pb"), "/etc/hostname")
    assert tf_frozen_graph.code_risks(graph) == ["ReadFile op at node read_secret"]
    with pytest.raises(UntrustedModelError, match="ReadFile op at node read_secret"):
        check_model_code(tf_frozen_graph, graph, trusted=False)


def test_a_frozen_graph_has_no_saver_so_its_checkpoint_ops_count(stock, tmp_path):
    graph_def = tf_frozen_graph.load(stock["frozen"])
    graph_def.node.add(name="restore", op="RestoreV2")
    path = tmp_path / "graph.pb"
    path.write_bytes(graph_def.SerializeToString())
    assert tf_frozen_graph.code_risks(str(path)) == ["RestoreV2 op at node restore"]


# ---------------------------------------------------------------- the saver's exemption


def test_a_function_named_like_the_savers_called_from_serving_is_found(tmp_path):
    """Its own `__inference__traced_save_N`, writing a checkpoint; the real saver stays allowed."""
    folder = tf_models.disguised_saver_savedmodel(str(tmp_path / "disguised"), str(tmp_path / "ckpt"))
    risks = tf_savedmodel.code_risks(folder)
    assert len(risks) == 1 and re.fullmatch(r"SaveV2 op in function __inference__traced_save_\d+", risks[0]), risks
    assert not (tmp_path / "ckpt.index").exists()  # saving traced it; nothing ran it


def _call_node(fn, name: str, how: str, callee: str):
    """A node of function `fn` calling `callee` the way `how` says."""
    node = fn.node_def.add(name=name, op="StatefulPartitionedCall")
    if how == "op":  # TF1-style: the op is the function's name
        node.op = callee
    elif how == "f":
        node.attr["f"].func.name = callee
    elif how == "while_body":
        node.op = "While"
        node.attr["body"].func.name = callee
    elif how == "case_branches":
        node.op = "Case"
        node.attr["branches"].list.func.add(name=callee)
    elif how == "nested":  # a func attr inside another func's attrs
        node.attr["f"].func.name = "__unknown_wrapper"
        node.attr["f"].func.attr["inner"].func.name = callee
    return node


@pytest.mark.parametrize("how", ["op", "f", "while_body", "case_branches", "nested"])
def test_the_real_saver_function_called_from_serving_is_found(stock, tmp_path, how):
    def edit(meta):
        (saver_fn,) = _functions(meta, r"__inference__traced_save_\d+")
        for wrapper in _functions(meta, r"__inference_signature_wrapper_.*"):
            _call_node(wrapper, "sneaky", how, saver_fn.signature.name)

    folder = tf_models.edit_saved_model(_copy(stock["cnn"], tmp_path), edit)
    risks = tf_savedmodel.code_risks(folder)
    assert {r.split(" op ")[0] for r in risks} == {"SaveV2", "MergeV2Checkpoints"}, risks
    assert all(re.search(r"in function __inference__traced_save_\d+$", r) for r in risks), risks


def test_the_saver_function_exposed_in_the_object_graph_is_found(stock, tmp_path):
    """TF2's loader restores the object graph's functions by name: one may be the saver's."""
    def edit(meta):
        (restore_fn,) = _functions(meta, r"__inference__traced_restore_\d+")
        meta.object_graph_def.concrete_functions[restore_fn.signature.name].SetInParent()

    folder = tf_models.edit_saved_model(_copy(stock["cnn"], tmp_path), edit)
    assert [r.split(" op ")[0] for r in tf_savedmodel.code_risks(folder)] == ["RestoreV2"]


def test_a_tf1_signature_that_fetches_the_savers_nodes_is_found(stock, tmp_path):
    def edit(meta):
        meta.signature_def["serving_default"].outputs["saved"].name = meta.saver_def.save_tensor_name

    folder = tf_models.edit_saved_model(_copy(stock["tf1"], tmp_path), edit)
    assert sorted(tf_savedmodel.code_risks(folder)) == ["MergeV2Checkpoints op at node save/MergeV2Checkpoints",
                                                        "SaveV2 op at node save/SaveV2"]


def test_a_tf1_saver_node_that_serving_reads_is_found(stock, tmp_path):
    """save/RestoreV2 feeding the model's output: restore runs at serving, from any path."""
    def edit(meta):
        node = next(n for n in meta.graph_def.node if n.name == "y")
        node.input.append("^save/RestoreV2")

    folder = tf_models.edit_saved_model(_copy(stock["tf1"], tmp_path), edit)
    assert tf_savedmodel.code_risks(folder) == ["RestoreV2 op at node save/RestoreV2"]


# ---------------------------------------------------------------- the denylist itself


def test_a_damaged_savedmodel_is_a_clear_error(stock, tmp_path):
    folder = _copy(stock["cnn"], tmp_path)
    pb = tmp_path / os.path.basename(folder) / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    with pytest.raises(UnsupportedFormatError, match="not a valid one.*upload it again"):
        tf_savedmodel.code_risks(folder)


def _registered_ops():
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    ops = op_def_pb2.OpList()
    ops.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    return {op.name: op for op in ops.op}


def test_every_denied_op_is_a_real_op():
    """A misspelt name would deny nothing."""
    ops = _registered_ops()
    assert sorted(n for n in tfc.DENIED_OPS | tfc.SAVER_OPS if n not in ops) == []


# Registered ops with an argument named like a file or an address that were reviewed and found
# harmless: a name prefix for statistics, a flag marking file-name tensors, a count (top_paths).
_REVIEWED = {"SetStatsAggregatorDataset", "ExperimentalSetStatsAggregatorDataset", "TensorSliceDataset",
             "CTCBeamSearchDecoder"}


def test_every_op_with_a_file_or_address_argument_is_denied_or_reviewed():
    """A TensorFlow upgrade that adds such an op fails here until it is denied or reviewed."""
    named = re.compile(r"file|path|prefix|dump|logdir|db_uri|url|descriptor|address|directory", re.IGNORECASE)
    found = {name for name, op in _registered_ops().items()
             if any(named.search(a.name) for a in (*op.input_arg, *op.attr))}
    assert sorted(found - tfc.DENIED_OPS - tfc.SAVER_OPS - _REVIEWED) == []
