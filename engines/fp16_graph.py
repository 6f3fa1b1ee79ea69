"""An ONNX graph converted to FP16 inside, with its inputs' and outputs' types kept.

TensorRT 10.12 deprecated and TensorRT 11 removed the FP16 builder flag: a strongly typed
network computes in the types its graph says, so the FP16 level is this graph (ONNX Runtime's
CUDA provider runs the same graph). The pass, schema-driven rather than by an op list:

- each node of the default ONNX domain computes in FP16 when every float32 input it takes
  is of a type variable that allows tensor(float16) (so `Resize`'s scales, fixed float32 by
  the schema, stay float32); nodes of other domains, nodes with subgraphs (If, Loop, Scan)
  and the op types in `keep_fp32` stay float32;
- float32 weights used only by FP16 nodes are stored as FP16 (values beyond FP16's range
  clipped to +-65504, tiny non-zero values kept at the smallest subnormal rather than
  flushed to 0, so an epsilon such as 1e-12 does not vanish); Constant / ConstantOfShape
  values and `to` / `dtype` attributes asking for float32 inside FP16 nodes become FP16;
- a Cast is inserted wherever a tensor crosses between the FP16 and float32 parts, once per
  tensor and direction; graph inputs stay float32 (a Cast follows them) and every float32
  graph output gets a final Cast back, under its original name.

`SENSITIVE_OPS` are the operations known to lose accuracy in FP16 (large sums, exponentials,
normalisation statistics, divisions by small numbers). The FP16 level first builds with
none kept; when that fails the accuracy check (`build_with_fallback`), it builds again
with these kept in float32 and records the fallback in the engine configuration.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Callable

import numpy as np

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
F16_MAX = 65504.0
F16_TINY = 2.0**-24  # smallest positive subnormal
SENSITIVE_OPS = frozenset({
    "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd", "CumSum",
    "Pow", "Exp", "Log", "Sqrt", "Reciprocal", "Div", "Softmax", "LogSoftmax", "Erf",
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
})
FP16_FILE = "model_fp16.onnx"
_EXTERNAL_LIMIT = 1_800_000_000  # protobuf cannot serialize 2 GB


def convert_file(src: str, dst: str, keep_fp32: frozenset[str] | set[str] = frozenset()) -> dict:
    """Write the FP16 graph of `src` to `dst`; returns what was converted."""
    import onnx

    model = onnx.load(src)
    converted, stats = convert(model, keep_fp32)
    large = converted.ByteSize() > _EXTERNAL_LIMIT if _fits_protobuf(converted) else True
    onnx.save(converted, dst, save_as_external_data=large,
              location=os.path.basename(dst) + ".data" if large else None)
    return stats


def _fits_protobuf(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # noqa: BLE001 - protobuf refuses > 2 GB messages
        return False


def convert(model, keep_fp32: frozenset[str] | set[str] = frozenset()):
    """(the FP16 ModelProto, stats); `model` is not modified."""
    import onnx

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    inferred = _infer(model_copy)
    return _Pass(inferred, frozenset(keep_fp32)).run()


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - models > 2 GB or custom ops: types of what is known
        return model


class _Pass:
    def __init__(self, model, keep_fp32: frozenset[str]):
        self.model, self.graph, self.keep = model, model.graph, keep_fp32
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.types = _tensor_types(self.graph)
        self.graph_inputs = {i.name for i in self.graph.input}
        self.inits = {t.name: t for t in self.graph.initializer if t.name not in self.graph_inputs}
        self.casts: dict[tuple[str, int], str] = {}
        self.new_casts: list = []

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == FLOAT

    def run(self):
        nodes = list(self.graph.node)
        fp16 = {id(n): self._fp16_capable(n) for n in nodes}
        home = self._homes(nodes, fp16)
        out_renames = self._rename_fp16_outputs(nodes, home)
        emitted = []
        for node in nodes:
            self._retype_inputs(node, fp16[id(node)], home)
            if fp16[id(node)]:
                _retype_attributes(node)
            emitted.extend(self.new_casts)
            self.new_casts = []
            emitted.append(node)
        for internal, original in out_renames:
            emitted.append(_cast_node(internal, original, FLOAT))
        del self.graph.node[:]
        self.graph.node.extend(emitted)
        self._convert_initializers(home)
        del self.graph.value_info[:]  # stale float32 types; runtimes infer them again
        count = sum(1 for n in nodes if fp16[id(n)])
        kept = Counter(n.op_type for n in nodes if not fp16[id(n)] and self._has_float_io(n))
        return self.model, {"nodes": len(nodes), "fp16_nodes": count, "fp32_nodes": dict(sorted(kept.items())),
                            "casts": len(self.casts) + len(out_renames), "kept_fp32_ops": sorted(self.keep)}

    # -- which nodes compute in FP16

    def _has_float_io(self, node) -> bool:
        return any(self.is_float(n) for n in list(node.input) + list(node.output))

    def _fp16_capable(self, node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in self.keep:
            return False
        if any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS: If / Loop / Scan
            return False
        if not self._has_float_io(node):
            return False
        schema = _schema(node.op_type, self.opset)
        if schema is None:
            return False
        for i, name in enumerate(node.input):
            if self.is_float(name):
                allowed = _formal_allowed(schema, schema.inputs, i)
                if allowed is not None and "tensor(float16)" not in allowed:
                    return False
        return True

    def _input_fixed_f32(self, node, index: int) -> bool:
        schema = _schema(node.op_type, self.opset)
        return schema is not None and _formal_type(schema.inputs, index) == "tensor(float)"

    def _output_home(self, node, index: int, is_fp16: bool) -> int:
        if not is_fp16:
            return FLOAT
        schema = _schema(node.op_type, self.opset)
        allowed = _formal_allowed(schema, schema.outputs, index)
        return FLOAT if allowed is not None and "tensor(float16)" not in allowed else FLOAT16

    def _homes(self, nodes, fp16) -> dict[str, int]:
        """The type each float32 tensor has in the converted graph."""
        home = {name: FLOAT for name in self.graph_inputs}
        consumers: dict[str, list] = {}
        for node in nodes:
            for i, name in enumerate(node.input):
                consumers.setdefault(name, []).append((node, i))
        outputs = {o.name for o in self.graph.output}
        for name in self.inits:
            if not self.is_float(name):
                continue
            users = consumers.get(name, [])
            all_fp16 = users and all(fp16[id(n)] and not self._input_fixed_f32(n, i) for n, i in users)
            home[name] = FLOAT16 if all_fp16 and name not in outputs else FLOAT
        for node in nodes:
            for i, name in enumerate(node.output):
                if self.is_float(name):
                    home[name] = self._output_home(node, i, fp16[id(node)])
        return home

    # -- rewriting

    def _retype_inputs(self, node, is_fp16: bool, home: dict[str, int]) -> None:
        for i, name in enumerate(node.input):
            if not self.is_float(name):
                continue
            wanted = FLOAT if not is_fp16 or self._input_fixed_f32(node, i) else FLOAT16
            if home.get(name, FLOAT) != wanted:
                node.input[i] = self._cast(name, wanted)
        if not is_fp16:
            for attr in node.attribute:  # subgraphs read outer float tensors by name
                for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                    self._retype_outer_refs(sub, home)

    def _retype_outer_refs(self, graph, home: dict[str, int]) -> None:
        local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        local |= {o for n in graph.node for o in n.output}
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name not in local and self.is_float(name) and home.get(name, FLOAT) == FLOAT16:
                    node.input[i] = self._cast(name, FLOAT)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                    self._retype_outer_refs(sub, home)

    def _cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            target = f"{name}/to_{'fp16' if to == FLOAT16 else 'fp32'}"
            self.casts[key] = target
            self.new_casts.append(_cast_node(name, target, to))
        return self.casts[key]

    def _rename_fp16_outputs(self, nodes, home) -> list[tuple[str, str]]:
        """Graph outputs computed in FP16: produced under an internal name, cast back last."""
        renames = []
        for out in self.graph.output:
            if home.get(out.name) != FLOAT16:
                continue
            internal = f"{out.name}/fp16"
            for node in nodes:
                for seq in (node.input, node.output):
                    for i, name in enumerate(seq):
                        if name == out.name:
                            seq[i] = internal
            self.types[internal] = FLOAT
            home[internal] = FLOAT16
            renames.append((internal, out.name))
        return renames

    def _convert_initializers(self, home: dict[str, int]) -> None:
        """Weights read only by FP16 nodes are stored as FP16; the others stay float32 (FP16
        nodes then read them through a Cast, which TensorRT folds at build time)."""
        from onnx import numpy_helper

        for name, tensor in self.inits.items():
            if tensor.data_type == FLOAT and home.get(name) == FLOAT16:
                tensor.CopyFrom(numpy_helper.from_array(to_float16(numpy_helper.to_array(tensor)), name))


def to_float16(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 with range clipping and tiny values kept non-zero."""
    values = np.asarray(values, dtype=np.float32)
    clipped = np.clip(values, -F16_MAX, F16_MAX)
    tiny = (clipped != 0) & (np.abs(clipped) < F16_TINY)
    clipped = np.where(tiny, np.sign(clipped) * F16_TINY, clipped)
    return clipped.astype(np.float16)


