"""Tests of formats/tensor_info.py: the tensor information grammar (SPEC section 3)."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from accelflow.core.errors import SpecError
from accelflow.core.tensor_info import (
    DTYPE_ALIASES,
    ShapePoint,
    ShapeSpec,
    TensorInfo,
    TensorSpec,
    default_int_range,
    load_lines,
    numpy_dtype,
    parse,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SPEC_1 = ["input_0:float(1*3*1024*1024)"]
SPEC_2 = ["input_0:int32(1*4,1*384)", "input_1:int32(1*4,1*384)", "input_2:int32(1*4,1*384)"]
SPEC_3 = ["input_ids:int32(1*128,8*128)", "input_mask:int32(1*128,8*128)",
          "segment_ids:int32(1*128,8*128)"]
EMPTY_MESSAGE = ("no tensor information given: add one line per input tensor, "
                 "e.g. input_0:float(1*3*224*224)")


def problems_of(text) -> list:
    with pytest.raises(SpecError) as caught:
        parse(text)
    return caught.value.problems


def one_problem(text):
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- the SPEC's examples


def test_spec_example_single_tensor():
    info = parse(SPEC_1[0])
    assert info.root == "args"
    (leaf,) = info.leaves
    assert (leaf.name, leaf.path, leaf.dtype) == ("input_0", (("arg", 0),), "float32")
    assert leaf.shape == ShapeSpec("fixed", ((1, 3, 1024, 1024),))
    assert info.shape_points() == [ShapePoint("fixed", {"input_0": (1, 3, 1024, 1024)})]


def test_spec_example_list_of_three_dynamic():
    info = parse(SPEC_2)
    assert info.root == "args"
    assert info.names == ("input_0", "input_1", "input_2")
    assert [leaf.path for leaf in info.leaves] == [(("arg", i),) for i in range(3)]
    for leaf in info.leaves:
        assert leaf.dtype == "int32"
        assert leaf.shape.kind == "range"
        assert (leaf.shape.min, leaf.shape.max) == ((1, 4), (1, 384))
        assert leaf.shape.dynamic_axes == (1,)
    assert info.lines() == SPEC_2


def test_spec_example_dict_of_three():
    info = parse("\n".join(SPEC_3))
    assert info.root == "kwargs"
    assert info.names == ("input_ids", "input_mask", "segment_ids")
    assert info.leaves[1].path == (("kwarg", "input_mask"),)
    assert info.leaves[0].shape.dynamic_axes == (0,)
    assert list(info.to_json()["items"]) == ["input_ids", "input_mask", "segment_ids"]


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("alias,canonical", [
    ("float", "float32"), ("float32", "float32"), ("FLOAT", "float32"),
    ("float16", "float16"), ("half", "float16"), ("Half", "float16"),
    ("bfloat16", "bfloat16"), ("BFloat16", "bfloat16"),
    ("double", "float64"), ("float64", "float64"),
    ("int8", "int8"), ("uint8", "uint8"), ("int16", "int16"), ("int32", "int32"),
    ("int64", "int64"), ("long", "int64"), ("LONG", "int64"),
    ("bool", "bool"), ("array.char", "char"), ("Array.Char", "char"), ("char", "char"),
])
def test_dtype_alias(alias, canonical):
    info = parse(f"input_0: {alias} (2*3)")
    assert info.leaves[0].dtype == canonical
    assert info.text() == f"input_0:{canonical}(2*3)"


@pytest.mark.parametrize("canonical,expected", [
    ("float32", np.float32), ("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16),
    ("float64", np.float64), ("int8", np.int8), ("uint8", np.uint8), ("int16", np.int16),
    ("int32", np.int32), ("int64", np.int64), ("bool", np.bool_), ("char", np.uint8),
])
def test_numpy_dtype(canonical, expected):
    assert numpy_dtype(canonical) == np.dtype(expected)


def test_numpy_dtype_unknown_is_spec_error():
    with pytest.raises(SpecError, match="unknown dtype 'complex64'"):
        numpy_dtype("complex64")


# ---------------------------------------------------------------- nesting and order


def test_list_of_dicts():
    info = parse(["input_0[0][image]:float(1*3*320*320,1*3*800*1333)",
                  "input_0[0][boxes]:float(1*4)", "input_0[1][image]:float(1*3*320*320)"])
    assert info.leaves[0].path == (("arg", 0), ("list", 0), ("dict", "image"))
    assert info.leaves[0].text() == "input_0[0][image]:float32(1*3*320*320,1*3*800*1333)"
    assert info.names == ("input_0[0][image]", "input_0[0][boxes]", "input_0[1][image]")


def test_tuple_and_dict_in_tuple_in_list():
    info = parse(["input_0[0](1)[k]:float(2)", "input_0[0](0):int64(1)", "input_1(0):bool(3)",
                  "input_1(1):bool(3)"])
    assert info.names == ("input_0[0](0)", "input_0[0](1)[k]", "input_1(0)", "input_1(1)")
    assert info.leaves[1].path == (("arg", 0), ("list", 0), ("tuple", 1), ("dict", "k"))
    args, kwargs = info.example_inputs(info.shape_points()[0], rng())
    assert kwargs == {}
    assert isinstance(args, list) and isinstance(args[0], list)
    assert isinstance(args[0][0], tuple) and isinstance(args[0][0][1], dict)
    assert isinstance(args[1], tuple) and len(args[1]) == 2


def test_deep_nesting():
    name = "input_0" + "[0](0)[deep]" * 4
    info = parse(f"{name}:float(1)")
    assert info.names == (name,)
    assert len(info.leaves[0].path) == 13
    assert parse(info.text()) == info


def test_canonical_order_numeric_indices_and_first_appearance_keys():
    lines = [f"input_0[{i}][b]:float(1)" for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]
    lines += [f"input_0[{i}][a]:float(1)" for i in range(11)]
    info = parse(lines)
    assert info.names[:4] == ("input_0[0][b]", "input_0[0][a]", "input_0[1][b]",
                              "input_0[1][a]")
    assert info.names[-2:] == ("input_0[10][b]", "input_0[10][a]")
    kwargs_info = parse(["zeta:float(1)", "alpha:float(1)", "mid[y]:float(1)", "mid[x]:float(1)"])
    assert kwargs_info.names == ("zeta", "alpha", "mid[y]", "mid[x]")
    assert parse(list(reversed(SPEC_2))).lines() == SPEC_2


def test_keys_with_punctuation_and_unicode():
    info = parse(["图像[a b]:float(1)", "图像[x:y, z*]:int8(2)", "图像['q']:bool(1)"])
    assert [leaf.path[-1] for leaf in info.leaves] == [("dict", "a b"), ("dict", "x:y, z*"),
                                                       ("dict", "q")]
    assert info.leaves[0].path[0] == ("kwarg", "图像")
    assert parse(info.text()) == info


# ---------------------------------------------------------------- text, round trip, json


def test_round_trip_text_and_lines():
    lines = ["input_0[0][image]:float32(1*3*320*320,1*3*800*1333)",
             "input_0[0][sizes](0):int64([1*2,4*2,8*2])", "input_0[0][sizes](1):char(1*16)",
             "input_1:bfloat16(1*3)"]
    info = parse(lines)
    assert info.lines() == lines
    assert info.text() == "\n".join(lines)
    assert parse(info.text()) == info
    assert parse(info.lines()) == info


def test_text_is_canonical():
    info = parse(" input_0 [ 0 ] : FLOAT ( 1 * 3 , 2 * 3 ) \ninput_0[1]:half([ 1*2 , 3*2 ])")
    assert info.lines() == ["input_0[0]:float32(1*3,2*3)", "input_0[1]:float16([1*2,3*2])"]


def test_to_json_structure():
    info = parse(["input_0[0][image]:float(1*3)", "input_0[0][boxes](0):int64([1*4,2*4])"])
    assert info.to_json() == {"root": "args", "items": [
        {"kind": "list", "items": [
            {"kind": "dict", "items": {
                "image": {"kind": "tensor", "name": "input_0[0][image]", "dtype": "float32",
                          "shape": {"kind": "fixed", "sizes": [[1, 3]]}},
                "boxes": {"kind": "tuple", "items": [
                    {"kind": "tensor", "name": "input_0[0][boxes](0)", "dtype": "int64",
                     "shape": {"kind": "choices", "sizes": [[1, 4], [2, 4]]}}]}}}]}]}


def test_to_json_kwargs_root():
    json = parse(SPEC_3[:2]).to_json()
    assert json["root"] == "kwargs"
    assert json["items"]["input_mask"]["shape"] == {"kind": "range", "sizes": [[1, 128], [8, 128]]}


def test_shape_spec_properties():
    choices = ShapeSpec("choices", ([1, 8], [4, 2]))
    assert choices.sizes == ((1, 8), (4, 2))  # lists become tuples: comparable and hashable
    assert (choices.rank, choices.min, choices.max) == (2, (1, 2), (4, 8))
    assert choices.dynamic_axes == (0, 1)
    assert choices.text() == "[1*8,4*2]"
    ranged = ShapeSpec("range", ((1, 4), (1, 384)))
    assert (ranged.text(), ranged.mid, ranged.max_elements) == ("1*4,1*384", (1, 194), 384)
    fixed = ShapeSpec("fixed", ((3, 1024, 1024),))
    assert (fixed.text(), fixed.dynamic_axes, fixed.rank) == ("3*1024*1024", (), 3)
    assert hash(fixed) == hash(ShapeSpec("fixed", [[3, 1024, 1024]]))


# ---------------------------------------------------------------- errors, one by one


def test_error_rendering_matches_the_documented_example():
    with pytest.raises(SpecError) as caught:
        parse(["input_0:int32(1*4,1*384)", "input_1:int32(1*4,1*384*2)"])
    assert str(caught.value) == (
        "tensor information line 2, column 19: min and max have different ranks (2 and 3)\n"
        "  input_1:int32(1*4,1*384*2)\n"
        "                    ^")
    (problem,) = caught.value.problems
    assert (problem.line_no, problem.column, problem.line) == (2, 19, "input_1:int32(1*4,1*384*2)")


@pytest.mark.parametrize("line,column,message", [
    ("input_0 float(1*3)", 8, "missing ':'"),
    ("input_0:float 1*3", 15, "missing '('"),
    ("input_0:float[1*3,2*3]", 14, "missing '('"),
    ("input_0:float(1*3", 18, "missing ')'"),
    ("input_0:float(1*x)", 17, "dimension 'x' is not a positive integer"),
    ("input_0:float(-1*3)", 15, "dimension '-1' is not a positive integer"),
    ("input_0:float(1.5)", 15, "dimension '1.5' is not a positive integer"),
    ("input_0:float(1*0)", 17, "dimension 0 is not a positive integer"),
    ("input_0:float(1**3)", 17, "missing dimension"),
    ("input_0:float(1*3,)", 19, "missing size"),
    ("input_0:float()", 15, "empty shape: a scalar"),
    ("input_0:float(  )", 17, "empty shape"),
    ("input_0:float([])", 15, "empty list of sizes"),
    ("input_0:float([1*3,2*3)", 23, "missing ']'"),
    ("input_0:float(1,2,3)", 19, "two sizes, min,max"),
    ("input_0:(1)", 9, "missing dtype"),
    (":float(1)", 1, "missing element name"),
    ("[0]:float(1)", 1, "starts with input_<n>"),
    ("input_0[image:float(1)", 8, "'[' is not closed by ']'"),
    ("input_0(abc):float(1)", 9, "tuple items are numbered"),
    ("input_0[]:float(1)", 8, "empty []"),
    ("input_0]x:float(1)", 8, "unexpected ']'"),
    ("input_0[0]x:float(1)", 11, "unexpected 'x'"),
    ("input_01:float(1)", 7, "leading zero; write 1"),
    ("input_0[007]:float(1)", 9, "leading zero; write 7"),
    ("input_0[1234567890]:float(1)", 9, "too large"),
    ("input_0:float(2147483648)", 15, "larger than 2**31-1"),
    ("input_0:float(1*99999999999999999999)", 17, "larger than 2**31-1"),
    ("input_0:float(65536*65536)", 15, "up to 4294967296 elements"),
    ("input_0:int32(1*4,1*384)、input_1:int32(1*4,1*384)", 25, "one element per line"),
    ("input_0:int32(1*4); input_1:int32(1*4)", 19, "one element per line"),
    ("'#x':float(1)", 2, "a first-level key cannot start with '#'"),
    ("input_0:float(" + "1*" * 64 + "1)", 15, "65 dimensions: a tensor has at most 64"),
])
def test_single_line_errors(line, column, message):
    problem = one_problem(line)
    assert (problem.line_no, problem.column, problem.line) == (1, column, line)
    assert message in problem.message


def test_unknown_dtype_lists_the_valid_ones():
    problem = one_problem("input_0:flaot(1)")
    assert problem.column == 9
    assert "unknown dtype 'flaot'" in problem.message and "did you mean float?" in problem.message
    for alias in DTYPE_ALIASES:
        assert alias in problem.message


@pytest.mark.parametrize("shape,column,message", [
    ("8*4,1*384", 19, "min is larger than max in dimension 0 (8 > 1)"),
    ("1*400,1*384", 23, "min is larger than max in dimension 1 (400 > 384)"),
    ("1*4,1*384*2", 19, "min and max have different ranks (2 and 3)"),
    ("[1*3,1*3*3]", 20, "the sizes in the list have different ranks (2 and 3)"),
])
def test_shape_consistency_errors(shape, column, message):
    problem = one_problem(f"input_0:int32({shape})")
    assert (problem.column, problem.message) == (column, message)


def test_largest_dimension_and_element_limit():
    assert parse("input_0:int8(2147483647)").leaves[0].shape.max == (2**31 - 1,)
    assert parse("input_0:float(1*10,10*10)", max_elements=100).leaves[0].shape.kind == "range"
    problem = one_problem_with_limit("input_0:float(1*10,11*10)", 100)
    assert (problem.column, "up to 110 elements" in problem.message) == (15, True)
    problem = one_problem_with_limit("input_0:float([1*2,1*200])", 100)
    assert "more than the limit of 100" in problem.message


def one_problem_with_limit(text, limit):
    with pytest.raises(SpecError) as caught:
        parse(text, max_elements=limit)
    (problem,) = caught.value.problems
    return problem


@pytest.mark.parametrize("lines,line_no,column,message", [
    (["input_0:float(1)", "input_0:float(2)"], 2, 1, "input_0 is given twice (also on line 1)"),
    (["input_0:float(1)", "input_0[0]:float(1)"], 2, 8,
     "input_0 is a tensor on line 1 but has items here"),
    (["input_0[0](0):float(1)", "input_0[0]:float(1)"], 2, 1,
     "input_0[0] has items on line 1 (input_0[0](0)) but is a tensor here"),
    (["input_0[0]:float(1)", "input_0[2]:float(1)"], 2, 8,
     "input_0[1] is missing: list items are numbered [0], [1], ... without gaps"),
    (["input_0:float(1)", "input_2:float(1)"], 2, 1,
     "input_1 is missing: positional inputs are numbered input_0, input_1, ... without gaps"),
    (["input_0(1):float(1)"], 1, 8, "input_0(0) is missing: tuple items are numbered"),
    (["input_0[3]:float(1)", "input_0[0]:float(1)"], 1, 8,
     "input_0[1], input_0[2] are missing"),
    (["input_0[9]:float(1)"], 1, 8, "input_0[0], input_0[1], input_0[2] and 6 more are missing"),
    (["input_0[0]:float(1)", "input_0[key]:float(1)"], 2, 8,
     "one level used as both list and dict: input_0[0] (line 1) and input_0[key]"),
    (["input_0[0]:float(1)", "input_0(1):float(1)"], 2, 8,
     "one level used as both list and tuple: input_0[0] (line 1) and input_0(1)"),
    (["input_0(0):float(1)", "input_0[k]:float(1)"], 2, 8, "one level used as both tuple and dict"),
    (["input_0:float(1)", "input_ids:int32(1)"], 2, 1,
     "one level used as both list and dict: the first level has input_0 (line 1) and input_ids"),
    (["input_ids:int32(1)", "input_0:float(1)"], 2, 1, "one level used as both list and dict"),
])
def test_structure_errors(lines, line_no, column, message):
    problem = one_problem(lines)
    assert (problem.line_no, problem.column) == (line_no, column)
    assert problem.line == lines[line_no - 1]
    assert message in problem.message


@pytest.mark.parametrize("empty", ["", "\n \n", "# a comment only\n\n", [], ["", "  "], None])
def test_empty_input(empty):
    with pytest.raises(SpecError) as caught:
        parse(empty)
    assert str(caught.value) == EMPTY_MESSAGE
    assert [(p.line_no, p.message) for p in caught.value.problems] == [(0, EMPTY_MESSAGE)]


def test_all_problems_of_the_whole_input_are_reported():
    text = ["# three broken lines", "input_0:flaot(1*3)", "input_1:float(1*0)",
            "input_3:int32(4*4,1*4)", "input_3:int32(1)"]
    with pytest.raises(SpecError) as caught:
        parse(text)
    problems = caught.value.problems
    assert [(p.line_no, p.column) for p in problems] == [(2, 9), (3, 17), (4, 1), (4, 19),
                                                          (5, 1)]
    assert "input_2 is missing" in problems[2].message
    assert "given twice" in problems[4].message
    rendered = str(caught.value)
    assert rendered.startswith("the tensor information has 5 problems:")
    for problem in problems:
        assert f"line {problem.line_no}, column {problem.column}: {problem.message}" in rendered


def test_bad_dtype_and_bad_shape_of_one_line_are_both_reported():
    problems = problems_of("input_0：flaot（1＊0）")
    assert [(p.column, p.message.split(";")[0]) for p in problems] == [
        (9, "unknown dtype 'flaot'"), (17, "dimension 0 is not a positive integer: every "
                                          "dimension is at least 1")]


def test_a_bad_line_is_not_also_reported_as_a_gap():
    (problem,) = problems_of(["input_0:float(1)", "input_1:flaot(1)", "input_2:float(1)"])
    assert problem.line_no == 2 and "unknown dtype" in problem.message


def test_error_line_numbers_count_blank_and_comment_lines():
    problem = one_problem("# comment\n\n  input_0:float(x)")
    assert (problem.line_no, problem.column) == (3, 17)


# ---------------------------------------------------------------- lenient reading


def test_full_width_punctuation():
    info = parse("input_0：float（1＊3，2＊3）\ninput_1：int32（［1＊4，2＊4］）")
    assert info.lines() == ["input_0:float32(1*3,2*3)", "input_1:int32([1*4,2*4])"]


def test_full_width_error_column_counts_the_original_line():
    line = "input_1：int32（1＊4，1＊384＊2）"
    with pytest.raises(SpecError) as caught:
        parse(["input_0:int32(1*4,1*384)", line])
    (problem,) = caught.value.problems
    assert (problem.line_no, problem.column, problem.line) == (2, 19, line)
    # Each full-width character before the column is two terminal cells wide.
    assert str(caught.value).splitlines()[-1] == "  " + " " * 22 + "^"


def test_full_width_colon_inside_a_key_is_kept():
    info = parse("input_0[a：b]：float（1）")
    assert info.leaves[0].path[-1] == ("dict", "a：b")


@pytest.mark.parametrize("line", [
    "“input_0:float(1*3)”", '"input_0:float(1*3)"', "'input_0:float(1*3)'",
    '"input_0:float(1*3)",', "“input_0:float(1*3)”、", "input_0:float(1*3);", "\ufeffinput_0:float(1*3)",
])
def test_quotes_and_trailing_separators_are_dropped(line):
    assert parse(line).lines() == ["input_0:float32(1*3)"]


def test_quoted_keys():
    info = parse(["'input_ids':int32(1*8)", "\"attention_mask\":int32(1*8)"])
    assert info.names == ("input_ids", "attention_mask")
    assert parse("input_0[ 'image' ]:float(1)").names == ("input_0[image]",)


def test_comments_and_blank_lines_are_ignored():
    info = parse("# the inputs of BERT\n\n" + "\n".join(SPEC_3) + "\n   \n# end\n")
    assert info.lines() == SPEC_3


def test_crlf_and_embedded_newlines_in_list_items():
    assert parse("\r\n".join(SPEC_2) + "\r\n").lines() == SPEC_2
    assert parse(["\n".join(SPEC_2[:2]), SPEC_2[2]]).lines() == SPEC_2


def test_lines_must_be_strings():
    with pytest.raises(TypeError):
        parse([b"input_0:float(1)"])


# ---------------------------------------------------------------- shape points


def test_shape_points_fixed():
    info = parse(["input_0:float(1*3)", "input_1:int64(2)"])
    assert info.shape_points() == [ShapePoint("fixed", {"input_0": (1, 3), "input_1": (2,)})]


def test_shape_points_ranges():
    points = parse(SPEC_2[:1] + ["input_1:float(5)"]).shape_points()
    assert [(p.label, p.shapes["input_0"], p.shapes["input_1"]) for p in points] == [
        ("min", (1, 4), (5,)), ("mid", (1, 194), (5,)), ("max", (1, 384), (5,))]


def test_shape_points_fixed_range_and_choices():
    info = parse(["a:float(2)", "r:float(1*4,3*8)", "c:float([1*1,2*2,3*3])"])
    shapes = [(p.label, p.shapes["a"], p.shapes["r"], p.shapes["c"]) for p in info.shape_points()]
    assert shapes == [
        ("min", (2,), (1, 4), (1, 1)),
        ("mid", (2,), (2, 6), (1, 1)),
        ("max", (2,), (3, 8), (3, 3)),
        ("choice 0", (2,), (3, 8), (1, 1)),
        ("choice 1", (2,), (3, 8), (2, 2)),
        # "choice 2" equals "max" and is dropped
    ]


def test_shape_points_choices_of_different_lengths():
    info = parse(["c1:int32([1,2,3])", "c2:int32([4,5])"])
    assert [(p.label, p.shapes["c1"], p.shapes["c2"]) for p in info.shape_points()] == [
        ("choice 0", (1,), (4,)), ("choice 1", (2,), (5,)), ("choice 2", (3,), (5,))]


def test_shape_points_identical_points_are_dropped():
    assert [p.label for p in parse("input_0:float(1*4,1*4)").shape_points()] == ["min"]
    assert [p.label for p in parse("input_0:float(1*4,1*5)").shape_points()] == ["min", "max"]
    assert [p.label for p in parse("input_0:float([1*4])").shape_points()] == ["choice 0"]


# ---------------------------------------------------------------- the worker's caps (docs/limits.md)


def test_a_list_of_10000_sizes_is_refused_at_its_bracket():
    line = "input_0:float([" + ",".join(f"1*{k}" for k in range(1, 10001)) + "])"
    problem = one_problem(line)
    assert problem.column == len("input_0:float(") + 1
    assert all(part in problem.message for part in ("10000 sizes", "at most 32 shape points",
                                                    "ACCELFLOW_MAX_SHAPE_POINTS"))


def test_a_million_sizes_are_refused_fast_without_building_them():
    import time
    import tracemalloc

    line = "input_0:float([" + "1*3," * 999_999 + "1*3])"
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SpecError, match="1000000 sizes"):
        parse(line)
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # A million parsed sizes would hold 100+ MB of tuples; refused on a count of the commas.
    assert peak < 20 * 2**20, peak  # the claim is in memory; the time is only a guard against a hang
    assert took < 60, took


def test_lines_whose_product_is_10000_make_as_many_points_as_the_longest_list():
    # Shape points pair the k-th sizes of every list; they never multiply the lists.
    ten = ",".join(f"{k}*3" for k in range(1, 11))
    info = parse([f"input_{i}:float([{ten}])" for i in range(4)])  # 10**4 combinations
    assert len(info.shape_points()) == 10
    hundred = ",".join(f"{k}*3" for k in range(1, 101))
    problems = problems_of([f"input_{i}:float([{hundred}])" for i in range(2)])
    assert [(p.line_no, "100 sizes" in p.message) for p in problems] == [(1, True), (2, True)]


def test_every_shape_point_counts_toward_the_limit():
    sizes = ",".join(f"{k}*3" for k in range(1, 31))
    lines = ["r:float(1*4,3*8)", f"c:float([{sizes}])"]  # min, mid, max and 30 choices; one repeats max
    assert len(parse(lines).shape_points()) == 32
    lines[1] = f"c:float([{sizes},31*3])"
    problem = one_problem(lines)
    assert problem.line_no == 0 and all(part in problem.message for part in (
        "makes 33 shape points (min, mid, max, choice 0, choice 1, ...)", "limit of 32", "ACCELFLOW_MAX_SHAPE_POINTS"))


def test_the_operator_sets_the_shape_point_limit(monkeypatch):
    forty = "input_0:float([" + ",".join(f"{k}*3" for k in range(1, 41)) + "])"
    monkeypatch.setenv("ACCELFLOW_MAX_SHAPE_POINTS", "40")
    assert len(parse(forty).shape_points()) == 40
    monkeypatch.setenv("ACCELFLOW_MAX_SHAPE_POINTS", "2")
    assert "at most 2 shape points" in one_problem("input_0:float([1,2,3])").message
    assert len(parse(forty, max_shape_points=50).shape_points()) == 40  # a caller's own limit wins
    for bad in ("many", "0", "-3", "1.5"):
        monkeypatch.setenv("ACCELFLOW_MAX_SHAPE_POINTS", bad)
        with pytest.raises(SpecError, match="ACCELFLOW_MAX_SHAPE_POINTS=.* is not a positive whole number"):
            parse("input_0:float(1)")


def test_input_bytes_are_capped_per_shape_point_over_all_tensors(monkeypatch):
    three_gib = "float(1*786432*1024)"  # 3 GiB of float32, under the element limit
    assert parse([f"a:{three_gib}"]).leaves[0].shape.max_elements == 3 * 2**28
    problem = one_problem([f"a:{three_gib}", f"b:{three_gib}"])
    assert all(part in problem.message for part in (
        "at shape point 'fixed' the inputs take 6.0 GiB (6442450944 bytes)", "limit of 4.0 GiB per shape point",
        "ACCELFLOW_MAX_INPUT_GB"))
    # The largest point decides: a range's max.
    problem = one_problem(["a:float(1*1024,1*1073741825)", "b:int8(1)"])
    assert "at shape point 'max'" in problem.message
    monkeypatch.setenv("ACCELFLOW_MAX_INPUT_GB", "8")
    assert len(parse([f"a:{three_gib}", f"b:{three_gib}"]).leaves) == 2
    monkeypatch.setenv("ACCELFLOW_MAX_INPUT_GB", "0.001")
    assert "limit of 1.0 MiB" in one_problem("input_0:float(1*3*512*512)").message
    monkeypatch.setenv("ACCELFLOW_MAX_INPUT_GB", "lots")
    with pytest.raises(SpecError, match="ACCELFLOW_MAX_INPUT_GB='lots' is not a positive number"):
        parse("input_0:float(1)")


def test_the_elements_of_each_dtype_count_at_their_size():
    # 2**30 elements: 2 GiB of float16 is under 4 GiB, 8 GiB of float64 is over.
    assert parse("input_0:float16(1024*1024*1024)").leaves[0].dtype == "float16"
    assert "8.0 GiB" in one_problem("input_0:double(1024*1024*1024)").message


# ---------------------------------------------------------------- example inputs


def test_example_inputs_bert_dict():
    info = parse(SPEC_3)
    point = info.shape_points()[-1]
    args, kwargs = info.example_inputs(point, rng())
    assert args == [] and list(kwargs) == ["input_ids", "input_mask", "segment_ids"]
    for array in kwargs.values():
        assert array.shape == (8, 128) and array.dtype == np.int32
    assert set(np.unique(kwargs["input_mask"])) == {0, 1}
    assert set(np.unique(kwargs["segment_ids"])) == {0, 1}
    ids = kwargs["input_ids"]
    assert ids.min() >= 0 and ids.max() < 100 and len(np.unique(ids)) > 50


def test_example_inputs_dtypes_and_ranges():
    info = parse(["input_0:float(64)", "input_1:half(64)", "input_2:bfloat16(64)",
                  "input_3:double(64)", "input_4:bool(64)", "input_5:array.char(256)",
                  "input_6:int8(256)", "input_7:uint8(64)", "input_8:long(3*4)"])
    (args, kwargs) = info.example_inputs(info.shape_points()[0], rng())
    dtypes = [a.dtype for a in args]
    assert dtypes == [np.dtype(t) for t in (np.float32, np.float16, ml_dtypes.bfloat16,
                                            np.float64, np.bool_, np.uint8, np.int8, np.uint8,
                                            np.int64)]
    assert 0.5 < float(np.std(args[0])) < 1.5 and float(np.std(args[3])) > 0.5
    assert args[4].any() and not args[4].all()
    assert args[5].min() >= 32 and args[5].max() <= 126
    assert args[6].min() >= 0 and args[6].max() < 100
    assert args[8].shape == (3, 4)


def test_example_inputs_int_ranges_override_and_clip():
    info = parse(["input_0:int8(512)", "input_1:int32(512)", "input_2:float(2)"])
    point = info.shape_points()[0]
    args, _ = info.example_inputs(point, rng(), {"*": (-1000, 1000), "input_1": (5, 7)})
    assert args[0].min() >= -128 and args[0].max() <= 127 and args[0].min() < -100
    assert set(np.unique(args[1])) == {5, 6}
    for bad, message in [({"input_9": (0, 2)}, "not an element"),
                         ({"input_2": (0, 2)}, "not an integer tensor"),
                         ({"input_0": (200, 300)}, "holds no value of int8")]:
        with pytest.raises(SpecError, match=message):
            info.example_inputs(point, rng(), bad)


def test_example_inputs_need_a_shape_for_every_element():
    info = parse(SPEC_2)
    with pytest.raises(SpecError, match="no shape for input_2"):
        info.example_inputs(ShapePoint("partial", {"input_0": (1, 4), "input_1": (1, 4)}), rng())


def test_example_inputs_are_reproducible():
    info = parse(["input_0:float(2*3)", "input_1:int32(4)"])
    point = info.shape_points()[0]
    first, second = info.example_inputs(point, rng())[0], info.example_inputs(point, rng())[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("name,dtype,expected", [
    ("attention_mask", "int64", (0, 2)), ("Input_Mask", "int32", (0, 2)),
    ("token_type_ids", "int32", (0, 2)), ("segment_ids", "int64", (0, 2)),
    ("input_ids", "int64", (0, 100)), ("x", "bool", (0, 2)), ("x", "char", (32, 127)),
    ("x", "uint8", (0, 100)), ("x", "int8", (0, 100)), ("x", "long", (0, 100)),
])
def test_default_int_range(name, dtype, expected):
    assert default_int_range(name, dtype) == expected


def test_default_int_range_refuses_floats():
    with pytest.raises(ValueError):
        default_int_range("x", "float32")


# ---------------------------------------------------------------- flatten / unflatten

NESTED = ["input_0[0][image]:float(1*3)", "input_0[0][boxes](0):int64(2)",
          "input_0[0][boxes](1):int64(2)", "input_1:bool(1)"]


def nested_inputs():
    info = parse(NESTED)
    return info, info.example_inputs(info.shape_points()[0], rng())


def test_flatten_unflatten_round_trip():
    info, (args, kwargs) = nested_inputs()
    flat = info.flatten(args, kwargs)
    assert flat[0] is args[0][0]["image"] and flat[2] is args[0][0]["boxes"][1]
    assert flat[3] is args[1]
    rebuilt_args, rebuilt_kwargs = info.unflatten(flat)
    assert rebuilt_kwargs == {}
    assert rebuilt_args[0][0]["image"] is flat[0]
    assert isinstance(rebuilt_args[0][0]["boxes"], tuple)
    assert all(a is b for a, b in zip(info.flatten(rebuilt_args, rebuilt_kwargs), flat))


def test_flatten_kwargs_root_and_plain_lists():
    info = parse(["a:float(2)", "b:int32(2)"])
    flat = info.flatten([], {"b": [1, 2], "a": np.zeros(2, np.float32)})
    assert flat[1].tolist() == [1, 2] and flat[0].dtype == np.float32
    assert info.unflatten(flat) == ([], {"a": flat[0], "b": flat[1]})


def test_flatten_accepts_tuples_for_lists():
    info, (args, kwargs) = nested_inputs()
    assert len(info.flatten(tuple(args), None)) == 4


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.pop(), "input_1: missing"),
    (lambda a: a[0][0].pop("boxes"), "input_0[0][boxes]: missing"),
    (lambda a: a[0][0].update(image=np.zeros((3,), np.float32)),
     "input_0[0][image]: rank 1 (shape (3,)), expected rank 2"),
    (lambda a: a[0][0].update(image=np.zeros((1, 3), np.int32)),
     "input_0[0][image]: dtype int32 does not fit float32"),
    (lambda a: a.__setitem__(1, np.zeros(1, np.float32)), "input_1: dtype float32 does not fit bool"),
    (lambda a: a.__setitem__(0, {"x": 1}), "input_0: expected a list, got dict"),
    (lambda a: a.append(np.zeros(1)), "input_2: unexpected item"),
    (lambda a: a[0][0].update(extra=np.zeros(1)), "input_0[0][extra]: unexpected item"),
    (lambda a: a[0][0].update(image=object()), "input_0[0][image]: dtype object does not fit"),
])
def test_flatten_errors_name_the_element(mutate, message):
    info, (args, kwargs) = nested_inputs()
    mutate(args)
    with pytest.raises(SpecError) as caught:
        info.flatten(args, kwargs)
    assert message in str(caught.value)


def test_flatten_refuses_the_wrong_root_kind():
    info, (args, _) = nested_inputs()
    with pytest.raises(SpecError, match="unexpected keyword inputs"):
        info.flatten(args, {"x": np.zeros(1)})
    with pytest.raises(SpecError, match="expected a dict"):
        parse(SPEC_3).flatten([], [1, 2, 3])


def test_unflatten_wrong_count():
    with pytest.raises(SpecError, match="expected 3 arrays"):
        parse(SPEC_2).unflatten([np.zeros((1, 4))])


def test_flatten_torch_tensors():
    torch = pytest.importorskip("torch")
    info = parse(["input_0:float(2*3)", "input_1:bfloat16(2)", "input_2:int64(4)"])
    flat = info.flatten([torch.ones(2, 3, requires_grad=True), torch.ones(2, dtype=torch.bfloat16),
                         torch.arange(4)], {})
    assert [a.dtype for a in flat] == [np.float32, ml_dtypes.bfloat16, np.int64]
    assert flat[2].tolist() == [0, 1, 2, 3]


class _FakeTensor:
    """Something with .detach().cpu().numpy(), like a torch tensor on a device."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_flatten_anything_with_detach():
    info = parse("input_0:int32(3)")
    (flat,) = info.flatten([_FakeTensor(np.arange(3, dtype=np.int32))], {})
    assert flat.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- load_lines


