"""The manifest of an optimized model folder: everything needed to load and trust it."""

from __future__ import annotations

from accelflow.core import VERSION


def manifest_for(task_name: str, request, fetched, chosen, converted, report) -> dict:
    return {
        "task_name": task_name,
        "model": fetched.name,
        "version": fetched.version,
        "format": fetched.format,
        "level": request.level,
        "device": request.device,
        "engine": chosen.engine,
        "engine_version": chosen.engine_version,
        "precision": chosen.precision,
        "engine_config": chosen.engine_config,
        "io": converted.io,
        "tensor_info": list(report.tensor_info),
        "speedup": report.speedup,
        "machine": report.machine,
        "library_versions": report.library_versions,
        "accelflow_version": VERSION,
        "created": report.created,
        **model_code_fields(request, fetched),
        "load": "import accelflow; model = accelflow.load(RESULT_FOLDER); outputs = model(*inputs)",
        **gpu_fields(chosen.engine_config),
    }


def model_code_fields(request, fetched) -> dict:
    """Whether the task was allowed to run the model's own code, and what of it does."""
    return {"trust_model_code": request.trust_model_code, "model_code": list(fetched.model_code)}


def gpu_fields(engine_config: dict) -> dict:
    """A GPU result's GPU (name, compute capability, clocks at build time) and what loading
    checks it against; the engine version is `engine_version` (TensorRT's, for tensorrt)."""
    if "built_for" not in engine_config:
        return {}
    return {"gpu": engine_config.get("gpu", {}), "built_for": engine_config["built_for"]}
