"""TorchScript models: detection, loading without unpickling arbitrary objects, ONNX export.

A TorchScript archive is a zip holding `<name>/code/` (TorchScript source) and
`<name>/constants.pkl`; torch.jit.load reads it with TorchScript's own restricted
unpickler, never Python's pickle, so loading cannot run arbitrary Python code.
"""

from __future__ import annotations

import ast
import contextlib
import os
import pickletools
import warnings
import zipfile

import numpy as np
from accelflow.core.errors import (
    ConversionError,
    MissingDependencyError,
    ModelMismatchError,
    UnsupportedFormatError,
    first_line,
    last_line,
)
from accelflow.core.modelio import ModelIO, describe_structure, flatten_value, unique_onnx_names

NAME = "torchscript"
DEFAULT_OPSET = 17


def detect(path: str) -> bool:
    names = _zip_names(path)
    has_code = any("/code/" in n for n in names)
    return has_code and any(n.endswith("/constants.pkl") or n.endswith("/data.pkl") for n in names)


def code_risks(path: str) -> list[str]:
    """What in the model at `path` would run its author's code when loaded: none.

    TorchScript code runs in TorchScript's interpreter, not Python, and its pickles are read
    by torch.jit.load's restricted unpickler (tests/faults/test_hostile_inputs.py).
    """
    return []


def _zip_names(path: str) -> list[str]:
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def load(path: str):
    torch = import_torch()
    try:
        with _quiet():
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors...
        raise UnsupportedFormatError(
            f"{path} looks like TorchScript but failed to load: {first_line(exc)}. "
            "Check the file is complete, and was saved with torch.jit.save by a torch version "
            "no newer than the one installed here."
        ) from exc
    return module.eval()


def positional_args(module, spec, args: list, kwargs: dict) -> list:
    """Keyword inputs (a dict at the first level) placed by the name of forward's parameters."""
    if spec.root == "args":
        return list(args)
    params = [a.name for a in module.forward.schema.arguments][1:]  # [0] is self
    return [kwargs[p] for p in keyword_order(params, list(kwargs))]


def keyword_order(params: list[str], names: list[str]) -> list[str]:
    """forward()'s parameters up to the last one named: where each keyword input goes. A name
    forward() does not take, or a parameter left out before a named one, is a ModelMismatchError."""
    unknown = [k for k in names if k not in params]
    if unknown:
        raise ModelMismatchError(
            f"tensor information names {', '.join(unknown)}, but forward() takes "
            f"{', '.join(params)}. Name first-level inputs after forward's parameters, or use "
            "input_0, input_1, ... for positional arguments."
        )
    last = max(params.index(k) for k in names)
    missing = [p for p in params[: last + 1] if p not in names]
    if missing:
        raise ModelMismatchError(
            f"forward() parameter(s) {', '.join(missing)} come before "
            f"{params[last]} but have no tensor information; add them."
        )
    return params[: last + 1]


def check_input_names(path: str, spec) -> None:
    """Tensor information's first-level names against forward()'s parameters, as read by
    `forward_parameters` (the model is not loaded). Positional inputs (input_0, ...) and an
    archive laid out otherwise are checked when the model is converted."""
    params = forward_parameters(path) if spec.root == "kwargs" else None
    if params is not None:
        keyword_order(params, list(dict.fromkeys(leaf.path[0][1] for leaf in spec.leaves)))


_MAX_SOURCE_BYTES = 16 << 20  # data.pkl and a code file are small; the weights are in data/


