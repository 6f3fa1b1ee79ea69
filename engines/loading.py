"""What `accelflow.load` calls: a result's manifest says whether it is one model or a pipeline."""

from __future__ import annotations

from accelflow.engines.pipeline_result import load_pipeline
from accelflow.engines.result import PIPELINE_FORMAT, OptimizedModel, read_manifest


def load(folder: str, threads: int | None = None, trust_model_code: bool = False):
    """Load an optimized model folder (the task's result folder or its model/ subfolder).

    A Stable Diffusion pipeline's result loads as the pipeline (engines/pipeline_result.py).
    """
    if read_manifest(folder).get("format") == PIPELINE_FORMAT:
        return load_pipeline(folder, threads, trust_model_code)
    return OptimizedModel(folder, threads, trust_model_code)
