"""Input model formats, detected from the file's content (never its suffix).

Each format is one flat module with `NAME`, `detect(path)`, `load(path)`, `to_onnx(...)` and
`baseline_runner(...)`. FORMATS lists them in detection priority. Importing this package
imports no heavy framework: each module imports torch/onnx/... inside its functions.
"""

from __future__ import annotations

import os
from types import ModuleType

# ONNX Runtime (1DS telemetry on Linux in 2026 releases; 1.32 here) reports usage to Microsoft unless this is
# set before it initialises; accelflow sends nothing about its users' work without asking.
# Set ORT_DISABLE_TELEMETRY=0 to keep it. (OpenVINO's: engines.openvino_engine.import_openvino.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from accelflow.core.errors import UnsupportedFormatError, untrusted_model
from accelflow.formats import (
    detectron2_model,
    diffusers_pipeline,
    mmdet_model,
    onnx_model,
    pytorch_checkpoint,
    tf_frozen_graph,
    tf_savedmodel,
    torchscript,
)

FORMATS: tuple[ModuleType, ...] = (
    torchscript, pytorch_checkpoint, tf_savedmodel, tf_frozen_graph, onnx_model, diffusers_pipeline, mmdet_model,
    detectron2_model,
)
# Formats whose model is a whole folder; a file of theirs found in a scan stands for its folder.
_FOLDER_FORMATS: tuple[ModuleType, ...] = (tf_savedmodel, diffusers_pipeline)

# How many files of a version folder are looked at when searching for the model file.
_MAX_SCAN = 2000


def format_named(name: str) -> ModuleType:
    """The format module called `name` (a conversion records its format by name)."""
    for fmt in FORMATS:
        if fmt.NAME == name:
            return fmt
    raise UnsupportedFormatError(f"unknown model format {name!r}; accelflow reads {', '.join(f.NAME for f in FORMATS)}.")


def detect_format(path: str) -> ModuleType:
    """The format module whose content sniffing accepts `path`, or UnsupportedFormatError."""
    if not os.path.exists(path):
        raise UnsupportedFormatError(
            f"model not found: {path}. Give a model file or folder, or NAME@VERSION from the "
            "model repository (see: accelflow repo list)."
        )
    for fmt in FORMATS:
        if fmt.detect(path):
            if fmt is pytorch_checkpoint:
                fmt.load(path)  # always raises, explaining how to make a runnable model
            return fmt
    raise UnsupportedFormatError(
        f"{path} is not a supported model: its content is none of "
        f"{', '.join(f.NAME for f in FORMATS if f is not pytorch_checkpoint)}. "
        "Give the model file itself (for example model.onnx, a TorchScript model.pt, a frozen "
        "graph.pb) or a SavedModel folder."
    )


def check_model_code(fmt: ModuleType, path: str, trusted: bool) -> list[str]:
    """What in the model at `path` would run its author's code when loaded (empty for plain
    data); refused with UntrustedModelError unless `trusted` (--trust-model-code)."""
    risks = fmt.code_risks(path)
    if risks and not trusted:
        raise untrusted_model(path, fmt.NAME, risks)
    return risks


def detect_format_name(path: str) -> str:
    """The format name of a model file, or of the one model file inside a folder."""
    return detect_format(find_model_file(path)).NAME


def find_model_file(path: str, model_file: str | None = None) -> str:
    """The model file to optimize: `path` itself, or the one model file inside a folder.

    A folder holding several model files needs `model_file` (a path relative to it).
    """
    if model_file:
        return _named_model_file(path, model_file)
    if not os.path.isdir(path) or _folder_model(path):
        return path
    found = _model_files(path)
    models = [f for f in found if not pytorch_checkpoint.detect(f)] or found
    if len(models) == 1:
        return models[0]
    if not models:
        raise UnsupportedFormatError(
            f"no model file found in {path}: none of its files is a supported model "
            f"({', '.join(f.NAME for f in FORMATS if f is not pytorch_checkpoint)})."
        )
    names = ", ".join(os.path.relpath(f, path) for f in models)
    raise UnsupportedFormatError(
        f"{path} holds several model files ({names}); choose one with --model-file NAME."
    )


def _named_model_file(path: str, model_file: str) -> str:
    home = path if os.path.isdir(path) else os.path.dirname(path)
    full = os.path.normpath(os.path.join(home, model_file))
    if os.path.relpath(full, home).startswith(".."):
        raise UnsupportedFormatError(f"--model-file {model_file!r} is outside {home}.")
    if not (os.path.isfile(full) or _folder_model(full)):
        raise UnsupportedFormatError(f"--model-file {model_file!r} not found in {home}.")
    return full


def _folder_model(path: str) -> bool:
    return any(fmt.detect(path) for fmt in _FOLDER_FORMATS)


def _model_files(folder: str) -> list[str]:
    """Model files under `folder`; a folder-format model counts once, as its folder."""
    found = []
    for path in _files_under(folder):
        fmt = next((f for f in FORMATS if f.detect(path)), None)
        if fmt is not None:
            found.append(fmt.model_dir(path) if fmt in _FOLDER_FORMATS else path)
    homes = {f for f in found if os.path.isdir(f)}
    return sorted({f for f in found if not any(f.startswith(h + os.sep) for h in homes)})


def _files_under(folder: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        if len(files) > _MAX_SCAN:
            break
    return files[:_MAX_SCAN]


def model_home(model_path: str) -> str:
    """The model's home directory: the folder given, or the folder holding the file."""
    return os.path.abspath(model_path if os.path.isdir(model_path) else os.path.dirname(model_path))
