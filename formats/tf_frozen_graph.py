"""TensorFlow frozen graphs: a binary GraphDef (.pb) with variables folded into constants.

Inputs are the graph's placeholders, named by tensor information (`x:float(...)` feeds
placeholder `x`, tensor `x:0`). Outputs are the graph's sinks (nodes nothing else reads)
unless --outputs names them. The baseline runs the graph, pruned to those tensors, in TensorFlow.
"""

from __future__ import annotations

import os

from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line
from accelflow.core.modelio import ModelIO, flat_structure
from accelflow.formats import tensorflow_common as tfc

NAME = "frozen-graph"
OPTIONS = ("outputs",)
# Operations that end a branch without being a model output.
_NOT_OUTPUTS = {"NoOp", "Placeholder", "Const", "Assert", "SaveV2", "RestoreV2", "VarHandleOp"}
_HEAD_BYTES = 1024


def detect(path: str) -> bool:
    """GraphDef: field 1 (node) holding a NodeDef whose name (field 1) and op (field 2) are text."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    try:
        at = _skip_varint(head, 1) if head[:1] == b"\x0a" else None
        if at is None or head[at] != 0x0A:
            return False
        name, at = _text_field(head, at + 1)
        if head[at] != 0x12:
            return False
        op, _ = _text_field(head, at + 1)
    except IndexError:
        return False
    return bool(name) and op.replace("_", "").isalnum()


def code_risks(path: str) -> list[str]:
    """The graph's operations that reach outside the model (files, Python, network), read from the
    parsed GraphDef before anything runs. A frozen graph has no saver: its checkpoint ops count too."""
    return tfc.graph_risks(load(path))


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80 or shift > 63:
            return value, at


def _skip_varint(data: bytes, at: int) -> int:
    return _varint(data, at)[1]


def _text_field(data: bytes, at: int) -> tuple[str, int]:
    size, at = _varint(data, at)
    raw = data[at:at + size]
    if len(raw) != size or not raw.isascii() or not raw.decode().isprintable():
        raise IndexError("not text")
    return raw.decode(), at + size


def load(path: str):
    """The parsed GraphDef."""
    tf = tfc.import_tf()
    graph_def = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except Exception as exc:  # DecodeError, and OSError for unreadable files
        raise UnsupportedFormatError(
            f"{path} looks like a TensorFlow frozen graph but is not a valid GraphDef "
            f"({first_line(exc)}). If it was truncated in transfer, upload it again."
        ) from exc
    _check_complete(graph_def, path)
    return graph_def


def _check_complete(graph_def, path: str) -> None:
    """A file cut between two nodes parses; its last nodes' inputs are then missing."""
    names = {n.name for n in graph_def.node}
    dangling = sorted({i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input} - names)
    if not names or dangling:
        what = f"nodes read {', '.join(dangling[:5])}, which are not in it" if dangling else "it has no nodes"
        raise UnsupportedFormatError(f"{path} is an incomplete frozen graph: {what}. If it was "
                                     "truncated in transfer, upload it again.")


def placeholders(graph_def) -> dict[str, tuple[str, list | None]]:
    """Placeholder name -> (dtype name, dims with None for unknown, or None for unknown rank)."""
    tf = tfc.import_tf()
    found = {}
    for node in graph_def.node:
        if node.op == "Placeholder":
            shape = node.attr["shape"].shape
            dims = None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]
            found[node.name] = (tf.as_dtype(node.attr["dtype"].type).name, dims)
    return found


def sinks(graph_def) -> list[str]:
    """Nodes whose outputs nothing else reads: the graph's natural outputs."""
    consumed = {i.lstrip("^").split(":")[0] for node in graph_def.node for i in node.input}
    return [n.name for n in graph_def.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]


def output_tensors(graph_def, names: list[str] | None) -> list[str]:
    """TF tensor names of the outputs: the sinks, or those named (`node` or `node:N`)."""
    if not names:
        found = sinks(graph_def)
        if not found:
            raise ModelMismatchError("the frozen graph has no output node; name its outputs with --outputs NODE.")
        return [f"{n}:0" for n in found]
    nodes = {n.name for n in graph_def.node}
    unknown = [n for n in names if n.split(":")[0] not in nodes]
    if unknown:
        candidates = ", ".join(sinks(graph_def)[:20]) or "none"
        raise ModelMismatchError(f"--outputs {', '.join(unknown)}: no such node in the frozen graph. "
                                 f"Its output candidates (nodes nothing reads): {candidates}.")
    return [n if ":" in n else f"{n}:0" for n in names]


def check_inputs(graph_def, spec) -> list[str]:
    """The placeholder each tensor-information leaf feeds, checked for dtype and shape."""
    found = placeholders(graph_def)
    names = tfc.match_names(spec, list(found), "the frozen graph")
    problems = [p for leaf, name in zip(spec.leaves, names)
                for p in tfc.leaf_problems(leaf, f"placeholder {name}", *found[name])]
    tfc.raise_problems(problems, "the frozen graph's placeholders")
    return names


def _onnx_output_name(tensor: str) -> str:
    return tensor[:-2] if tensor.endswith(":0") else tensor.replace(":", "_")


def to_onnx(path: str, spec, out_dir: str, example: list, outputs: list[str] | None = None) -> tuple[str, ModelIO]:
    graph_def = load(path)
    inputs = check_inputs(graph_def, spec)
    out_tensors = output_tensors(graph_def, outputs)
    out_names = [_onnx_output_name(t) for t in out_tensors]
    rename = {f"{n}:0": n for n in inputs} | dict(zip(out_tensors, out_names))
    onnx_path = os.path.join(out_dir, "model.onnx")
    tfc.graph_to_onnx(graph_def, [f"{n}:0" for n in inputs], out_tensors, rename, onnx_path)
    tfc.set_input_shapes(onnx_path, spec, inputs)
    return onnx_path, ModelIO(inputs, out_names, flat_structure(len(out_names)),
                              source={"input_tensors": [f"{n}:0" for n in inputs], "output_tensors": out_tensors})


class FrozenGraphBaseline:
    """The graph imported into a TF function pruned to the inputs and outputs (TF's own way
    of running a frozen graph in TF 2)."""

    def __init__(self, path: str, io: ModelIO):
        self.tf = tf = tfc.import_tf()
        graph_def = load(path)
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        element = wrapped.graph.as_graph_element
        self.fn = wrapped.prune([element(t) for t in io.source["input_tensors"]],
                                [element(t) for t in io.source["output_tensors"]])
        self.label = f"tensorflow {tf.__version__} (frozen graph)"

    def prepare(self, arrays):
        return [self.tf.constant(a) for a in arrays]

    def run(self, feed):
        return self.fn(*feed)

    def outputs(self, raw):
        return [t.numpy() for t in raw]


def baseline_runner(path: str, spec, io: ModelIO, threads: int) -> FrozenGraphBaseline:
    return FrozenGraphBaseline(path, io)
