"""What the two TensorFlow formats (SavedModel, frozen graph) share.

TensorFlow and tf2onnx come with the `tf` extra and are imported only inside functions, so
`import accelflow.formats` works without them. tf2onnx 1.17 is the first release that runs with the
protobuf 7 that onnx 1.23 needs; its `from_graph_def` is the one public entry point both
formats use (a SavedModel is frozen to a GraphDef first, as tf2onnx's own CLI does).
"""

from __future__ import annotations

import logging
import os

from accelflow.core.errors import ConversionError, ModelMismatchError, first_line, missing_dependency
from accelflow.core.runner import thread_count

EXTRA = "tf"
OPSET = 17
_THREADS_SET: list[int] = []


def import_tf():
    """TensorFlow, quiet, with the thread count every runner shares."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise missing_dependency("tensorflow", EXTRA) from exc
    if not _THREADS_SET:
        _set_threads(tf, thread_count())
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def _set_threads(tf, threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # as ONNX Runtime's runners
    except RuntimeError:
        pass  # TensorFlow's runtime already started in this process; its setting stays
    _THREADS_SET.append(threads)


def import_tf2onnx():
    import_tf()
    try:
        import tf2onnx
        from tf2onnx import tf_loader
    except ImportError as exc:
        raise missing_dependency("tf2onnx", EXTRA) from exc
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx, tf_loader


def graph_to_onnx(graph_def, inputs: list[str], outputs: list[str], rename: dict[str, str], onnx_path: str) -> None:
    """Convert a frozen GraphDef with tf2onnx; `rename` maps TF tensor names to ONNX names."""
    tf2onnx, _ = import_tf2onnx()
    try:
        tf2onnx.convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, opset=OPSET,
            tensors_to_rename=rename, output_path=onnx_path,
        )
    except Exception as exc:  # tf2onnx raises many unrelated types
        raise ConversionError(
            f"converting the TensorFlow graph to ONNX failed: {first_line(exc)}. Operations "
            "without an ONNX equivalent are the usual cause; run with --debug for details."
        ) from exc


def set_input_shapes(onnx_path: str, spec, input_names: list[str]) -> None:
    """Write the tensor information's shapes on the ONNX inputs: fixed sizes as numbers,
    sizes that vary as named dimensions. tf2onnx leaves every unknown TF dimension anonymous,
    which keeps engines from specialising on the sizes the user declared fixed."""
    import onnx

    model = onnx.load(onnx_path)
    by_name = {i.name: i for i in model.graph.input}
    for leaf, name in zip(spec.leaves, input_names):
        dims = by_name[name].type.tensor_type.shape.dim
        dynamic = set(leaf.shape.dynamic_axes)
        for axis, dim in enumerate(dims):
            if axis in dynamic:
                dim.dim_param = f"{name}_dim{axis}"
            else:
                dim.dim_value = leaf.shape.sizes[0][axis]
    onnx.save(model, onnx_path)


def leaf_problems(leaf, where: str, dtype_name: str, dims: list | None) -> list[str]:
    """What does not fit between a tensor-information leaf and a TF tensor's dtype and shape.

    `dims` is the TF shape with None for unknown sizes, or None for an unknown rank.
    """
    problems = []
    wanted = "uint8" if leaf.dtype == "char" else leaf.dtype
    if dtype_name != wanted:
        problems.append(f"{leaf.name}: the model's {where} is {dtype_name}, tensor information says {leaf.dtype}")
    if dims is None:
        return problems
    if len(dims) != leaf.shape.rank:
        problems.append(f"{leaf.name}: the model's {where} has rank {len(dims)} "
                        f"({_shape_text(dims)}), tensor information has rank {leaf.shape.rank}")
        return problems
    for axis, (dim, sizes) in enumerate(zip(dims, zip(*leaf.shape.sizes))):
        if dim is not None and any(s != dim for s in sizes):
            problems.append(f"{leaf.name}: dimension {axis} of the model's {where} is fixed at {dim} "
                            f"({_shape_text(dims)}), tensor information allows {'/'.join(map(str, sorted(set(sizes))))}")
    return problems


def raise_problems(problems: list[str], what: str) -> None:
    if problems:
        raise ModelMismatchError(f"tensor information does not match {what}:\n  " + "\n  ".join(problems))


def _shape_text(dims: list) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def match_names(spec, model_names: list[str], what: str) -> list[str]:
    """The model input each tensor-information leaf feeds: by name, or input_N by position."""
    leaves = [leaf.name for leaf in spec.leaves]
    nested = [n for n in leaves if "[" in n or "(" in n]
    if nested:
        raise ModelMismatchError(
            f"{what} takes flat tensors, but tensor information names nested elements "
            f"({', '.join(nested)}). Name each input by itself: {', '.join(model_names)}."
        )
    if set(leaves) <= set(model_names):
        missing = [n for n in model_names if n not in leaves]
        if missing:
            raise ModelMismatchError(f"tensor information has no line for {what}'s input(s) "
                                     f"{', '.join(missing)}; describe every input.")
        return leaves
    if spec.root == "args" and len(leaves) == len(model_names):
        return list(model_names)
    raise ModelMismatchError(
        f"tensor information names {', '.join(leaves)} but {what}'s inputs are "
        f"{', '.join(model_names)}. Name each input as the model does, or use input_0, "
        f"input_1, ... in this order."
    )