def test_load_lines(tmp_path):
    assert load_lines(SPEC_2, None) == SPEC_2
    path = tmp_path / "ti.txt"
    path.write_bytes("\ufeff".encode() + "\r\n".join(SPEC_3).encode())
    assert load_lines(None, str(path)) == SPEC_3
    assert parse(load_lines([], str(path))).names == ("input_ids", "input_mask", "segment_ids")


@pytest.mark.parametrize("lines,file,message", [
    (["input_0:float(1)"], "x.txt", "not both"),
    (None, None, "no tensor information given"),
    ([], None, "no tensor information given"),
    (None, "/nonexistent/ti.txt", "cannot read the tensor information file"),
])
def test_load_lines_errors(lines, file, message):
    with pytest.raises(SpecError, match=message):
        load_lines(lines, file)


def test_load_lines_not_utf8(tmp_path):
    path = tmp_path / "ti.txt"
    path.write_bytes("input_0:float(1)  # 图像".encode("gbk"))
    with pytest.raises(SpecError, match="is not UTF-8 text"):
        load_lines(None, str(path))


# ---------------------------------------------------------------- properties

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_total(text):
    """parse returns a TensorInfo that round-trips, or raises SpecError with located problems."""
    try:
        info = parse(text)
    except SpecError as err:
        assert err.problems and str(err)
        for problem in err.problems:
            assert problem.message
            if problem.line_no:
                assert 1 <= problem.column <= len(problem.line) + 1
        return None
    assert isinstance(info, TensorInfo) and info.leaves
    assert parse(info.text()) == info
    return info


