"""How a model's nested inputs and outputs map to the flat, named tensors of its ONNX graph."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ModelIO:
    """The ONNX-side names of a model's inputs and outputs, and the outputs' nesting.

    `input_names[i]` is the ONNX input fed by tensor-information leaf i; an input the
    exporter dropped because the model never reads it is still listed (engines skip it).
    `output_structure` is a tree of {"kind": "tensor", "index": i} leaves inside
    {"kind": "list"|"tuple", "items": [...]} or {"kind": "dict", "items": {key: ...}} nodes.
    """

    input_names: list[str]
    output_names: list[str]
    output_structure: dict[str, Any] = field(default_factory=dict)
    # What the baseline needs to run the original, in its framework's own names (a
    # SavedModel's signature, a frozen graph's tensor names).
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelIO":
        return cls(data["input_names"], data["output_names"], data.get("output_structure", {}),
                   data.get("source", {}))


def onnx_name(element: str) -> str:
    """A plain identifier for an ONNX value from an element name: `input_0[image]` -> `input_0_image`."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", element).strip("_")
    return name or "input"


def unique_onnx_names(elements: list[str]) -> list[str]:
    names, seen = [], set()
    for element in elements:
        base = name = onnx_name(element)
        n = 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def flat_structure(count: int) -> dict[str, Any]:
    """The output structure of a model returning a plain list of `count` tensors."""
    return {"kind": "list", "items": [{"kind": "tensor", "index": i} for i in range(count)]}


def describe_structure(value: Any, is_leaf, counter: list[int] | None = None) -> dict[str, Any]:
    """The structure tree of a nested output, numbering leaves in flatten order."""
    counter = [0] if counter is None else counter
    if is_leaf(value):
        counter[0] += 1
        return {"kind": "tensor", "index": counter[0] - 1}
    if isinstance(value, dict):
        items = {str(k): describe_structure(v, is_leaf, counter) for k, v in value.items()}
        return {"kind": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {"kind": kind, "items": [describe_structure(v, is_leaf, counter) for v in value]}
    raise TypeError(f"unsupported output of type {type(value).__name__}")


def flatten_value(value: Any, is_leaf) -> list[Any]:
    """The leaves of a nested list/tuple/dict value, in the order describe_structure numbers them."""
    if is_leaf(value):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [leaf for item in items for leaf in flatten_value(item, is_leaf)]


def rebuild(structure: dict[str, Any], leaves: list[Any]) -> Any:
    """The nested value described by `structure`, filled with `leaves`."""
    kind = structure["kind"]
    if kind == "tensor":
        return leaves[structure["index"]]
    if kind == "dict":
        return {k: rebuild(v, leaves) for k, v in structure["items"].items()}
    items = [rebuild(v, leaves) for v in structure["items"]]
    return tuple(items) if kind == "tuple" else items
