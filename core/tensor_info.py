"""Tensor information: the text that describes a model's inputs (docs/tensor-info.md).

One line per leaf tensor, ``element:dtype(shape)``; docs/tensor-info.md is the user's guide.
`parse` turns the text into a `TensorInfo`, or raises one `SpecError` that lists every
problem of the whole input with its line, column and a caret. `TensorInfo` then makes
example inputs of the model's own nested structure and flattens / rebuilds such inputs.
Pure Python + numpy + ml_dtypes: no torch, no Prefect.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import ml_dtypes
import numpy as np
from accelflow.core import quotas
from accelflow.core.errors import SpecError

MAX_DIM = 2**31 - 1
DEFAULT_MAX_ELEMENTS = 2**31
# Deeper nesting than this is certainly a typo, and the tree walks below are recursive.
MAX_DEPTH = 64
# numpy's own limit on dimensions: example inputs of a higher rank could not be made.
MAX_RANK = 64

# Accepted dtype spellings (compared lower-case) -> canonical name.
DTYPE_ALIASES: dict[str, str] = {
    "float": "float32", "float32": "float32",
    "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16",
    "double": "float64", "float64": "float64",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "int32": "int32",
    "int64": "int64", "long": "int64",
    "bool": "bool",
    "array.char": "char", "char": "char",
}
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64"})
_NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "float64": np.float64, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "int32": np.int32, "int64": np.int64, "bool": np.bool_,
    "char": np.uint8,  # 8-bit text characters: UTF-8 code units
}
# numpy dtype kinds a given array may have for a leaf of each canonical dtype.
_ARRAY_KINDS = {**{d: "f" for d in FLOAT_DTYPES}, "bool": "b", "char": "iu",
                **{d: "iu" for d in ("int8", "uint8", "int16", "int32", "int64")}}

_EMPTY = ("no tensor information given: add one line per input tensor, "
          "e.g. input_0:float(1*3*224*224)")
_EXAMPLE = "e.g. input_0:float(1*3*224*224)"
# Full-width punctuation pasted from Chinese documents, mapped one character to one, so
# that an index into the normalised line is also the column in the original line.
_NORMALISE = str.maketrans({"，": ",", "（": "(", "）": ")", "：": ":", "［": "[", "］": "]",
                            "＊": "*", "；": ";", "\ufeff": " "})
_QUOTES = "\"'“”‘’"
_TRAILING = ",;、。"
_DIGITS = re.compile(r"[0-9]+")
_ARG = re.compile(r"input_([0-9]+)")
_TWO_ON_ONE_LINE = re.compile(r"\)\s*([、;,])\s*\S")
_DTYPE_WORD = re.compile(r"\s*[A-Za-z0-9_.]*\s*")
_INDEXED = ("arg", "list", "tuple")  # levels whose items are numbered


# ---------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class ShapeSpec:
    """A leaf's shape: fixed (one size), range (min, max) or choices (n sizes)."""

    kind: str  # "fixed" | "range" | "choices"
    sizes: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        # Tuples all the way down, so that equal specs compare and hash equal.
        object.__setattr__(self, "sizes", tuple(tuple(int(d) for d in s) for s in self.sizes))

    @property
    def rank(self) -> int:
        return len(self.sizes[0])

    @property
    def min(self) -> tuple[int, ...]:
        return tuple(min(dims) for dims in zip(*self.sizes))

    @property
    def max(self) -> tuple[int, ...]:
        return tuple(max(dims) for dims in zip(*self.sizes))

    @property
    def mid(self) -> tuple[int, ...]:
        return tuple((lo + hi) // 2 for lo, hi in zip(self.min, self.max))

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, dims in enumerate(zip(*self.sizes)) if len(set(dims)) > 1)

    @property
    def max_elements(self) -> int:
        return math.prod(self.max)

    def text(self) -> str:
        sizes = ["*".join(map(str, s)) for s in self.sizes]
        return f"[{','.join(sizes)}]" if self.kind == "choices" else ",".join(sizes)

    def to_json(self) -> dict:
        return {"kind": self.kind, "sizes": [list(s) for s in self.sizes]}


@dataclass(frozen=True)
class TensorSpec:
    """One leaf tensor: its canonical element name, its path from the root, dtype and shape."""

    name: str
    path: tuple[tuple[str, Any], ...]
    dtype: str
    shape: ShapeSpec

    def text(self) -> str:
        return f"{self.name}:{self.dtype}({self.shape.text()})"

    def to_json(self) -> dict:
        return {"kind": "tensor", "name": self.name, "dtype": self.dtype,
                "shape": self.shape.to_json()}


@dataclass(frozen=True)
class ShapePoint:
    """One concrete shape for every leaf, e.g. all dynamic leaves at their max."""

    label: str
    shapes: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Problem:
    """One problem of the tensor information; line_no 0 means the input as a whole."""

    line_no: int
    column: int
    line: str
    message: str

    def render(self) -> str:
        if not self.line_no:
            return self.message
        pad = "".join(_caret_pad(c) for c in self.line[: self.column - 1])
        return (f"tensor information line {self.line_no}, column {self.column}: "
                f"{self.message}\n  {self.line}\n  {pad}^")