def forward_parameters(path: str) -> list[str] | None:
    """The names of forward()'s parameters (self excluded), read from the archive without torch:
    the root object's class is the first GLOBAL opcode of data.pkl (opcodes are listed, nothing is
    unpickled) and its forward() is parsed, not run, from the TorchScript source torch.jit.save
    writes under code/. None where the archive is not laid out that way."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = next(i for i in archive.infolist()
                        if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl"))
            module, _, name = _root_class(archive, data).rpartition(".")
            code = archive.getinfo(f"{data.filename.split('/')[0]}/code/{module.replace('.', '/')}.py")
            if max(data.file_size, code.file_size) > _MAX_SOURCE_BYTES:
                return None
            tree = ast.parse(archive.read(code))
    except Exception:  # noqa: BLE001 - any surprise in an archive only means: checked at conversion
        return None
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    forward = [f for c in classes for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "forward"]
    return [a.arg for a in forward[0].args.args[1:]] if len(forward) == 1 else None


def _root_class(archive: zipfile.ZipFile, data: zipfile.ZipInfo) -> str:
    """`__torch__.module.Class` of the pickled root module (GLOBAL's argument is "module Class")."""
    with archive.open(data) as stream:
        found = next(arg for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL")
    return found.replace(" ", ".")


def to_torch(value):
    """Nested numpy leaves -> torch tensors (bfloat16 kept as bfloat16)."""
    torch = import_torch()
    if isinstance(value, dict):
        return {k: to_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_torch(v) for v in value)
    if value.dtype.name == "bfloat16":
        return torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(value))


def to_numpy(tensor) -> np.ndarray:
    torch = import_torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def _is_tensor(value) -> bool:
    return type(value).__name__ == "Tensor" or hasattr(value, "detach")


class TorchScriptBaseline:
    """The original TorchScript model in torch: eval mode, inference mode, same thread count.

    device "cuda": the module and the prepared inputs on the GPU; `run` returns after
    torch.cuda.synchronize(), so a timed call is the whole GPU inference, as the GPU engines'.
    """

    def __init__(self, path: str, spec, io: ModelIO, threads: int, device: str = "cpu"):
        self.torch = import_torch()
        self.torch.set_num_threads(threads)
        self.device = device
        self.module = load(path)
        if device != "cpu":
            if not self.torch.cuda.is_available():
                raise MissingDependencyError(
                    "the TorchScript baseline on the GPU needs a CUDA build of torch; this torch "
                    f"({self.torch.__version__}) has no CUDA. Install torch with CUDA on GPU machines."
                )
            self.module = self.module.to(device)
        self.spec, self.io = spec, io
        where = f" on {self.torch.cuda.get_device_name(0)}" if device != "cpu" else ""
        self.label = f"torchscript (torch {self.torch.__version__}){where}"

    def prepare(self, arrays):
        args, kwargs = self.spec.unflatten(list(arrays))
        feed = positional_args(self.module, self.spec, to_torch(args), to_torch(kwargs))
        if self.device != "cpu":
            feed = [_to_device(v, self.device) for v in feed]
            self.torch.cuda.synchronize()
        return feed

    def run(self, feed):
        with self.torch.inference_mode(), _quiet():
            out = self.module(*feed)
        if self.device != "cpu":
            self.torch.cuda.synchronize()
        return out

    def outputs(self, raw):
        return [to_numpy(t) for t in flatten_value(raw, _is_tensor)]


def _to_device(value, device: str):
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value.to(device)


def baseline_runner(path: str, spec, io: ModelIO, threads: int, device: str = "cpu") -> TorchScriptBaseline:
    return TorchScriptBaseline(path, spec, io, threads, device)


def to_onnx(path: str, spec, out_dir: str, example: list) -> tuple[str, ModelIO]:
    """Export through the legacy (TorchScript) exporter; the dynamo exporter refuses ScriptModules.

    A ScriptModule with list/dict inputs cannot be exported directly (ONNX has no containers),
    so a wrapper taking the flat leaves rebuilds the structure, is traced (which keeps the
    scripted callee's control flow), and that trace is exported.
    """
    module = load(path)
    flat = [to_torch(a) for a in example]
    outputs = _run_example(module, spec, flat)
    structure = _output_structure(outputs)
    input_names = unique_onnx_names([leaf.name for leaf in spec.leaves])
    output_names = [f"output_{i}" for i in range(len(flatten_value(outputs, _is_tensor)))]
    onnx_path = os.path.join(out_dir, "model.onnx")
    _export(FlatWrapper(module, spec), flat, onnx_path, input_names, output_names, _dynamic_axes(spec, input_names))
    return onnx_path, ModelIO(input_names, output_names, structure)


def _run_example(module, spec, flat: list):
    """The model's outputs on example inputs: the first place a wrong shape or dtype shows."""
    torch = import_torch()
    try:
        with torch.inference_mode(), _quiet():
            return FlatWrapper(module, spec)(*flat, flatten=False)
    except ModelMismatchError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{leaf.name} {tuple(t.shape)} {leaf.dtype}" for leaf, t in zip(spec.leaves, flat))
        raise ModelMismatchError(
            f"the model fails on inputs made from the tensor information ({shapes}): "
            f"{last_line(exc)}. Check the tensor information's shapes and dtypes against what "
            "the model's forward() expects."
        ) from exc


def _output_structure(outputs) -> dict:
    try:
        return describe_structure(outputs, _is_tensor)
    except TypeError as exc:
        raise ConversionError(
            f"the model returns {exc}; accelflow optimizes models whose outputs are tensors "
            "or lists/tuples/dicts of tensors. Wrap the model so it returns only tensors."
        ) from exc


def _dynamic_axes(spec, input_names: list[str]) -> dict:
    axes = {}
    for leaf, name in zip(spec.leaves, input_names):
        if leaf.shape.dynamic_axes:
            axes[name] = {axis: f"{name}_dim{axis}" for axis in leaf.shape.dynamic_axes}
    return axes


def _export(wrapper, flat, onnx_path, input_names, output_names, dynamic_axes):
    torch = import_torch()
    _register_qat_symbolic()
    try:
        with torch.no_grad(), _quiet():
            traced = torch.jit.trace(wrapper, tuple(flat), check_trace=False, strict=False)
            torch.onnx.export(
                traced, tuple(flat), onnx_path, input_names=input_names,
                output_names=output_names, dynamic_axes=dynamic_axes,
                opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(
            f"exporting the TorchScript model to ONNX failed: {first_line(exc)}. "
            "Operators without an ONNX equivalent are the usual cause; run with --debug for details."
        ) from exc


def _register_qat_symbolic() -> None:
    """Export torch.ao's fused observer + fake-quantize op (what QAT models trained with the
    default qconfig carry) as QuantizeLinear/DequantizeLinear. In an exported model the
    observer is off, so the op is a plain fake-quantize with its learned scale and zero point."""
    torch = import_torch()
    from torch.onnx import symbolic_helper, symbolic_opset13

    @symbolic_helper.parse_args("v", "v", "v", "v", "v", "v", "v", "f", "i", "i", "i", "b", "b")
    def fused_fake_quant(g, x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                         averaging_const, quant_min, quant_max, ch_axis, per_row, symmetric):
        if per_row:
            return symbolic_opset13.fake_quantize_per_channel_affine(g, x, scale, zero_point, ch_axis, quant_min, quant_max)
        return symbolic_opset13.fake_quantize_per_tensor_affine(g, x, scale, zero_point, quant_min, quant_max)

    torch.onnx.register_custom_op_symbolic("aten::fused_moving_avg_obs_fake_quant", fused_fake_quant, 13)


def FlatWrapper(module, spec):
    """An nn.Module taking the flat leaves, calling `module` with the nested structure."""
    torch = import_torch()

    class _Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *leaves, flatten: bool = True):
            args, kwargs = spec.unflatten(list(leaves))
            out = self.inner(*positional_args(module, spec, args, kwargs))
            return tuple(flatten_value(out, _is_tensor)) if flatten else out

    return _Flat().eval()


@contextlib.contextmanager
def _quiet():
    """torch.jit and the legacy exporter warn on every call that they are deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "torch is not installed; TorchScript models need it: pip install torch "
            "(a CPU build is enough: pip install torch==2.13.0 on the project's machines)."
        ) from exc
    return torch
