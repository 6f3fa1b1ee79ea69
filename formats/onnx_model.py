"""ONNX models (with or without external data): detection, checks against tensor information."""

from __future__ import annotations

import os

import numpy as np
from accelflow.core import links
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line, missing_dependency
from accelflow.core.modelio import ModelIO, flat_structure

NAME = "onnx"
DEFAULT_OPSET = 17

# ONNX TensorProto element types -> canonical tensor-information dtypes.
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 16: "bfloat16",
}
# ModelProto fields that may follow ir_version (field 1) at the start of a serialized model.
_MODEL_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82}


def detect(path: str) -> bool:
    """A serialized ModelProto starts with ir_version (field 1, varint) then another model field.

    IR versions start at 3 (ONNX 1.0); a TF SavedModel's saved_model.pb starts 08 01 12.
    """
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 3 or head[0] != 0x08 or not 3 <= head[1] <= 20:
        return False
    return head[2] in _MODEL_FIELD_TAGS


def code_risks(path: str) -> list[str]:
    """What in the model at `path` would run its author's code when loaded: none.

    An ONNX graph is data: its operators are ONNX Runtime's and OpenVINO's own kernels. Its
    external data is checked here too (this runs before anything reads the model, at preflight,
    fetch and `repo add`): a location outside the model's folder is refused, trusted or not.
    """
    if detect(path):
        companion_files(path)
    return []


def load(path: str):
    """The checked ModelProto (external data resolved from the model's folder)."""
    onnx = _onnx()
    companion_files(path)  # external data outside the model's folder is never read
    try:
        onnx.checker.check_model(path)
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types for broken files
        raise UnsupportedFormatError(
            f"{path} is not a valid ONNX model ({first_line(exc)}). If it was truncated "
            "in transfer, upload it again; if it uses external data, keep the data files "
            "beside it."
        ) from exc


def check_inputs(path: str, spec) -> ModelIO:
    """Match tensor information to the graph's inputs by name, or by position for input_N."""
    graph = load(path).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    names = _match_names(spec, [i.name for i in inputs])
    by_name = {i.name: i for i in inputs}
    problems = [p for leaf, n in zip(spec.leaves, names) for p in _leaf_problems(leaf, by_name[n])]
    if problems:
        raise ModelMismatchError(
            "tensor information does not match the ONNX model's inputs:\n  " + "\n  ".join(problems)
        )
    outputs = [o.name for o in graph.output]
    return ModelIO(input_names=names, output_names=outputs, output_structure=flat_structure(len(outputs)))


def _match_names(spec, model_names: list[str]) -> list[str]:
    leaves = [leaf.name for leaf in spec.leaves]
    if set(leaves) == set(model_names):
        return leaves
    positional = spec.root == "args" and all("[" not in n and "(" not in n for n in leaves)
    if positional and len(leaves) == len(model_names):
        return list(model_names)
    raise ModelMismatchError(
        f"tensor information names {', '.join(leaves)} but the ONNX model's inputs are "
        f"{', '.join(model_names)}. Name each input as the model does (for example "
        f"{model_names[0] if model_names else 'input'}:float(...)), or use input_0, input_1, ... "
        "in the model's input order."
    )


def _leaf_problems(leaf, value_info) -> list[str]:
    tensor_type = value_info.type.tensor_type
    dtype = _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx type {tensor_type.elem_type}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    wanted = "uint8" if leaf.dtype == "char" else leaf.dtype
    problems = []
    if dtype != wanted:
        problems.append(f"{leaf.name}: the model takes {dtype}, tensor information says {leaf.dtype}")
    if tensor_type.HasField("shape") and len(dims) != leaf.shape.rank:
        problems.append(f"{leaf.name}: the model takes rank {len(dims)}, tensor information gives rank {leaf.shape.rank}")
        return problems
    for axis, dim in enumerate(dims):
        sizes = {size[axis] for size in leaf.shape.sizes}
        if dim is not None and dim > 0 and sizes != {dim}:
            problems.append(
                f"{leaf.name}: axis {axis} is fixed at {dim} in the model, tensor information "
                f"gives {'/'.join(map(str, sorted(sizes)))}"
            )
    return problems


def to_onnx(path: str, spec, out_dir: str) -> tuple[str, ModelIO]:
    """An ONNX model is its own ONNX form: checked, not copied."""
    return path, check_inputs(path, spec)