@FAST
@given(st.text())
def test_any_text_parses_or_raises_spec_error(text):
    check_total(text)


@FAST
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=40), max_size=5))
def test_any_lines_parse_or_raise_spec_error(lines):
    check_total(lines)


VALID_LINES = ["input_0:float(1*3*224*224)", "input_0[0][image]:float(1*3,2*3)",
               "input_0[0](1):int64([1*4,2*4])", "input_ids:int32(1*128,8*128)",
               "segment_ids:int32(1*128,8*128)", "input_1:array.char(1*16)",
               "input_0[0](0)：half（1＊3，2＊3）", "“input_0[1][k:v]:bool([1,2])”"]
PIECES = list(":()[]*,，（）：＊［］、;#\"'“” \t0159") + ["'#", "1*" * 65,
    "-1", "9" * 12, "0" * 30 + "7", "input_", "input_1", "[0]", "(0)", "[a]", "\n", "float",
    "\ufeff", "2147483648", "图"]


@st.composite
def mutated_text(draw):
    text = "\n".join(draw(st.lists(st.sampled_from(VALID_LINES), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(PIECES))
        operation = draw(st.sampled_from(["insert", "delete", "replace"]))
        if operation == "insert":
            text = text[:at] + piece + text[at:]
        elif operation == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + piece + text[at + 1:]
    return text


@FAST
@given(mutated_text())
def test_mutated_valid_text_parses_or_raises_spec_error(text):
    check_total(text)


# -- generated valid structures

FIRST_KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,6}", fullmatch=True).filter(
    lambda key: not re.fullmatch(r"input_[0-9]+", key)) | st.sampled_from(["图像", "a b"])
