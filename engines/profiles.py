"""TensorRT optimization profiles from the tensor information.

- fixed shapes: one profile, min = opt = max;
- a continuous range (`1*128,8*128`): one profile, min and max from the range, and opt (the
  shape TensorRT tunes its kernels for) at the middle of each dynamic axis: ShapeSpec.mid,
  the same "mid" shape point the accuracy check and the benchmark use. The middle keeps
  both ends within a factor of two of the tuned size along each axis; a workload that
  mostly runs at one size should say so:
  ACCELFLOW_OPT_SHAPES="input_ids=4*128;attention_mask=4*128" (element names as in the
  tensor information, sizes inside the range) overrides opt, per element;
- a discrete list (`[1*3*224*224,8*3*224*224]`): one profile per listed size, exact
  (min = opt = max), each of the other elements' ranges spanning min..max in every profile.
  With several listed elements, profile k takes the k-th size of each (as the shape points
  do; shorter lists repeat their last size).

At run time the runner picks the first profile that holds the inputs' shapes.
"""

from __future__ import annotations

import os

from accelflow.core.errors import SpecError

OPT_ENV = "ACCELFLOW_OPT_SHAPES"
Shape = tuple[int, ...]


def for_spec(spec, io, overrides: dict[str, Shape] | None = None) -> list[dict[str, tuple[Shape, Shape, Shape]]]:
    """[{input name: (min, opt, max)}, ...] for the engine's inputs (ModelIO names)."""
    overrides = opt_overrides(spec) if overrides is None else overrides
    choices = [leaf for leaf in spec.leaves if leaf.shape.kind == "choices"]
    count = max((len(leaf.shape.sizes) for leaf in choices), default=1)
    return [
        {name: _bounds(leaf, k, overrides.get(leaf.name)) for leaf, name in zip(spec.leaves, io.input_names)}
        for k in range(count)
    ]


def _bounds(leaf, k: int, opt: Shape | None) -> tuple[Shape, Shape, Shape]:
    shape = leaf.shape
    if shape.kind == "choices":
        size = shape.sizes[min(k, len(shape.sizes) - 1)]
        return size, size, size
    if shape.kind == "fixed":
        return shape.sizes[0], shape.sizes[0], shape.sizes[0]
    return shape.min, opt or shape.mid, shape.max


def opt_overrides(spec, text: str | None = None) -> dict[str, Shape]:
    """Parse ACCELFLOW_OPT_SHAPES (or `text`), checked against the ranges."""
    text = os.environ.get(OPT_ENV, "") if text is None else text
    by_name = {leaf.name: leaf for leaf in spec.leaves}
    result = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, size = item.partition("=")
        leaf = by_name.get(name.strip())
        if leaf is None or leaf.shape.kind != "range":
            ranged = [n for n, leaf in by_name.items() if leaf.shape.kind == "range"]
            raise SpecError(f"{OPT_ENV}: {name.strip()!r} is not an element with a size range "
                            f"(those are: {', '.join(ranged) or 'none'}).")
        try:
            dims = tuple(int(d) for d in size.strip().split("*"))
        except ValueError:
            raise SpecError(f"{OPT_ENV}: {item!r}: give NAME=D1*D2*..., e.g. {name.strip()}="
                            f"{'*'.join(map(str, leaf.shape.mid))}.") from None
        lo, hi = leaf.shape.min, leaf.shape.max
        if len(dims) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, dims, hi)):
            raise SpecError(f"{OPT_ENV}: {item!r} is outside {name.strip()}'s range {leaf.shape.text()}.")
        result[name.strip()] = dims
    return result


def profile_index(profiles: list[dict], shapes: dict[str, Shape]) -> int:
    """The first profile whose bounds hold every input's shape."""
    for index, profile in enumerate(profiles):
        if all(_inside(shapes[name], lo, hi) for name, (lo, _, hi) in profile.items() if name in shapes):
            return index
    listed = "; ".join(", ".join(f"{n} {list(lo)}..{list(hi)}" for n, (lo, _, hi) in p.items()) for p in profiles)
    raise SpecError(f"inputs of shapes {shapes} fit none of the engine's optimization profiles ({listed}); "
                    "the engine was built for the sizes of the tensor information.")


def _inside(shape, lo, hi) -> bool:
    return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))


def to_json(profiles: list[dict]) -> list[dict]:
    return [{name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in p.items()}
            for p in profiles]


def from_json(data: list[dict]) -> list[dict]:
    return [{name: (tuple(b["min"]), tuple(b["opt"]), tuple(b["max"])) for name, b in p.items()} for p in data]