def _retype_attributes(node) -> None:
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name in ("to", "dtype") and attr.type == 2 and attr.i == FLOAT:  # INT
            attr.i = FLOAT16
        elif attr.type == 4 and attr.t.data_type == FLOAT:  # TENSOR: Constant, ConstantOfShape
            half = numpy_helper.from_array(to_float16(numpy_helper.to_array(attr.t)), attr.t.name)
            attr.t.CopyFrom(half)
        elif attr.name == "value_float" and node.op_type == "Constant":
            pass  # a float attribute is float32 by definition; the output stays float32 (home)


def _cast_node(src: str, dst: str, to: int):
    from onnx import helper

    return helper.make_node("Cast", [src], [dst], to=to, name=f"accelflow_cast:{dst}")


def _tensor_types(graph) -> dict[str, int]:
    types = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for tensor in graph.initializer:
        types[tensor.name] = tensor.data_type
    return types


_SCHEMAS: dict = {}


def _schema(op_type: str, opset: int):
    key = (op_type, opset)
    if key not in _SCHEMAS:
        from onnx import defs

        try:
            _SCHEMAS[key] = defs.get_schema(op_type, opset, "")
        except Exception:  # noqa: BLE001 - SchemaError: not a standard op
            _SCHEMAS[key] = None
    return _SCHEMAS[key]