DEEP_KEYS = FIRST_KEYS | st.sampled_from(["x:y", "a,b", "k*2", "#x", "0a", "、"])
FULL_WIDTH = {":": "：", "(": "（", ")": "）", "[": "［", "]": "］", "*": "＊", ",": "，"}


@st.composite
def shape_specs(draw):
    rank = draw(st.integers(1, 3))
    size = st.lists(st.integers(1, 40), min_size=rank, max_size=rank).map(tuple)
    kind = draw(st.sampled_from(["fixed", "range", "choices"]))
    if kind == "fixed":
        return ShapeSpec(kind, (draw(size),))
    if kind == "range":
        a, b = draw(size), draw(size)
        return ShapeSpec(kind, (tuple(map(min, a, b)), tuple(map(max, a, b))))
    return ShapeSpec(kind, tuple(draw(st.lists(size, min_size=1, max_size=3))))


LEAF = st.tuples(st.just("tensor"), st.sampled_from(sorted(DTYPE_ALIASES)), shape_specs())
TREES = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda items: ("list", items)),
    st.lists(inner, min_size=1, max_size=3).map(lambda items: ("tuple", items)),
    st.dictionaries(DEEP_KEYS, inner, min_size=1, max_size=3).map(lambda d: ("dict", d)),
), max_leaves=6)
ROOTS = st.one_of(
    st.lists(TREES, min_size=1, max_size=3).map(lambda items: ("args", items)),
    st.dictionaries(FIRST_KEYS, TREES, min_size=1, max_size=3).map(lambda d: ("kwargs", d)))


