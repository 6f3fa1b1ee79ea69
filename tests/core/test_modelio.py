"""core/modelio.py: a model's nested inputs and outputs mapped to the flat, named ONNX tensors."""

from __future__ import annotations

import numpy as np
import pytest
from accelflow.core.modelio import (
    ModelIO,
    describe_structure,
    flat_structure,
    flatten_value,
    onnx_name,
    rebuild,
    unique_onnx_names,
)


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray)


def test_round_trip_through_a_manifest_dict():
    io = ModelIO(["input_0", "input_1_mask"], ["logits"], flat_structure(1), {"signature": "serving_default"})
    data = io.to_dict()
    assert data == {"input_names": ["input_0", "input_1_mask"], "output_names": ["logits"],
                    "output_structure": {"kind": "list", "items": [{"kind": "tensor", "index": 0}]},
                    "source": {"signature": "serving_default"}}
    assert ModelIO.from_dict(data) == io
    # a manifest written before structure and source existed still loads
    assert ModelIO.from_dict({"input_names": ["x"], "output_names": ["y"]}) == ModelIO(["x"], ["y"])


@pytest.mark.parametrize("element, name", [
    ("input_0", "input_0"), ("input_0[image]", "input_0_image"), ("input_0[0][boxes]", "input_0_0_boxes"),
    ("x.y-z", "x_y_z"), ("[0]", "0"), ("：", "input"), ("", "input"),
])
def test_onnx_names_are_plain_identifiers(element, name):
    assert onnx_name(element) == name


def test_colliding_names_get_a_counter():
    assert unique_onnx_names(["a[b]", "a.b", "a_b", "c"]) == ["a_b", "a_b_2", "a_b_3", "c"]


def test_nested_outputs_flatten_and_rebuild_in_the_same_order():
    a, b, c, d = (np.full(2, i, np.float32) for i in range(4))
    value = (a, {"scores": b, "boxes": [c, d]})
    structure = describe_structure(value, _is_array)
    assert structure == {"kind": "tuple", "items": [
        {"kind": "tensor", "index": 0},
        {"kind": "dict", "items": {"scores": {"kind": "tensor", "index": 1},
                                   "boxes": {"kind": "list", "items": [{"kind": "tensor", "index": 2},
                                                                       {"kind": "tensor", "index": 3}]}}}]}
    leaves = flatten_value(value, _is_array)
    assert [int(x[0]) for x in leaves] == [0, 1, 2, 3]
    rebuilt = rebuild(structure, leaves)
    assert isinstance(rebuilt, tuple) and isinstance(rebuilt[1]["boxes"], list)
    assert rebuilt[1]["scores"] is b and rebuilt[1]["boxes"][1] is d


def test_dict_keys_become_strings_and_a_single_tensor_is_a_leaf():
    assert describe_structure({0: np.zeros(1)}, _is_array) == {"kind": "dict",
                                                               "items": {"0": {"kind": "tensor", "index": 0}}}
    x = np.ones(3)
    assert rebuild(describe_structure(x, _is_array), [x]) is x


def test_an_output_that_is_no_tensor_is_refused():
    with pytest.raises(TypeError, match="unsupported output of type str"):
        describe_structure((np.zeros(1), "label"), _is_array)
