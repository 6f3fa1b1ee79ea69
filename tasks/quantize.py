"""Step 4a (int8 level): the ONNX model quantized on calibration inputs, and its operations
ranked by sensitivity for the gate's fallback (engines/int8.py does the work); a detector's
RoI head graphs with it (tasks/quantize_heads.py).

Calibration inputs: `--calibration` (an .npz, or a folder of them), else `--samples`, else
inputs drawn from the tensor information (random values; a detector gets synthetic images),
which the report warns about: real data calibrates better.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from accelflow.core.accuracy import random_draws, sample_draws
from accelflow.core.errors import ModelMismatchError
from accelflow.engines import int8
from accelflow.formats import detections
from accelflow.tasks import quantize_heads
from accelflow.tasks.context import ModelContext
from accelflow.tasks.runners import RunnerPool

DRAWN_PER_SHAPE = 8  # calibration draws per shape point when no data is given
DRAWN_WARNING = ("INT8 was calibrated on inputs drawn from the tensor information (random values), not on "
                 "real data; real data calibrates better: pass --calibration FILE.npz (or --samples).")


@dataclass(frozen=True)
class Calibration:
    """Where calibration inputs come from: files (the user's), or none (drawn)."""

    files: tuple[str, ...] = ()
    source: str = "drawn"  # "calibration", "samples" or "drawn"


@dataclass
class QuantizedModel:
    onnx_path: str
    method: str
    calibration: str  # the source, in words
    calibration_inputs: int
    quantized_ops: int
    excluded: list[str] = field(default_factory=list)  # operations kept in float
    heads: list[dict] = field(default_factory=list)  # a detector's RoI head graphs (quantize_heads)
    heads_dir: str = ""  # where they are

    def io(self, io: dict) -> dict:
        """The conversion's io for candidates built from this graph: a detector's heads are these."""
        return detections.with_head_graphs(io, self.heads, self.heads_dir) if self.heads_dir else io

    @property
    def warnings(self) -> list[str]:
        return [DRAWN_WARNING] if self.calibration.startswith("drawn") else []


def quantize_model(ctx: ModelContext, calibration: Calibration, excluded: list[str], pool: RunnerPool) -> QuantizedModel:
    """The QDQ graph of ctx's ONNX model, calibrated; `excluded` operations stay float."""
    feeds = _feeds(ctx, calibration, pool)
    prepared = pool.load(("int8-prepared", ctx.onnx_path), lambda: int8.prepare(ctx.onnx_path, _folder(ctx, "int8")))
    folder = _folder(ctx, f"int8-{len(excluded)}-excluded" if excluded else "int8")
    path = os.path.join(folder, "model.onnx")
    own, in_heads = quantize_heads.split_excluded(excluded)
    count = int8.quantize(prepared, path, feeds, ctx.device, own)
    quantized = QuantizedModel(path, int8.method_text(ctx.device), _source_text(calibration, len(feeds)), len(feeds),
                               count, list(excluded))
    if quantize_heads.head_graphs(ctx.io):
        quantized.heads_dir = os.path.join(folder, "heads")
        quantized.heads, heads_count = quantize_heads.quantize(ctx, _head_feeds(ctx, calibration, pool),
                                                               quantized.heads_dir, in_heads)
        quantized.quantized_ops += heads_count
    return quantized


def rank_sensitive(ctx: ModelContext, quantized: QuantizedModel, calibration: Calibration,
                   pool: RunnerPool) -> list[tuple[str, float]]:
    """(operation, SQNR dB of the noisiest activation it reads), most sensitive first."""
    prepared = pool.load(("int8-prepared", ctx.onnx_path), lambda: int8.prepare(ctx.onnx_path, _folder(ctx, "int8")))
    ranked = int8.sensitivity(prepared, quantized.onnx_path, _feeds(ctx, calibration, pool), ctx.threads)
    if quantized.heads:
        ranked += quantize_heads.sensitivity(ctx, quantized.heads, _head_feeds(ctx, calibration, pool),
                                             quantized.heads_dir)
    return sorted(((name, float(score)) for name, score in ranked), key=lambda item: item[1])


def _feeds(ctx: ModelContext, calibration: Calibration, pool: RunnerPool) -> list[dict]:
    return pool.load(("int8-feeds", ctx.onnx_path, calibration), lambda: calibration_feeds(ctx, calibration))


def _head_feeds(ctx: ModelContext, calibration: Calibration, pool: RunnerPool) -> dict[str, list[dict]]:
    """A detector's head graphs' feeds, recorded while it runs on the calibration images."""
    def record():
        images = [[feed[n] for n in ctx.io["input_names"] if n in feed] for feed in _feeds(ctx, calibration, pool)]
        return quantize_heads.recorded_feeds(ctx, images)

    return pool.load(("int8-head-feeds", ctx.onnx_path, calibration), record)


def calibration_feeds(ctx: ModelContext, calibration: Calibration) -> list[dict]:
    """The ONNX graph's feeds (input name -> array of its type) for every calibration input."""
    if calibration.files:
        draws = [d.arrays for path in calibration.files for d in sample_draws(ctx.spec, path)]
    elif detections.is_detector(ctx.io):  # random noise gives a detector's activations nothing to find
        draws = [arrays for _, arrays in detections.image_draws(ctx.spec, DRAWN_PER_SHAPE)]
    else:
        draws = [d.arrays for d in random_draws(ctx.spec, ctx.int_ranges, DRAWN_PER_SHAPE, seed=1)]
    types = _input_types(ctx.onnx_path)
    names = [n for n in ctx.io["input_names"] if n in types]
    if set(names) != set(types):
        raise ModelMismatchError(f"INT8 calibration: the ONNX graph's inputs {', '.join(types)} are not all among "
                                 f"the tensor information's {', '.join(ctx.io['input_names'])}.")
    return [{n: np.ascontiguousarray(a, dtype=types[n]) for n, a in zip(ctx.io["input_names"], arrays) if n in types}
            for arrays in draws]


def _input_types(onnx_path: str) -> dict[str, np.dtype]:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(onnx_path, load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    return {i.name: tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph.input
            if i.name not in constants}


def _source_text(calibration: Calibration, count: int) -> str:
    if calibration.source == "drawn":
        return f"drawn from the tensor information ({count} inputs)"
    return f"--{calibration.source} {', '.join(os.path.basename(f) for f in calibration.files)} ({count} inputs)"


def _folder(ctx: ModelContext, name: str) -> str:
    folder = os.path.join(ctx.work_dir, name)
    os.makedirs(folder, exist_ok=True)
    return folder
