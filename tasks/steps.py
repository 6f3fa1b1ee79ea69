"""The thin Prefect @task wrappers of the plain step functions (which import no Prefect).

A step that loads or runs the model runs in the task's model process (tasks/isolation.py),
the ModelProcess the flow passes as its `pool` argument; the others run in the flow's process.
Model steps hold the machine's timing lock (tasks/timing_lock.py): benchmarks alone, the rest shared.
"""

from __future__ import annotations

import functools

from accelflow.tasks import benchmark, build, convert, fetch, pipeline, quantize, timing_lock, verify
from accelflow.tasks.isolation import ModelProcess
from prefect import task
from prefect.cache_policies import NO_CACHE


def as_step(fn, name: str):
    # Steps pass file paths and small results; caching and result persistence would only
    # hash and store them for nothing.
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)


def in_model_process(fn, name: str, timing: bool = False):
    """`fn` as a step whose body runs in the model process found among its arguments;
    a `timing` step runs alone on the device, the others beside each other."""

    @functools.wraps(fn)
    def step(*args):
        process = next(a for a in args if isinstance(a, ModelProcess))
        with on_device(process, name, timing):
            return process.call(fn, *args)

    return as_step(step, name)


def on_device(process: ModelProcess, name: str, timing: bool):
    """The device's timing lock for a step: alone for `timing`, shared otherwise; says when it waits."""
    return timing_lock.holding(process.device, exclusive=timing, on_wait=lambda: _say_waiting(name, timing))


def _say_waiting(name: str, timing: bool) -> None:
    """On the console (flows/progress.py's logger) and in the step's run log, as progress lines are."""
    import logging

    from prefect import get_run_logger

    why = "other tasks' steps on this machine to finish" if timing else "another task's benchmark to finish"
    message = f"    {name}: waiting for {why}, so that timings are not disturbed"
    logging.getLogger("accelflow.progress").info(message)
    get_run_logger().info(message)


fetch_model = as_step(fetch.fetch_model, "fetch model")
parse_tensor_info = as_step(convert.parse_tensor_info, "parse tensor information")
convert_to_onnx = in_model_process(convert.convert_to_onnx, "convert to ONNX")
build_candidate = in_model_process(build.build_candidate, "build engine")
quantize_model = in_model_process(quantize.quantize_model, "quantize to INT8")
rank_sensitive = in_model_process(quantize.rank_sensitive, "rank INT8-sensitive operations")
verify_accuracy = in_model_process(verify.verify_candidates, "verify accuracy")
benchmark_candidates = in_model_process(benchmark.benchmark_candidates, "benchmark", timing=True)

# A Stable Diffusion pipeline's networks (tasks/pipeline.py).
plan_components = as_step(pipeline.plan_components, "plan pipeline components")
export_component = in_model_process(pipeline.export_component, "convert component to ONNX")
verify_component = in_model_process(pipeline.verify_component, "verify component accuracy")
benchmark_component = in_model_process(pipeline.benchmark_component, "benchmark component", timing=True)