@dataclass(frozen=True)
class TensorInfo:
    """The parsed tensor information: the leaves in canonical order and the root kind."""

    leaves: tuple[TensorSpec, ...]
    root: str  # "args" | "kwargs"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(leaf.name for leaf in self.leaves)

    def lines(self) -> list[str]:
        return [leaf.text() for leaf in self.leaves]

    def text(self) -> str:
        return "\n".join(self.lines())

    def to_json(self) -> dict:
        return {"root": self.root, "items": _json_items(self._tree(), self.leaves)}

    def shape_points(self) -> list[ShapePoint]:
        return _shape_points(self.leaves)

    def example_inputs(self, point: ShapePoint, rng: np.random.Generator,
                       int_ranges: dict[str, tuple[int, int]] | None = None) -> tuple[list, dict]:
        """Random inputs of the original nested structure at `point`: (args, kwargs)."""
        ranges = _checked_int_ranges(self.leaves, int_ranges or {})
        missing = [n for n in self.names if n not in point.shapes]
        if missing:
            raise SpecError(f"shape point {point.label!r} has no shape for {', '.join(missing)}")
        arrays = [_example_array(leaf, point.shapes[leaf.name], rng, ranges)
                  for leaf in self.leaves]
        return self.unflatten(arrays)

    def flatten(self, args, kwargs) -> list[np.ndarray]:
        """The leaves of a nested (args, kwargs) input, as numpy arrays in `leaves` order."""
        return _flatten(self, args, kwargs)

    def unflatten(self, arrays: list) -> tuple[list, dict]:
        """The nested (args, kwargs) structure holding `arrays` (in `leaves` order)."""
        if len(arrays) != len(self.leaves):
            raise SpecError(f"expected {len(self.leaves)} arrays, one per element "
                            f"({', '.join(self.names)}), got {len(arrays)}")
        built = _python_value(self._tree(), list(arrays))
        return (built, {}) if self.root == "args" else ([], built)

    def _tree(self) -> _Branch:
        return _tree(self.leaves, "arg" if self.root == "args" else "kwarg")


# ---------------------------------------------------------------------------- dtypes


def canonical_dtype(text: str) -> str | None:
    """The canonical name of a dtype spelling (any case), or None if unknown."""
    return DTYPE_ALIASES.get(text.strip().lower())


def numpy_dtype(canonical: str) -> np.dtype:
    """The numpy dtype of a dtype name (bfloat16 via ml_dtypes; char is uint8)."""
    name = canonical_dtype(canonical)
    if name is None:
        raise SpecError(f"unknown dtype {canonical!r}; valid: {', '.join(DTYPE_ALIASES)}")
    return np.dtype(_NUMPY_DTYPES[name])


def default_int_range(name: str, dtype: str) -> tuple[int, int]:
    """The half-open range [lo, hi) of example values for an integer, bool or char leaf."""
    dtype = canonical_dtype(dtype) or dtype
    if dtype in FLOAT_DTYPES or dtype not in _NUMPY_DTYPES:
        raise ValueError(f"{name} is {dtype}, not an integer, bool or char tensor")
    if dtype == "char":
        return (32, 127)  # printable ASCII
    lowered = name.lower()
    if dtype == "bool" or any(w in lowered for w in ("mask", "segment", "type")):
        return _clip_range((0, 2), dtype)  # masks and token types are 0/1
    return _clip_range((0, 100), dtype)


def _clip_range(bounds: tuple[int, int], dtype: str) -> tuple[int, int]:
    if dtype == "bool":
        lo, hi = 0, 2
    else:
        info = np.iinfo(_NUMPY_DTYPES[dtype])
        lo, hi = int(info.min), int(info.max) + 1
    return max(bounds[0], lo), min(bounds[1], hi)


# ---------------------------------------------------------------------------- parsing


