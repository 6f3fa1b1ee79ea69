"""What the two TensorFlow formats (SavedModel, frozen graph) share.

TensorFlow and tf2onnx come with the `tf` extra and are imported only inside functions, so
`import accelflow.formats` works without them. tf2onnx 1.17 is the first release that runs with the
protobuf 7 that onnx 1.23 needs; its `from_graph_def` is the one public entry point both
formats use (a SavedModel is frozen to a GraphDef first, as tf2onnx's own CLI does).
"""

from __future__ import annotations

import logging
import os

from accelflow.core.errors import (
    ConversionError,
    ModelMismatchError,
    UnsupportedFormatError,
    first_line,
    missing_dependency,
)
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


# ---------------------------------------------------------------- code risks (issue 17)
# A TensorFlow graph is a program: running it may read and write the worker's files, call back
# into Python, or talk to the network. These are the operations that reach outside the model,
# scanned for in the parsed protobuf before TensorFlow loads or runs anything. It starts from
# `saved_model_cli scan`'s denylist (WriteFile, ReadFile, PrintV2) and adds, by what they do:
DENIED_OPS = frozenset({
    # files named by a tensor: read, write, list, map into memory
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
    # printing to a file (PrintV2's output_stream may be file://...)
    "PrintV2",
    # calls into the Python process (a function registered by the saving program)
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    # TF1 readers and tf.data sources/sinks that open files
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset",
    "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset", "SnapshotDataset", "SnapshotDatasetV2",
    "SnapshotDatasetReader", "SnapshotChunkDataset", "ListSnapshotChunksDataset", "SaveDataset", "SaveDatasetV2",
    "LoadDataset", "DistributedSave", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset", "CacheDataset", "CacheDatasetV2", "RecordInput",
    # tables, samplers and checkpoint remapping filled from a file named by a tensor or an attr
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "LoadAndRemapMatrix", "GenerateVocabRemapping",
    "FixedUnigramCandidateSampler", "Skipgram",
    # tensor dumps to a file (quantization calibration, DumpTensor)
    "CalibrationStatisticsSaver", "DumpTensor",
    # summary writers (an events file or an SQLite database)
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "ImportEvent",
    # debugger ops: their debug_urls (file://, grpc://) dump tensors out of the process
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2", "Copy", "CopyHost",
    # proto codecs whose descriptor_source may name a file
    "DecodeProtoV2", "EncodeProto",
    # the network: RPC and the tf.data service
    "RpcServer", "RpcClient", "RpcCall", "RpcServerStart", "RpcServerRegister", "RpcCheckStatus",
    "RpcGetValue", "RegisterDataset", "RegisterDatasetV2", "DataServiceDataset", "DataServiceDatasetV2",
    "DataServiceDatasetV3", "DataServiceDatasetV4",
})
# Checkpoint ops write and read files too; a SavedModel's own saver uses them (its variables are
# restored through them), so they are allowed there only: in the nodes and functions that only
# the saver (saver_def.save_tensor_name / restore_op_name) reaches.
SAVER_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
                       "DTensorRestoreV2"})


def parse_proto(message, path: str, what: str):
    """`message` (an empty TF proto) read from `path`. Parsing runs no operation."""
    import_tf()
    try:
        with open(path, "rb") as f:
            message.ParseFromString(f.read())
    except Exception as exc:  # DecodeError, and OSError for unreadable files
        raise UnsupportedFormatError(
            f"{path} looks like a TensorFlow {what} but is not a valid one ({first_line(exc)}). "
            "If it was truncated in transfer, upload it again."
        ) from exc
    return message


def graph_risks(graph_def, saver_def=None, roots: tuple[str, ...] = (), entry_functions: tuple[str, ...] = ()) -> list[str]:
    """Each denied operation in the graph and its function library, as "WriteFile op in function f".

    `saver_def` exempts the Save/Restore ops of the nodes and functions only its save and restore
    nodes reach. `roots` are node names something other than the saver runs (signature tensors,
    init ops); `entry_functions` are functions the loader calls by name (a SavedModel's object graph).
    """
    calls = _function_calls(graph_def.library)
    saver_nodes = _saver_only_nodes(graph_def, saver_def, roots)
    other = _reachable(calls, [f for n in graph_def.node if n.name not in saver_nodes for f in _node_calls(n, calls)]
                       + [f for f in entry_functions if f in calls])
    from_saver = _reachable(calls, [f for n in graph_def.node if n.name in saver_nodes for f in _node_calls(n, calls)])
    saver_functions = from_saver - other
    risks = [f"{n.op} op at node {n.name}" for n in graph_def.node
             if n.op in DENIED_OPS or (n.op in SAVER_OPS and n.name not in saver_nodes)]
    for function in graph_def.library.function:
        name = function.signature.name
        for op in dict.fromkeys(n.op for n in function.node_def):
            if op in DENIED_OPS or (op in SAVER_OPS and name not in saver_functions):
                risks.append(f"{op} op in function {name}")
    return risks


def _function_calls(library) -> dict[str, set[str]]:
    """Function name -> the functions its nodes call (by op name or through a func attr), with
    its registered gradient function (called when differentiated)."""
    names = {f.signature.name for f in library.function}
    calls = {f.signature.name: {c for n in f.node_def for c in _node_calls(n, names)}
             | {c for value in f.attr.values() for c in _attr_functions(value)} for f in library.function}
    for gradient in library.gradient:
        calls.setdefault(gradient.function_name, set()).add(gradient.gradient_func)
    return calls


def _node_calls(node, functions) -> set[str]:
    """The functions a node calls: its op when that names a function (TF1-style call), and every
    function an attr holds (PartitionedCall's f, While's cond and body, If's branches, ...)."""
    called = {c for value in node.attr.values() for c in _attr_functions(value)}
    if node.op in functions:
        called.add(node.op)
    return called


def _attr_functions(value) -> list[str]:
    """Function names an AttrValue holds, including those nested in the attrs of a func."""
    found = []
    funcs = list(value.list.func) + ([value.func] if value.HasField("func") else [])
    for func in funcs:
        found.append(func.name)
        found += [c for nested in func.attr.values() for c in _attr_functions(nested)]
    return found


def _reachable(calls: dict[str, set[str]], start: list[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += calls.get(name, ())
    return seen


def _saver_only_nodes(graph_def, saver_def, roots: tuple[str, ...]) -> set[str]:
    """The top-level nodes only the saver's save and restore nodes reach: what they read (their
    inputs, recursively) less what any other node or root reads too."""
    if saver_def is None:
        return set()
    inputs = {n.name: [_node_name(i) for i in n.input] for n in graph_def.node}
    saver = _ancestors(inputs, [_node_name(saver_def.save_tensor_name), _node_name(saver_def.restore_op_name)])
    others = [n for n in inputs if n not in saver] + [_node_name(r) for r in roots]
    return saver - _ancestors(inputs, others)


def _ancestors(inputs: dict[str, list[str]], start: list[str]) -> set[str]:
    seen, todo = set(), [n for n in start if n in inputs]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [i for i in inputs.get(name, ()) if i in inputs]
    return seen


def _node_name(tensor: str) -> str:
    """`node` of `node:0`, `^node` (a control input) or `node`."""
    return tensor.lstrip("^").split(":")[0]