def _formal_type(formals, index: int) -> str | None:
    if not formals:
        return None
    formal = formals[min(index, len(formals) - 1)]  # variadic last parameter
    return formal.type_str


def _formal_allowed(schema, formals, index: int) -> list[str] | None:
    """The types a parameter allows, or None when the schema does not say."""
    type_str = _formal_type(formals, index)
    if type_str is None:
        return None
    for constraint in schema.type_constraints:
        if constraint.type_param_str == type_str:
            return list(constraint.allowed_type_strs)
    return [type_str] if type_str.startswith("tensor(") else None


# ---------------------------------------------------------------------------- fallback


def build_with_fallback(onnx_path: str, io, spec, out_dir: str,
                        build: Callable[[str], object]) -> tuple[object, dict]:
    """Build the FP16 graph with `build(graph_path) -> runner`; when its outputs fail the FP16
    accuracy gate against the float32 graph, build again with SENSITIVE_OPS in float32.

    Returns (runner, record). The record (stored in the engine configuration, so in the
    manifest and the report) says what was converted, the pre-check's result, and whether
    the fallback was taken and why. The task's own accuracy gate still judges the result
    against the original model afterwards; this check only decides which graph to build.
    """
    path = os.path.join(out_dir, FP16_FILE)
    stats = convert_file(onnx_path, path)
    runner = build(path)
    verdict = precheck(onnx_path, io, runner, spec)
    record = {"graph": stats, "precheck": verdict, "fallback": None}
    if verdict["passed"] is not False:  # passed, or could not be checked
        return runner, record
    del runner
    stats = convert_file(onnx_path, path, SENSITIVE_OPS)
    runner = build(path)
    record.update(graph=stats, precheck=precheck(onnx_path, io, runner, spec), fallback={
        "reason": f"the all-FP16 graph failed the FP16 accuracy check ({verdict['reason']}); "
                  "operations known to lose accuracy in FP16 were kept in FP32",
        "kept_fp32_ops": sorted(SENSITIVE_OPS),
    })
    return runner, record


def precheck(onnx_path: str, io, runner, spec) -> dict:
    """The FP16 gate (tasks.verify's tolerances) of `runner` against the float32 graph on
    ONNX Runtime's CPU provider, on random inputs at every shape point.

    Integer inputs use the tensor information's default ranges; a model that fails on those
    (token ids outside a small vocabulary) cannot be pre-checked: the result says so and the
    all-FP16 graph is kept, for the task's own gate to judge.
    """
    from accelflow.core.accuracy import compare, random_draws, tolerances
    from accelflow.core.runner import run_arrays
    from accelflow.formats.onnx_model import OrtRunner

    try:
        reference = OrtRunner(onnx_path, io, 1)
        draws = random_draws(spec, None, per_shape=2, seed=7)
        want = [run_arrays(reference, d.arrays) for d in draws]
        got = [run_arrays(runner, d.arrays) for d in draws]
    except Exception as exc:  # noqa: BLE001 - recorded; the task's gate decides
        first = (str(exc).splitlines() or [""])[0][:300]
        return {"passed": None, "reason": f"not pre-checked: {type(exc).__name__}: {first}"}
    result = compare(want, got, list(io.output_names), tolerances("fp16"))
    return {"passed": result.passed, "reason": result.reason, "draws": result.draws}
