"""What `accelflow.load` calls: a result's manifest says whether it is one model or a pipeline.

A result is loaded with the engine settings it was benchmarked with, read back from its
manifest's engine_config (ONNX Runtime's session config, OpenVINO's compile properties);
`serving_settings` says them in words for the report.
"""

from __future__ import annotations

from accelflow.engines.pipeline_result import load_pipeline
from accelflow.engines.result import PIPELINE_FORMAT, OptimizedModel, read_manifest


def load(folder: str, threads: int | None = None, trust_model_code: bool = False):
    """Load an optimized model folder (the task's result folder or its model/ subfolder).

    `threads` defaults to the cores this process may use (ACCELFLOW_THREADS overrides), the
    count the benchmark ran with on the machine type the result was built for.
    A Stable Diffusion pipeline's result loads as the pipeline (engines/pipeline_result.py).
    """
    if read_manifest(folder).get("format") == PIPELINE_FORMAT:
        return load_pipeline(folder, threads, trust_model_code)
    return OptimizedModel(folder, threads, trust_model_code)


def serving_settings(engine_config: dict | None) -> str | None:
    """The threading settings a CPU result was benchmarked with and `accelflow.load` applies,
    in words; None when its engine_config records none (GPU engines, older results)."""
    options = (engine_config or {}).get("options") or {}
    if "session_config" in options:  # ONNX Runtime
        spinning = options["session_config"].get("session.intra_op.allow_spinning", "1") != "0"
        return (f"benchmarked with ONNX Runtime's {options.get('intra_op_num_threads', '?')} intra-op threads, "
                f"idle threads {'spinning' if spinning else 'not spinning (session.intra_op.allow_spinning=0)'}; "
                "accelflow.load applies the same session settings, with the cores its process may use.")
    if "INFERENCE_NUM_THREADS" in options:  # OpenVINO
        pinning = {True: "on", False: "off"}.get(options.get("ENABLE_CPU_PINNING"), "as OpenVINO's default")
        return (f"benchmarked with OpenVINO's {options['INFERENCE_NUM_THREADS']} inference threads, "
                f"{options.get('PERFORMANCE_HINT', '')} hint, CPU pinning {pinning}; accelflow.load applies the "
                "same compile properties, with the cores its process may use.")
    return None
