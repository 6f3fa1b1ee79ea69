"""The thin Prefect @task wrappers of the plain step functions (which import no Prefect)."""

from __future__ import annotations

from accelflow.tasks import benchmark, build, convert, fetch, pipeline, verify
from prefect import task
from prefect.cache_policies import NO_CACHE


def as_step(fn, name: str):
    # Steps pass file paths and small results; caching and result persistence would only
    # hash and store them for nothing.
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)


fetch_model = as_step(fetch.fetch_model, "fetch model")
parse_tensor_info = as_step(convert.parse_tensor_info, "parse tensor information")
convert_to_onnx = as_step(convert.convert_to_onnx, "convert to ONNX")
build_candidate = as_step(build.build_candidate, "build engine")
verify_accuracy = as_step(verify.verify_candidates, "verify accuracy")
benchmark_candidates = as_step(benchmark.benchmark_candidates, "benchmark")

# A Stable Diffusion pipeline's networks (tasks/pipeline.py).
plan_components = as_step(pipeline.plan_components, "plan pipeline components")
export_component = as_step(pipeline.export_component, "convert component to ONNX")
verify_component = as_step(pipeline.verify_component, "verify component accuracy")
benchmark_component = as_step(pipeline.benchmark_component, "benchmark component")