class OrtRunner:
    """An ONNX model in an ONNX Runtime session (CPU unless `providers` says otherwise) with
    `threads` intra-op threads.

    `optimize=True` is ONNX Runtime's default (ORT_ENABLE_ALL at load); a graph that was
    already optimized offline loads with optimizations off, which only saves start-up time.
    `config` holds session config entries (such as "session.intra_op.allow_spinning": "0");
    none keeps ONNX Runtime's defaults.
    """

    def __init__(self, path: str, io: ModelIO, threads: int, optimize: bool = True, providers: list | None = None,
                 config: dict[str, str] | None = None):
        ort = _ort()
        options = session_options(threads, config)
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
        self.io = io
        self.label = f"onnxruntime {ort.__version__}"
        self._types = {i.name: ort_numpy_type(i.type) for i in self.session.get_inputs()}

    def prepare(self, arrays):
        return {n: np.ascontiguousarray(a, dtype=self._types[n])
                for n, a in zip(self.io.input_names, arrays) if n in self._types}

    def run(self, feed):
        return self.session.run(self.io.output_names, feed)

    def outputs(self, raw):
        return [np.asarray(r) for r in raw]


def session_options(threads: int, config: dict[str, str] | None = None):
    """Session options with the thread count every runner shares, quiet logs, and `config`'s
    session config entries (key -> string value, as ONNX Runtime takes them)."""
    options = _ort().SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, str(value))
    return options


def baseline_runner(path: str, spec, io: ModelIO, threads: int) -> OrtRunner:
    """The original ONNX model in ONNX Runtime with default settings (same thread count)."""
    return OrtRunner(path, io, threads)


def ort_numpy_type(ort_type: str):
    """The numpy dtype for an ONNX Runtime type string such as 'tensor(float)'."""
    import ml_dtypes

    table = {
        "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
        "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
        "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
        "tensor(bfloat16)": ml_dtypes.bfloat16,
    }
    return table.get(ort_type, np.float32)


def needs_external_data(path: str, limit: int = 1 << 30) -> bool:
    """True when a model is large or already keeps weights outside the .onnx file."""
    if os.path.getsize(path) > limit:
        return True
    graph = _onnx().load(path, load_external_data=False).graph
    return any(t.data_location == 1 for t in graph.initializer)  # TensorProto.EXTERNAL


def count_ops(path: str, op_types: tuple[str, ...]) -> int:
    """How many nodes of these operator types the graph holds (subgraphs not included)."""
    graph = _onnx().load(path, load_external_data=False).graph
    return sum(1 for node in graph.node if node.op_type in op_types)


def companion_files(path: str) -> list[str]:
    """External-data files an ONNX model refers to (empty for other formats), as paths under the
    model's folder that keep the graph's relative locations (`weights/w.bin` stays in `weights/`).

    Refused (UnsupportedFormatError) when a location is absolute, climbs out of the folder with
    `..`, or is a symbolic link whose target lies outside it: the data would be read from, and
    copied with the model from, anywhere on the machine (say ~/.aws/credentials). A link to a
    file inside the folder is refused too, with its own message: onnx's checker refuses every
    link in external data, and would otherwise fail later, less clearly.
    """
    if not detect(path):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    found = []
    for tensor, location in _external_locations(path):
        file = _external_path(path, folder, tensor, location)
        real = links.resolved_inside(folder, file, UnsupportedFormatError)
        link = links.outermost_link(folder, file)
        if link:  # inside the folder, but onnx's checker refuses any link: say so now, clearly
            raise UnsupportedFormatError(
                f"{link} is a symbolic link to {real}: ONNX reads external data only from regular files. "
                "Copy the real file in place of the link.")
        found.append(file)
    return sorted(set(found))


def _external_locations(path: str) -> list[tuple[str, str]]:
    """(tensor name, location) of each initializer stored outside the .onnx file, subgraphs included."""
    onnx = _onnx()
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - not readable: load() and check_inputs() say why, with advice
        return []
    return [(t.name, e.value) for t in _initializers(onnx, model.graph) if t.data_location == 1
            for e in t.external_data if e.key == "location"]


def _initializers(onnx, graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _initializers(onnx, sub)


def _external_path(path: str, folder: str, tensor: str, location: str) -> str:
    full = os.path.normpath(os.path.join(folder, location))
    if os.path.isabs(location) or not links.inside(full, folder) or full == folder:
        raise UnsupportedFormatError(
            f"{path}: tensor {tensor!r} keeps its data at {location!r}, outside the model's folder {folder}; "
            "accelflow reads external data only from files beside the model or in its subfolders. "
            "Save the model with relative locations (onnx.save_model(..., location='weights.bin')).")
    if not os.path.lexists(full):
        raise UnsupportedFormatError(
            f"{path}: tensor {tensor!r} keeps its data in {location!r}, which is missing from {folder}; "
            "keep the external data files beside the model, in the folders the model names.")
    return full


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise missing_dependency("onnx") from exc
    return onnx


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_dependency("onnxruntime") from exc
    return onnxruntime