def expected_leaves(node, path, out):
    """(path, alias, shape) of every leaf, in canonical order."""
    if node[0] == "tensor":
        out.append((path, node[1], node[2]))
        return out
    kind, items = node
    pairs = items.items() if isinstance(items, dict) else enumerate(items)
    for key, child in pairs:
        expected_leaves(child, path + ((kind, key),), out)
    return out


def spelled(path, alias, shape, draw) -> str:
    """One line for a leaf, with random spacing, case and full-width punctuation."""
    wide = draw(st.booleans())
    punct = (lambda c: FULL_WIDTH[c]) if wide else (lambda c: c)
    space = " " if draw(st.booleans()) else ""
    parts = []
    for kind, key in path:
        if kind == "arg":
            parts.append(f"input_{key}")
        elif kind == "kwarg":
            parts.append(str(key))
        else:
            opening, closing = ("(", ")") if kind == "tuple" else ("[", "]")
            parts.append(f"{punct(opening)}{space}{key}{space}{punct(closing)}")
    sizes = [f"{space}{punct('*')}{space}".join(map(str, s)) for s in shape.sizes]
    text = punct(",").join(sizes)
    if shape.kind == "choices":
        text = f"{punct('[')}{text}{punct(']')}"
    dtype = alias.upper() if draw(st.booleans()) else alias
    return f"{''.join(parts)}{space}{punct(':')}{space}{dtype}{punct('(')}{text}{punct(')')}"


