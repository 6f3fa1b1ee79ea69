"""An optimized model folder: its manifest, and loading it back to run like the original.

    import accelflow
    model = accelflow.load("results/bert-fp16")
    outputs = model(input_ids, attention_mask)        # same nesting as the original model

The manifest (manifest.json) names the engine and its exact version, the precision, the
machine it was built on, the tensor information and how inputs/outputs map to the engine.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from accelflow.core.errors import EngineError
from accelflow.core.modelio import ModelIO, rebuild
from accelflow.core.runner import run_arrays, thread_count
from accelflow.formats import detections, format_named

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PIPELINE_FORMAT = "diffusers"  # formats.diffusers_pipeline.NAME


def write_manifest(folder: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(folder, MANIFEST)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(manifest, manifest_version=MANIFEST_VERSION), f, indent=2, sort_keys=True)
    return path


def read_manifest(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        nested = os.path.join(folder, "model", MANIFEST)
        if os.path.isfile(nested):
            return read_manifest(os.path.join(folder, "model"))
        raise EngineError(f"{folder} is not an optimized model folder: it has no {MANIFEST}.")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["folder"] = os.path.dirname(path)
    return manifest


def check_engine(manifest: dict[str, Any]):
    """The engine module for a manifest, refusing a missing or different engine version."""
    from accelflow.engines import engine_named

    name, built_with = manifest.get("engine"), manifest.get("engine_version")
    try:
        engine = engine_named(name)
    except EngineError as exc:
        raise EngineError(f"this model was built by engine {name!r}, which accelflow does not know here.") from exc
    installed = engine.version()
    if installed is None:
        raise EngineError(
            f"this model was built by {name} {built_with}, which is not installed: "
            f"pip install {engine.PACKAGE}=={built_with}"
        )
    if installed != built_with:
        raise EngineError(
            f"this model was built by {name} {built_with} but {name} {installed} is installed; "
            f"install the same version (pip install {engine.PACKAGE}=={built_with}) or optimize the model again."
        )
    return engine


class OptimizedModel:
    """A loaded result: called with the original model's inputs, returns its kind of outputs."""

    def __init__(self, folder: str, threads: int | None = None, trust_model_code: bool = False):
        from accelflow.core import tensor_info

        self.trust_model_code = trust_model_code  # a detector's config may run code (formats/detections.py)
        self.manifest = read_manifest(folder)
        engine = check_engine(self.manifest)
        self.spec = tensor_info.parse(self.manifest["tensor_info"])
        self.io = ModelIO.from_dict(self.manifest["io"])
        threads = threads or thread_count()
        self.runner = engine.load(self.manifest["folder"], self.manifest, threads)
        if detections.is_detector(self.manifest.get("io")):  # the backbone's engine, then heads and NMS
            self.runner = detections.candidate(format_named(detections.format_name(self.manifest["io"])), self.runner,
                                              self.manifest["io"], threads, self.manifest["folder"],
                                              trusted=trust_model_code)
            self.io.output_structure = self.manifest["io"]["source"]["detections_structure"]

    def __call__(self, *args, **kwargs):
        arrays = self.spec.flatten(list(args), kwargs)
        return rebuild(self.io.output_structure, run_arrays(self.runner, arrays))

    def run_flat(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return run_arrays(self.runner, arrays)

    def __repr__(self) -> str:
        m = self.manifest
        return f"OptimizedModel({m['engine']} {m['engine_version']}, {m['precision']}, {m['folder']!r})"
