"""Loaded runners, kept for the length of one task so each model is loaded once.

The accuracy and benchmark steps run in the same process and use the same baseline and
candidate runners; loading BERT-sized models costs seconds each time.
"""

from __future__ import annotations

import formats
from engines import engine_named
from formats import tensor_info
from formats.modelio import ModelIO
from formats.runner import Runner

_LOADED: dict[str, Runner] = {}


def baseline(model_file: str, format_name: str, onnx_path: str, io: dict, spec_lines: list[str], threads: int) -> Runner:
    """The original model in its own framework (TorchScript in torch, ONNX in ONNX Runtime)."""
    key = f"baseline:{model_file}"
    if key not in _LOADED:
        fmt = next(f for f in formats.FORMATS if f.NAME == format_name)
        spec = tensor_info.parse(spec_lines)
        path = onnx_path if fmt.NAME == "onnx" else model_file
        _LOADED[key] = fmt.baseline_runner(path, spec, ModelIO.from_dict(io), threads)
    return _LOADED[key]


def candidate(built, io: dict, threads: int) -> Runner:
    key = f"candidate:{built.folder}"
    if key not in _LOADED:
        engine = engine_named(built.engine)
        _LOADED[key] = engine.load(built.folder, {"engine_config": built.engine_config, "io": io}, threads)
    return _LOADED[key]


def release() -> None:
    """Free every loaded model (end of a task)."""
    _LOADED.clear()