def expected_json(items, kind, path):
    """The to_json() "items" of a generated container whose items' steps are `kind`."""
    pairs = items.items() if isinstance(items, dict) else enumerate(items)
    out = {}
    for key, node in pairs:
        child_path = path + ((kind, key),)
        if node[0] == "tensor":
            out[key] = {"kind": "tensor", "name": leaf_name(child_path),
                        "dtype": DTYPE_ALIASES[node[1]], "shape": node[2].to_json()}
        else:
            out[key] = {"kind": node[0], "items": expected_json(node[1], node[0], child_path)}
    return out if isinstance(items, dict) else list(out.values())


def leaf_name(path) -> str:
    forms = {"arg": "input_{}", "kwarg": "{}", "list": "[{}]", "tuple": "({})", "dict": "[{}]"}
    return "".join(forms[kind].format(key) for kind, key in path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ROOTS, st.data())
def test_generated_structures_parse_and_round_trip(root, data):
    kind, items = root
    path_kind = "arg" if kind == "args" else "kwarg"
    leaves = expected_leaves((path_kind, items), (), [])
    lines = [spelled(path, alias, shape, data.draw) for path, alias, shape in leaves]
    info = parse("\n".join(lines))
    assert info == TensorInfo(tuple(TensorSpec(leaf_name(p), p, DTYPE_ALIASES[a], s)
                                    for p, a, s in leaves), kind)
    assert parse(info.text()) == info
    point = info.shape_points()[-1]
    args, kwargs = info.example_inputs(point, rng())
    flat = info.flatten(args, kwargs)
    assert [a.shape for a in flat] == [point.shapes[n] for n in info.names]
    assert [a.dtype for a in flat] == [numpy_dtype(leaf.dtype) for leaf in info.leaves]
    rebuilt = info.flatten(*info.unflatten(flat))
    assert len(rebuilt) == len(flat) and all(a is b for a, b in zip(rebuilt, flat))
    assert info.to_json() == {"root": kind, "items": expected_json(items, path_kind, ())}
