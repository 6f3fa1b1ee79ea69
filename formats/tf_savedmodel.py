"""TensorFlow SavedModel folders (`saved_model.pb` + `variables/`), one signature at a time.

The signature's inputs are named by tensor information as dict keys (`image:float(...)`),
its outputs keep their keys. The baseline calls the signature in TensorFlow.
"""

from __future__ import annotations

import os

from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line
from accelflow.core.modelio import ModelIO
from accelflow.formats import tensorflow_common as tfc

NAME = "savedmodel"
OPTIONS = ("signature",)
DEFAULT_SIGNATURE = "serving_default"
PB_FILE = "saved_model.pb"
# SavedModel proto: saved_model_schema_version = 1 (field 1), then meta_graphs (field 2).
_PB_HEAD = b"\x08\x01\x12"


def detect(path: str) -> bool:
    """A folder holding saved_model.pb, or that file itself (found while scanning a folder)."""
    if os.path.isdir(path):
        return _is_saved_model_pb(os.path.join(path, PB_FILE))
    return os.path.basename(path) == PB_FILE and _is_saved_model_pb(path)


def code_risks(path: str) -> list[str]:
    """The operations of every meta graph that reach outside the model (files, Python, network),
    read from saved_model.pb before TensorFlow loads anything; the saver's own checkpoint ops are
    allowed (tensorflow_common.graph_risks)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = tfc.parse_proto(saved_model_pb2.SavedModel(), os.path.join(model_dir(path), PB_FILE), "SavedModel")
    risks = []
    for meta in saved.meta_graphs:
        saver = meta.saver_def if meta.HasField("saver_def") else None
        found = tfc.graph_risks(meta.graph_def, saver, _run_nodes(meta), _loaded_functions(meta.object_graph_def))
        where = f" (meta graph tagged {','.join(meta.meta_info_def.tags)})" if len(saved.meta_graphs) > 1 else ""
        risks += [risk + where for risk in found]
    return list(dict.fromkeys(risks))


def _run_nodes(meta) -> tuple[str, ...]:
    """Nodes the loader runs besides the saver's: every signature's tensors (the init op's
    included) and the node lists of the collections (TF1 main_op, table initializers, ...)."""
    tensors = [info.name for sig in meta.signature_def.values()
               for info in (*sig.inputs.values(), *sig.outputs.values())]
    listed = [name for collection in meta.collection_def.values() for name in collection.node_list.value]
    return tuple(tensors + listed)


def _loaded_functions(object_graph) -> tuple[str, ...]:
    """Functions TF2's loader restores by name: the object graph's concrete functions (signatures,
    methods, resource initializers); any of them may be called once loaded."""
    names = list(object_graph.concrete_functions)
    for node in object_graph.nodes:
        names += list(node.function.concrete_functions)
        if node.HasField("bare_concrete_function"):
            names.append(node.bare_concrete_function.concrete_function_name)
    return tuple(names)


def _is_saved_model_pb(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(_PB_HEAD)) == _PB_HEAD


def model_dir(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(path)


def load(path: str):
    """The loaded SavedModel (an AutoTrackable whose `.signatures` are callable)."""
    tf = tfc.import_tf()
    try:
        return tf.saved_model.load(model_dir(path))
    except Exception as exc:  # TF raises OSError, ValueError, NotFoundError, ...
        raise UnsupportedFormatError(
            f"{model_dir(path)} looks like a TensorFlow SavedModel but failed to load: "
            f"{first_line(exc)}. Check that saved_model.pb and the variables/ folder are both "
            "complete, and that it was saved by a TensorFlow no newer than the one installed."
        ) from exc


def find_signature(loaded, name: str | None):
    """The signature's concrete function; an unknown name lists the signatures there are."""
    name = name or DEFAULT_SIGNATURE
    found = sorted(loaded.signatures.keys())
    if name not in loaded.signatures:
        listed = ", ".join(found) if found else "none (save it with a signature)"
        raise ModelMismatchError(f"the SavedModel has no signature {name!r}; its signatures: "
                                 f"{listed}. Choose one with --signature NAME.")
    return loaded.signatures[name]


def input_specs(fn) -> dict:
    """Signature input key -> tf.TensorSpec, in the signature's (sorted) key order."""
    return dict(sorted(fn.structured_input_signature[1].items()))


def check_inputs(fn, spec, signature_name: str) -> list[str]:
    """The signature input key each tensor-information leaf feeds, checked for dtype and shape."""
    specs = input_specs(fn)
    what = f"signature {signature_name!r}"
    keys = tfc.match_names(spec, list(specs), what)
    problems = [p for leaf, key in zip(spec.leaves, keys)
                for p in tfc.leaf_problems(leaf, f"input {key}", specs[key].dtype.name, _dims(specs[key]))]
    tfc.raise_problems(problems, f"the SavedModel's {what}")
    return keys


def _dims(tensor_spec) -> list | None:
    shape = tensor_spec.shape
    return None if shape.rank is None else shape.as_list()


def to_onnx(path: str, spec, out_dir: str, example: list, signature: str | None = None) -> tuple[str, ModelIO]:
    """Freeze the signature to a GraphDef and convert it; ONNX names are the signature's keys."""
    name = signature or DEFAULT_SIGNATURE
    fn = find_signature(load(path), name)
    keys = check_inputs(fn, spec, name)
    output_keys = sorted(fn.structured_outputs)
    _, tf_loader = tfc.import_tf2onnx()
    graph_def, inputs, outputs, rename = _frozen(tf_loader, path, name)
    onnx_path = os.path.join(out_dir, "model.onnx")
    tfc.graph_to_onnx(graph_def, inputs, outputs, rename, onnx_path)
    tfc.set_input_shapes(onnx_path, spec, keys)
    structure = {"kind": "dict", "items": {k: {"kind": "tensor", "index": i} for i, k in enumerate(output_keys)}}
    return onnx_path, ModelIO(keys, output_keys, structure, source={"signature": name})


def _frozen(tf_loader, path: str, name: str):
    """(graph_def, input tensor names, output tensor names, rename to signature keys)."""
    try:
        graph_def, inputs, outputs, rename = tf_loader.from_saved_model(
            model_dir(path), None, None, tag=["serve"], signatures=[name], return_tensors_to_rename=True,
        )
    except Exception as exc:
        raise UnsupportedFormatError(
            f"freezing signature {name!r} of {model_dir(path)} failed: {first_line(exc)}."
        ) from exc
    return graph_def, inputs, outputs, rename


class SavedModelBaseline:
    """The signature called in TensorFlow (eager), with the shared thread count."""

    def __init__(self, path: str, io: ModelIO):
        self.tf = tfc.import_tf()
        self.loaded = load(path)  # keeps the signature's variables alive
        name = io.source.get("signature", DEFAULT_SIGNATURE)
        self.fn = find_signature(self.loaded, name)
        self.io = io
        self.label = f"tensorflow {self.tf.__version__} (SavedModel, signature {name})"

    def prepare(self, arrays):
        return {key: self.tf.constant(a) for key, a in zip(self.io.input_names, arrays)}

    def run(self, feed):
        return self.fn(**feed)

    def outputs(self, raw):
        return [raw[key].numpy() for key in self.io.output_names]


def baseline_runner(path: str, spec, io: ModelIO, threads: int) -> SavedModelBaseline:
    return SavedModelBaseline(path, io)
