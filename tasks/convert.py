"""Steps 2-3: parse the tensor information and convert the model to ONNX."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from accelflow.core import tensor_info
from accelflow.formats import detections
from accelflow.storage import cache
from accelflow.tasks.context import ModelContext

from accelflow import formats


@dataclass
class ConvertedModel:
    onnx_path: str
    io: dict  # ModelIO.to_dict()
    seconds: float
    cached: bool = False  # taken from the conversion cache


def parse_tensor_info(lines: list[str]) -> tensor_info.TensorInfo:
    """The tensor information, parsed once for every later step (SpecError if invalid)."""
    return tensor_info.parse(lines)


def example_arrays(spec, seed: int = 0) -> list[np.ndarray]:
    """Flat example inputs at a representative shape: the middle of ranges, where there is one.

    Tracing at a middle size avoids sizes of 1 that tracing could bake in as broadcasts.
    """
    points = spec.shape_points()
    point = next((p for p in points if p.label == "mid"), points[-1])
    args, kwargs = spec.example_inputs(point, np.random.default_rng(seed))
    return spec.flatten(args, kwargs)


def convert_to_onnx(ctx: ModelContext, qat: bool = False, options: dict | None = None, pool=None) -> ConvertedModel:
    """The model as ONNX, with input names and dynamic axes from the tensor information.

    `pool` is unused here: the flow passes its ModelProcess so that the step runs there
    (tasks/steps.py), since converting loads the model.

    For a QAT model the ONNX graph must carry quantize/dequantize pairs (fake-quantize
    operations export as QuantizeLinear/DequantizeLinear), or there is nothing to run as INT8.
    """
    start = time.perf_counter()
    fmt = formats.format_named(ctx.format)
    options = format_options(fmt, options or {})
    if fmt.NAME == "onnx":  # nothing to convert: checked in place
        onnx_path, model_io = fmt.to_onnx(ctx.model_file, ctx.spec, ctx.work_dir)
        io, cached = model_io.to_dict(), False
    else:
        onnx_path, io, cached = _converted(fmt, ctx.model_file, ctx.spec, ctx.work_dir, qat, options,
                                           ctx.trust_model_code)
        io = detections.located(io, os.path.dirname(onnx_path))  # a detector's own config/checkpoint copies
    if qat:
        require_qdq(onnx_path)
    return ConvertedModel(onnx_path, io, time.perf_counter() - start, cached)


def format_options(fmt, options: dict) -> dict:
    """The format-specific options given (--signature, --outputs), refused where they do not apply."""
    given = {k: v for k, v in options.items() if v}
    foreign = [k for k in given if k not in getattr(fmt, "OPTIONS", ())]
    if foreign:
        from accelflow.core.errors import ModelMismatchError

        takers = {"signature": "TensorFlow SavedModels", "outputs": "TensorFlow frozen graphs"}
        raise ModelMismatchError("; ".join(f"--{k} applies to {takers.get(k, 'other formats')} only, "
                                           f"and this model is {fmt.NAME}" for k in foreign) + ".")
    return given


def _converted(fmt, model_file: str, spec, work_dir: str, qat: bool, options: dict,
               trusted: bool = False) -> tuple[str, dict, bool]:
    """Export, or take the export of the same model and tensor information from the cache."""
    # A detector's config names its weights only by the file beside it: key on the whole folder.
    # Its entry holds its own copies of both (entries made before pointed into model folders).
    detector = hasattr(fmt, "checkpoint_for")
    keyed = os.path.dirname(os.path.abspath(model_file)) if detector else model_file
    key_options = dict(options, detector_files="own copies") if detector else options
    if hasattr(fmt, "EXPORT_VERSION"):  # what the conversion writes changed: older entries are not reused
        key_options = dict(key_options, export=fmt.EXPORT_VERSION)
    entry = cache.key(keyed, fmt.NAME, spec.lines(), qat, key_options) if cache.enabled() else None
    hit = cache.lookup(entry) if entry else None
    if hit:
        return hit[0], hit[1], True
    out_dir = os.path.join(work_dir, "onnx")
    os.makedirs(out_dir, exist_ok=True)
    trust = {"trusted": trusted} if detector else {}  # a Detectron2 config's python tags, MMEngine's types
    onnx_path, io = fmt.to_onnx(model_file, spec, out_dir, example_arrays(spec), **options, **trust)
    if entry:
        onnx_path, io_dict = cache.store(entry, onnx_path, io.to_dict())
        return onnx_path, io_dict, False
    return onnx_path, io.to_dict(), False


def require_qdq(onnx_path: str) -> None:
    from accelflow.core.errors import ModelMismatchError
    from accelflow.formats.onnx_model import count_ops

    found = count_ops(onnx_path, ("QuantizeLinear", "DequantizeLinear"))
    if not found:
        raise ModelMismatchError(
            "--qat was given but the model has no quantize/dequantize operations. Export the model "
            "prepared for quantization-aware training (with its fake-quantize modules, before "
            "torch.ao.quantization.convert), or drop --qat."
        )