class _Bad(Exception):
    """A problem at an index of the current line; caught per part of the line."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index, self.message = index, message


class _Several(_Bad):
    """Problems in independent parts of one line (dtype and shape), all to be reported."""

    def __init__(self, bads: list[_Bad]):
        super().__init__(bads[0].index, bads[0].message)
        self.bads = bads


@dataclass(frozen=True)
class _Step:
    kind: str  # arg | kwarg | list | tuple | dict
    key: Any
    index: int  # where the step starts in the line


@dataclass(frozen=True)
class _Limits:
    """What one tensor information may ask for: elements per tensor, shape points, input bytes."""

    elements: int
    points: int
    input_bytes: int


@dataclass
class _Line:
    no: int
    raw: str
    steps: list[_Step]
    dtype: str | None  # None when the dtype or shape part has a problem
    shape: ShapeSpec | None


def parse(text_or_lines, *, max_elements: int = DEFAULT_MAX_ELEMENTS, max_shape_points: int | None = None,
          max_input_bytes: int | None = None) -> TensorInfo:
    """Parse tensor information (one string, or a list of lines); SpecError lists all problems.

    Refused as well: more shape points than ACCELFLOW_MAX_SHAPE_POINTS, and more input bytes at
    a shape point than ACCELFLOW_MAX_INPUT_GB (the worker operator's caps, core/quotas.py), so
    that a submitter cannot make a worker build, check and time without end.
    """
    limits = _Limits(max_elements,
                     quotas.max_shape_points() if max_shape_points is None else max_shape_points,
                     quotas.max_input_bytes() if max_input_bytes is None else max_input_bytes)
    records, problems = [], []
    for no, raw in enumerate(_split_lines(text_or_lines), 1):
        record = _parse_line(no, raw, limits, problems)
        if record is not None:
            records.append(record)
    if not records and not problems:
        raise _error([Problem(0, 0, "", _EMPTY)])
    root = _Node(None, -1)
    for record in records:
        _insert(root, record, problems)
    _check_gaps(root, problems)
    if problems:
        raise _error(problems)
    leaves: list[TensorSpec] = []
    _collect_leaves(root, (), leaves)
    _check_totals(leaves, limits)
    return TensorInfo(tuple(leaves), "args" if root.kind == "arg" else "kwargs")


def _split_lines(text_or_lines) -> list[str]:
    if text_or_lines is None:
        return []
    if isinstance(text_or_lines, str):
        return text_or_lines.splitlines()
    lines = []
    for item in text_or_lines:
        if not isinstance(item, str):
            raise TypeError(f"tensor information lines must be str, got {type(item).__name__}")
        lines.extend(item.splitlines() or [""])
    return lines


def _parse_line(no: int, raw: str, limits: _Limits, problems: list) -> _Line | None:
    """The line's parts, or None for a blank / comment line or an unreadable element."""
    norm = raw.translate(_NORMALISE)
    span = _content_span(norm)
    if span is None:
        return None
    a, b = span
    try:
        colon = _split_point(norm, a, b)
    except _Bad as e:  # the line cannot be cut into its parts: nothing more to check
        problems.append(Problem(no, e.index + 1, raw, e.message))
        return None
    bad: list[_Bad] = []
    steps = _guarded(bad, _parse_element, norm, raw, a, colon)
    typed = _guarded(bad, _parse_type_and_shape, norm, colon + 1, b, limits)
    problems.extend(Problem(no, e.index + 1, raw, e.message) for e in bad)
    if steps is None:
        return None
    # A line with a bad dtype or shape still takes its place in the structure, so that
    # it is not also reported as a gap or a missing element.
    dtype, shape = typed or (None, None)
    return _Line(no, raw, steps, dtype, shape)


def _guarded(bad: list[_Bad], fn: Callable, *args):
    try:
        return fn(*args)
    except _Bad as e:
        bad.extend(getattr(e, "bads", [e]))
        return None


def _content_span(norm: str) -> tuple[int, int] | None:
    """The meaningful part of a line: no surrounding space, quotes or list separators."""
    a, b = _strip(norm, 0, len(norm))
    if a == b or norm[a] == "#":
        return None
    while True:
        start = (a, b)
        while b > a and norm[b - 1] in _TRAILING:
            a, b = _strip(norm, a, b - 1)
        if b - a >= 2 and norm[a] in _QUOTES and norm[b - 1] in _QUOTES:
            a, b = _strip(norm, a + 1, b - 1)
        if (a, b) == start:
            return (a, b) if a < b else None


def _strip(norm: str, a: int, b: int) -> tuple[int, int]:
    while a < b and norm[a].isspace():
        a += 1
    while b > a and norm[b - 1].isspace():
        b -= 1
    return a, b


def _split_point(norm: str, a: int, b: int) -> int:
    """The ':' between element and dtype: the first one outside brackets (keys may hold ':')."""
    two = _TWO_ON_ONE_LINE.search(norm, a, b)
    if two:
        raise _Bad(two.start(1), "one element per line: put the element after this "
                   "separator on a line of its own")
    depth, first = 0, -1
    for i in range(a, b):
        c = norm[i]
        depth += (c in "[(") - (c in "])" and depth > 0)
        if c == ":":
            first = i if first < 0 else first
            if depth == 0:
                return i
    if first >= 0:
        return first
    stop = next((i for i in range(a, b) if norm[i].isspace() or norm[i] == "("), b)
    raise _Bad(stop, "missing ':' between the element and its dtype: write "
               f"element:dtype(shape), {_EXAMPLE}")



# -- the element name


def _parse_element(norm: str, raw: str, a: int, b: int) -> list[_Step]:
    a, b = _strip(norm, a, b)
    if a == b:
        raise _Bad(a, f"missing element name before ':' (input_0, input_ids, ...), {_EXAMPLE}")
    j = _find_any(norm, a, b, "[]()")
    steps = [_first_step(norm, raw, a, j)]
    while (j := _strip(norm, j, b)[0]) < b:
        step, j = _next_step(norm, raw, j, b)
        steps.append(step)
        if len(steps) > MAX_DEPTH:
            raise _Bad(step.index, f"element nested deeper than {MAX_DEPTH} levels")
    return steps


def _find_any(norm: str, a: int, b: int, chars: str) -> int:
    return next((i for i in range(a, b) if norm[i] in chars), b)


def _first_step(norm: str, raw: str, a: int, j: int) -> _Step:
    ka, kb = _unquote(norm, a, j)
    if ka == kb:
        raise _Bad(a, "an element starts with input_<n> (positional) or a key (keyword), "
                   "e.g. input_0[0] or input_ids")
    name = raw[ka:kb]
    if name.startswith("#"):  # its canonical line would read as a comment
        raise _Bad(ka, "a first-level key cannot start with '#'")
    match = _ARG.fullmatch(name)
    if match:
        return _Step("arg", _index(match.group(1), ka + len("input_")), ka)
    return _Step("kwarg", name, ka)


def _next_step(norm: str, raw: str, j: int, b: int) -> tuple[_Step, int]:
    """The step [index], (index) or [key] starting at j, and where the next one starts."""
    opening = norm[j]
    if opening not in "[(":
        raise _Bad(j, f"unexpected {raw[j]!r} in the element name: deeper levels are "
                   "[index] (list), (index) (tuple) or [key] (dict)")
    closing = "]" if opening == "[" else ")"
    k = _find_any(norm, j + 1, b, "[]()")
    if k == b or norm[k] != closing:
        raise _Bad(j, f"{raw[j]!r} is not closed by {closing!r} in the element name")
    ka, kb = _unquote(norm, j + 1, k)
    text = raw[ka:kb]
    if not text:
        raise _Bad(j, f"empty {opening}{closing} in the element name")
    if _DIGITS.fullmatch(text):
        return _Step("list" if opening == "[" else "tuple", _index(text, ka), j), k + 1
    if opening == "(":
        raise _Bad(ka, f"tuple items are numbered (0), (1), ...; a dict key goes in square "
                   f"brackets: [{text}]")
    return _Step("dict", text, j), k + 1


def _unquote(norm: str, a: int, b: int) -> tuple[int, int]:
    """A key's span without surrounding space and quotes (as in d['image'])."""
    a, b = _strip(norm, a, b)
    # Repeated, so that no parsed key is itself quoted and the canonical text round-trips.
    while b - a >= 2 and norm[a] in _QUOTES and norm[b - 1] in _QUOTES:
        a, b = _strip(norm, a + 1, b - 1)
    return a, b


def _index(digits: str, at: int) -> int:
    if len(digits) > 1 and digits[0] == "0":
        raise _Bad(at, f"index {digits} has a leading zero; write {digits.lstrip('0') or '0'}")
    if len(digits) > 9:
        raise _Bad(at, f"index {digits} is too large")
    return int(digits)


# -- dtype and shape


def _parse_type_and_shape(norm: str, a: int, b: int, limits: _Limits):
    """(canonical dtype, ShapeSpec) of the text after the ':'."""
    opening = norm.find("(", a, b)
    if opening < 0:
        at = _DTYPE_WORD.match(norm, a, b).end()
        raise _Bad(at, f"missing '(': the shape goes in parentheses after the dtype, {_EXAMPLE}")
    if norm[b - 1] != ")" or b - 1 == opening:
        raise _Bad(b, "missing ')' at the end of the shape")
    bad: list[_Bad] = []
    dtype = _guarded(bad, _parse_dtype, norm, a, opening)
    shape = _guarded(bad, _parse_shape, norm, opening + 1, b - 1, limits.points)
    if shape is not None and shape.max_elements > limits.elements:
        bad.append(_Bad(opening + 1, _too_big(shape, limits.elements)))
    if len(bad) > 1:  # both parts are wrong: report both, at their own columns
        raise _Several(bad)
    if bad:
        raise bad[0]
    return dtype, shape


def _too_big(shape: ShapeSpec, limit: int) -> str:
    return (f"this tensor can hold up to {shape.max_elements} elements "
            f"({'*'.join(map(str, shape.max))}), more than the limit of {limit}; refused so "
            "that nothing that large is ever allocated")


def _parse_dtype(norm: str, a: int, b: int) -> str:
    a, b = _strip(norm, a, b)
    if a == b:
        raise _Bad(a, "missing dtype between ':' and '(' (float, int32, ...)")
    text = norm[a:b]
    canonical = canonical_dtype(text)
    if canonical is None:
        near = difflib.get_close_matches(text.lower(), DTYPE_ALIASES, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise _Bad(a, f"unknown dtype {text!r}; {hint}valid: {', '.join(DTYPE_ALIASES)}")
    return canonical


def _parse_shape(norm: str, a: int, b: int, max_points: int) -> ShapeSpec:
    a, b = _strip(norm, a, b)
    if a == b:
        raise _Bad(a, "empty shape: a scalar (rank 0) tensor cannot be described; give at "
                   "least one dimension, e.g. (1)")
    if norm[a] == "[":
        return _parse_choices(norm, a, b, max_points)
    parts = _split(norm, a, b, ",")
    if len(parts) > 2:
        raise _Bad(parts[2][0], "a continuous dynamic shape is two sizes, min,max; list "
                   "several sizes in brackets: [1*3,2*3,4*3]")
    sizes = [_parse_size(norm, *part) for part in parts]
    if len(sizes) == 1:
        return ShapeSpec("fixed", (sizes[0][0],))
    _check_range(sizes, parts[1][0])
    return ShapeSpec("range", (sizes[0][0], sizes[1][0]))


def _check_range(sizes, max_at: int) -> None:
    (low, _), (high, high_at) = sizes
    if len(low) != len(high):
        raise _Bad(max_at, f"min and max have different ranks ({len(low)} and {len(high)})")
    for axis, (lo, hi) in enumerate(zip(low, high)):
        if lo > hi:
            raise _Bad(high_at[axis], f"min is larger than max in dimension {axis} "
                       f"({lo} > {hi})")


def _parse_choices(norm: str, a: int, b: int, max_points: int) -> ShapeSpec:
    if norm[b - 1] != "]" or b - 1 == a:
        raise _Bad(b, "missing ']' at the end of the list of sizes")
    # Counted before anything is split or parsed: a list of a million sizes costs one scan.
    count = norm.count(",", a + 1, b - 1) + 1
    if count > max_points:
        raise _Bad(a, f"{count} sizes in one list: each is a shape point of its own (a full build, "
                   f"accuracy check and benchmark), and this worker takes at most {max_points} shape "
                   f"points per task ({quotas.SHAPE_POINTS_ENV}); list fewer sizes, or give the "
                   "dynamic dimension as a range min,max")
    parts = _split(norm, a + 1, b - 1, ",")
    if parts == [_strip(norm, a + 1, b - 1)] and parts[0][0] == parts[0][1]:
        raise _Bad(a, "empty list of sizes: give at least one size, e.g. [1*3,2*3]")
    sizes = [_parse_size(norm, *part) for part in parts]
    for (dims, _), (start, _) in zip(sizes, parts):
        if len(dims) != len(sizes[0][0]):
            raise _Bad(start, f"the sizes in the list have different ranks "
                       f"({len(sizes[0][0])} and {len(dims)})")
    return ShapeSpec("choices", tuple(dims for dims, _ in sizes))


def _split(norm: str, a: int, b: int, sep: str) -> list[tuple[int, int]]:
    """Spans of the pieces of norm[a:b] between separators, stripped of space."""
    spans, start = [], a
    for i in range(a, b + 1):
        if i == b or norm[i] == sep:
            spans.append(_strip(norm, start, i))
            start = i + 1
    return spans


def _parse_size(norm: str, a: int, b: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(dims, where each dim starts) of one size such as 1*3*224*224."""
    if a == b:
        raise _Bad(a, "missing size: a size is positive integers joined by '*', e.g. 1*3*224")
    parts = _split(norm, a, b, "*")
    if len(parts) > MAX_RANK:
        raise _Bad(a, f"{len(parts)} dimensions: a tensor has at most {MAX_RANK}")
    return tuple(_parse_dim(norm, *part) for part in parts), tuple(p[0] for p in parts)


def _parse_dim(norm: str, a: int, b: int) -> int:
    text = norm[a:b]
    if not text:
        raise _Bad(a, "missing dimension: a size is positive integers joined by '*'")
    if not _DIGITS.fullmatch(text):
        raise _Bad(a, f"dimension {text!r} is not a positive integer; a dynamic dimension is "
                   "written as min,max sizes (1*4,1*384) or a list of sizes [1*4,1*384]")
    digits = text.lstrip("0") or "0"  # int() refuses very long digit strings
    if len(digits) > 10 or int(digits) > MAX_DIM:
        raise _Bad(a, f"dimension {text} is larger than 2**31-1 ({MAX_DIM})")
    if digits == "0":
        raise _Bad(a, "dimension 0 is not a positive integer: every dimension is at least 1")
    return int(digits)


# -- the structure: every line's path inserted into one tree


_LEVEL_WORD = {"arg": "list", "kwarg": "dict", "list": "list", "tuple": "tuple", "dict": "dict"}


@dataclass(eq=False)
class _Node:
    line: _Line | None  # where this element first appears
    depth: int  # its step index in that line
    kind: str | None = None  # "tensor", or the kind of its items' steps
    items_from: tuple[_Line, int] | None = None  # where the item kind was set
    children: dict = field(default_factory=dict)


def _insert(root: _Node, line: _Line, problems: list) -> None:
    node = root
    for depth, step in enumerate(line.steps):
        if node.kind is None:
            node.kind, node.items_from = step.kind, (line, depth)
        elif node.kind != step.kind:
            problems.append(_level_clash(node, line, depth))
            return
        last = depth == len(line.steps) - 1
        child = node.children.get(step.key)
        if child is None:
            child = node.children[step.key] = _Node(line, depth, "tensor" if last else None)
        elif child.kind == "tensor" or last:
            problems.append(_element_clash(child, line, depth))
            return
        node = child


def _level_clash(node: _Node, line: _Line, depth: int) -> Problem:
    first, first_depth = node.items_from
    words = sorted({_LEVEL_WORD[node.kind], _LEVEL_WORD[line.steps[depth].kind]},
                   key=["list", "tuple", "dict"].index)
    before = _steps_name(first.steps[: first_depth + 1])
    here = _steps_name(line.steps[: depth + 1])
    if depth == 0:
        detail = (f"the first level has {before} (line {first.no}) and {here}: name every "
                  "first-level element input_<n> (positional inputs) or every one by its "
                  "key (keyword inputs)")
    else:
        detail = f"{before} (line {first.no}) and {here}"
    return _at(line, line.steps[depth].index,
               f"one level used as both {words[0]} and {words[1]}: {detail}")


def _element_clash(child: _Node, line: _Line, depth: int) -> Problem:
    name = _steps_name(line.steps[: depth + 1])
    last = depth == len(line.steps) - 1
    if child.kind == "tensor" and last:
        return _at(line, line.steps[0].index, f"{name} is given twice (also on line "
                   f"{child.line.no})")
    if child.kind == "tensor":
        return _at(line, line.steps[depth + 1].index, f"{name} is a tensor on line "
                   f"{child.line.no} but has items here")
    return _at(line, line.steps[0].index, f"{name} has items on line {child.line.no} "
               f"({_steps_name(child.items_from[0].steps)}) but is a tensor here")


def _at(line: _Line, index: int, message: str) -> Problem:
    return Problem(line.no, index + 1, line.raw, message)


def _check_gaps(node: _Node, problems: list) -> None:
    if node.kind in _INDEXED:
        gap = _gap_problem(node)
        if gap:
            problems.append(gap)
    for child in node.children.values():
        if child.kind != "tensor":
            _check_gaps(child, problems)


def _gap_problem(node: _Node) -> Problem | None:
    keys = sorted(node.children)
    missing_count = keys[-1] + 1 - len(keys)
    if not missing_count:
        return None
    missing, expected = [], 0
    for key in keys:  # the first few missing indices, without walking a huge range
        while expected < key and len(missing) < 3:
            missing.append(expected)
            expected += 1
        expected = key + 1
    after = node.children[min(k for k in keys if k > missing[0])]
    steps = after.line.steps[: after.depth]
    names = [_steps_name(steps + [_Step(node.kind, i, 0)]) for i in missing]
    more = f" and {missing_count - len(missing)} more" if missing_count > len(missing) else ""
    verb = "is" if missing_count == 1 else "are"
    what = {"arg": "positional inputs are numbered input_0, input_1, ...",
            "list": "list items are numbered [0], [1], ...",
            "tuple": "tuple items are numbered (0), (1), ..."}[node.kind]
    return _at(after.line, after.line.steps[after.depth].index,
               f"{', '.join(names)}{more} {verb} missing: {what} without gaps")


def _collect_leaves(node: _Node, path: tuple, out: list) -> None:
    keys = sorted(node.children) if node.kind in _INDEXED else list(node.children)
    for key in keys:
        child = node.children[key]
        child_path = path + ((node.kind, key),)
        if child.kind == "tensor":
            out.append(TensorSpec(_path_name(child_path), child_path, child.line.dtype,
                                  child.line.shape))
        else:
            _collect_leaves(child, child_path, out)


def _steps_name(steps: list[_Step]) -> str:
    return _path_name(tuple((s.kind, s.key) for s in steps))


def _path_name(path) -> str:
    forms = {"arg": "input_{}", "kwarg": "{}", "list": "[{}]", "tuple": "({})", "dict": "[{}]"}
    return "".join(forms[kind].format(key) for kind, key in path)


# -- totals over all leaves


def _check_totals(leaves, limits: _Limits) -> None:
    """The caps on the whole input: shape points, and input bytes at each shape point."""
    # Bounded: no list of sizes is longer than limits.points (refused per line above), so
    # at most limits.points + 3 points are built here.
    points = _shape_points(leaves)
    if len(points) > limits.points:
        raise _error([Problem(0, 0, "", (
            f"the tensor information makes {len(points)} shape points ({', '.join(p.label for p in points[:5])}"
            f"{', ...' if len(points) > 5 else ''}), more than this worker's limit of {limits.points} "
            f"per task ({quotas.SHAPE_POINTS_ENV}): each is a full build, accuracy check and benchmark; "
            "list fewer sizes"))])
    itemsize = {leaf.name: numpy_dtype(leaf.dtype).itemsize for leaf in leaves}
    for point in points:
        total = sum(math.prod(shape) * itemsize[name] for name, shape in point.shapes.items())
        if total > limits.input_bytes:
            raise _error([Problem(0, 0, "", (
                f"at shape point {point.label!r} the inputs take {quotas.size_text(total)} ({total} bytes), "
                f"more than this worker's limit of {quotas.size_text(limits.input_bytes)} per shape point "
                f"({quotas.INPUT_GB_ENV}); refused so that nothing that large is ever allocated: "
                "give smaller sizes"))])


# -- errors


def _error(problems: list[Problem], shown: int = 30) -> SpecError:
    problems = sorted(problems, key=lambda p: (p.line_no, p.column))
    if len(problems) == 1:
        text = problems[0].render()
    else:
        text = "\n\n".join(
            [f"the tensor information has {len(problems)} problems:"]
            + [p.render() for p in problems[:shown]]
            + ([f"... and {len(problems) - shown} more"] if len(problems) > shown else []))
    err = SpecError(text)
    err.problems = problems
    return err


def _caret_pad(char: str) -> str:
    """What to print under `char` so that the caret lines up with the original line."""
    if char == "\t":
        return "\t"
    if unicodedata.combining(char):
        return ""
    return "  " if unicodedata.east_asian_width(char) in "WF" else " "


# ---------------------------------------------------------------------------- nested values


@dataclass
class _Branch:
    kind: str  # the kind of its items: arg | kwarg | list | tuple | dict
    children: dict  # key -> _Branch, or the index of a leaf


def _tree(leaves, root_kind: str) -> _Branch:
    root = _Branch(root_kind, {})
    for i, leaf in enumerate(leaves):
        node = root
        for (_, key), (kind, _) in zip(leaf.path, leaf.path[1:]):
            node = node.children.setdefault(key, _Branch(kind, {}))
        node.children[leaf.path[-1][1]] = i
    return root


def _ordered(branch: _Branch) -> list:
    keys = sorted(branch.children) if branch.kind in _INDEXED else list(branch.children)
    return [(key, branch.children[key]) for key in keys]


def _python_value(branch: _Branch, arrays: list):
    """The list / tuple / dict value of a branch, with arrays[i] at leaf i."""
    pairs = [(key, arrays[c] if isinstance(c, int) else _python_value(c, arrays))
             for key, c in _ordered(branch)]
    if branch.kind in ("kwarg", "dict"):
        return dict(pairs)
    items = [value for _, value in pairs]
    return tuple(items) if branch.kind == "tuple" else items


def _json_items(branch: _Branch, leaves) -> list | dict:
    pairs = [(key, leaves[c].to_json() if isinstance(c, int) else
              {"kind": _LEVEL_WORD[c.kind], "items": _json_items(c, leaves)})
             for key, c in _ordered(branch)]
    if branch.kind in ("kwarg", "dict"):
        return dict(pairs)
    return [value for _, value in pairs]


# -- shape points


def _shape_points(leaves) -> list[ShapePoint]:
    """The shapes to build, check and time at; the rule is in docs/tensor-info.md."""
    kinds = {leaf.shape.kind for leaf in leaves}
    points = []
    if kinds == {"fixed"}:
        points.append(_point("fixed", leaves, lambda s: s.sizes[0]))
    if "range" in kinds:
        points += [_point(label, leaves, lambda s, label=label: _at_bound(s, label))
                   for label in ("min", "mid", "max")]
    if "choices" in kinds:
        count = max(len(leaf.shape.sizes) for leaf in leaves if leaf.shape.kind == "choices")
        points += [_point(f"choice {k}", leaves, lambda s, k=k: _at_choice(s, k))
                   for k in range(count)]
    unique: list[ShapePoint] = []
    for point in points:
        if all(point.shapes != kept.shapes for kept in unique):
            unique.append(point)
    return unique


def _point(label: str, leaves, shape_of: Callable) -> ShapePoint:
    return ShapePoint(label, {leaf.name: shape_of(leaf.shape) for leaf in leaves})


def _at_bound(shape: ShapeSpec, label: str) -> tuple[int, ...]:
    if shape.kind == "range":
        return {"min": shape.min, "mid": shape.mid, "max": shape.max}[label]
    return shape.sizes[-1] if label == "max" else shape.sizes[0]


def _at_choice(shape: ShapeSpec, k: int) -> tuple[int, ...]:
    if shape.kind == "range":
        return shape.max
    return shape.sizes[min(k, len(shape.sizes) - 1)]


# -- example inputs


def _checked_int_ranges(leaves, int_ranges: dict) -> dict[str, tuple[int, int]]:
    """The [lo, hi) range of every integer-like leaf, overrides applied and clipped."""
    by_name = {leaf.name: leaf for leaf in leaves}
    for name in int_ranges:
        if name != "*" and name not in by_name:
            raise SpecError(f"int_ranges names {name!r}, which is not an element; elements: "
                            f"{', '.join(by_name)}")
        if name != "*" and by_name[name].dtype in FLOAT_DTYPES:
            raise SpecError(f"int_ranges names {name}, which is {by_name[name].dtype}, "
                            "not an integer tensor")
    ranges = {}
    for leaf in leaves:
        if leaf.dtype in FLOAT_DTYPES:
            continue
        wanted = int_ranges.get(leaf.name, int_ranges.get("*"))
        bounds = default_int_range(leaf.name, leaf.dtype) if wanted is None else wanted
        lo, hi = _clip_range((int(bounds[0]), int(bounds[1])), _storage(leaf.dtype))
        if lo >= hi:
            raise SpecError(f"the integer range {tuple(bounds)} of {leaf.name} holds no value "
                            f"of {leaf.dtype}")
        ranges[leaf.name] = (lo, hi)
    return ranges


def _storage(dtype: str) -> str:
    return "uint8" if dtype == "char" else dtype


def _example_array(leaf: TensorSpec, shape, rng: np.random.Generator, ranges) -> np.ndarray:
    dtype = numpy_dtype(leaf.dtype)
    if leaf.dtype in FLOAT_DTYPES:
        wide = np.float64 if leaf.dtype == "float64" else np.float32
        return rng.standard_normal(tuple(shape), dtype=wide).astype(dtype)
    lo, hi = ranges[leaf.name]
    return rng.integers(lo, hi, size=tuple(shape), dtype=np.int64).astype(dtype)


# -- flatten


def _flatten(info: TensorInfo, args, kwargs) -> list[np.ndarray]:
    arrays: list = [None] * len(info.leaves)
    problems: list[str] = []
    tree = info._tree()
    given, other = (args, kwargs) if info.root == "args" else (kwargs, args)
    if not (other is None or isinstance(other, (list, tuple, Mapping)) and not other):
        problems.append(f"unexpected {'keyword' if info.root == 'args' else 'positional'} "
                        f"inputs: the tensor information describes "
                        f"{'positional' if info.root == 'args' else 'keyword'} inputs only")
    _walk(info, tree, given, (), arrays, problems)
    if problems:
        raise SpecError("the inputs do not match the tensor information:\n"
                        + "\n".join(f"  - {p}" for p in problems))
    return arrays


def _walk(info: TensorInfo, branch: _Branch, value, path: tuple, arrays: list,
          problems: list) -> None:
    items = _items_of(branch.kind, value, path, problems)
    if items is None:
        return
    for key, child in _ordered(branch):
        child_path = path + ((branch.kind, key),)
        if key not in items:
            problems.append(f"{_path_name(child_path)}: missing")
        elif isinstance(child, int):
            arrays[child] = _leaf_array(info.leaves[child], items[key], problems)
        else:
            _walk(info, child, items[key], child_path, arrays, problems)
    for key in items:
        if key not in branch.children:
            problems.append(f"{_path_name(path + ((branch.kind, key),))}: unexpected item "
                            "that the tensor information does not name")


def _items_of(kind: str, value, path: tuple, problems: list) -> dict | None:
    where = _path_name(path) if path else ("the positional inputs" if kind == "arg"
                                           else "the keyword inputs")
    if kind in ("kwarg", "dict"):
        if isinstance(value, Mapping):
            return dict(value)
        problems.append(f"{where}: expected a dict, got {type(value).__name__}")
    elif isinstance(value, (list, tuple)):
        return dict(enumerate(value))
    else:
        problems.append(f"{where}: expected a {_LEVEL_WORD[kind]}, got {type(value).__name__}")
    return None


def _leaf_array(leaf: TensorSpec, value, problems: list) -> np.ndarray | None:
    try:
        array = _as_numpy(value)
    except (TypeError, ValueError, RuntimeError) as e:
        problems.append(f"{leaf.name}: not an array ({type(value).__name__}: {e})")
        return None
    kind = "f" if array.dtype == ml_dtypes.bfloat16 else array.dtype.kind
    if kind not in _ARRAY_KINDS[leaf.dtype]:
        problems.append(f"{leaf.name}: dtype {array.dtype} does not fit {leaf.dtype}")
    elif array.ndim != leaf.shape.rank:
        problems.append(f"{leaf.name}: rank {array.ndim} (shape {tuple(array.shape)}), "
                        f"expected rank {leaf.shape.rank} ({leaf.shape.text()})")
    else:
        return array
    return None


def _as_numpy(value) -> np.ndarray:
    """A numpy array of an array-like; torch tensors without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            return value.float().numpy().astype(ml_dtypes.bfloat16)
        value = value.numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------- command line


def load_lines(lines: list[str] | None, file: str | None) -> list[str]:
    """The tensor information lines of the command line: LINE... or -f FILE (UTF-8)."""
    if lines and file:
        raise SpecError("give the tensor information either as lines or with -f FILE, not both")
    if lines:
        return list(lines)
    if not file:
        raise SpecError(f"{_EMPTY}, or give -f FILE")
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as e:
        raise SpecError(f"cannot read the tensor information file {file}: "
                        f"{e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SpecError(f"the tensor information file {file} is not UTF-8 text") from None
