"""Steps 2-3: parse the tensor information and convert the model to ONNX."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

import formats
from formats import tensor_info
from formats.modelio import ModelIO


@dataclass
class ConvertedModel:
    onnx_path: str
    io: dict  # ModelIO.to_dict()
    seconds: float

    def model_io(self) -> ModelIO:
        return ModelIO.from_dict(self.io)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_tensor_info(lines: list[str]) -> list[str]:
    """The canonical lines of valid tensor information (SpecError otherwise)."""
    return tensor_info.parse(lines).lines()


def example_arrays(spec, seed: int = 0) -> list[np.ndarray]:
    """Flat example inputs at a representative shape: the middle of ranges, where there is one.

    Tracing at a middle size avoids sizes of 1 that tracing could bake in as broadcasts.
    """
    points = spec.shape_points()
    point = next((p for p in points if p.label == "mid"), points[-1])
    args, kwargs = spec.example_inputs(point, np.random.default_rng(seed))
    return spec.flatten(args, kwargs)


def convert_to_onnx(model_file: str, format_name: str, spec_lines: list[str], work_dir: str) -> ConvertedModel:
    """The model as ONNX, with input names and dynamic axes from the tensor information."""
    start = time.perf_counter()
    spec = tensor_info.parse(spec_lines)
    fmt = _format_named(format_name)
    out_dir = os.path.join(work_dir, "onnx")
    os.makedirs(out_dir, exist_ok=True)
    if fmt.NAME == "onnx":
        onnx_path, io = fmt.to_onnx(model_file, spec, out_dir)
    else:
        onnx_path, io = fmt.to_onnx(model_file, spec, out_dir, example_arrays(spec))
    return ConvertedModel(onnx_path, io.to_dict(), time.perf_counter() - start)


def _format_named(name: str):
    return next(f for f in formats.FORMATS if f.NAME == name)
