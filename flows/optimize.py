"""The optimize flow: one Prefect flow run per model version, made of discrete tasks.

request -> fetch model -> parse tensor information -> convert to ONNX -> build engines ->
verify accuracy -> benchmark baseline vs candidates -> report -> package.
"""

from __future__ import annotations

import os

from accelflow.core.accuracy import check_samples
from accelflow.core.runner import thread_count
from accelflow.flows import batch_table
from accelflow.flows.int8 import Int8Builds, int8_notes
from accelflow.flows.limits import limit_error, task_limits
from accelflow.flows.outcome import failing_with_reason
from accelflow.flows.progress import Progress
from accelflow.flows.request import OptimizeRequest, calibration_files, check_request, task_name
from accelflow.flows.run_name import name_run_after_task
from accelflow.flows.stages import Destination, build_all, completed, overheads, publish_artifacts, publish_result
from accelflow.flows.stopping import StopWatcher
from accelflow.formats import diffusers_pipeline
from accelflow.storage.store import is_remote
from accelflow.tasks import fetch, package, steps
from accelflow.tasks.benchmark import TimingPlan
from accelflow.tasks.context import ModelContext
from accelflow.tasks.isolation import ModelProcess
from accelflow.tasks.report import assemble, candidates_of, engine_notes, select
from prefect import flow

from accelflow import engines


def locate_model(request: OptimizeRequest) -> str | None:
    """Check the model exists and is of a known format; its home directory if local.

    Cheap: a local file's format is sniffed, a repository entry's metadata read; nothing copied.
    """
    from accelflow.formats import check_model_code, detect_format, find_model_file, model_home
    from accelflow.storage.repository import ModelRepository, parse_model_ref
    from accelflow.tasks.convert import format_options
    from accelflow.tasks.fetch import remote_home
    from accelflow.tasks.verify import check_overrides

    if is_remote(request.model):  # sniffed once fetched: only its presence is checked here
        return remote_home(request.model)
    ref = parse_model_ref(request.model)
    if ref is None:
        model_file = find_model_file(request.model, request.model_file)
        fmt = detect_format(model_file)
        check_model_code(fmt, model_file, request.trust_model_code)
        format_options(fmt, request.format_options())
        check_overrides(fmt, request.tolerance_overrides())
        return model_home(request.model)
    repository = ModelRepository(request.repo)
    repository.version(*ref)
    return repository.local_home(*ref)


def preflight(request: OptimizeRequest) -> tuple[OptimizeRequest, str]:
    """Every check that loads no model, run before any work, inline or on a server."""
    request = check_request(request)
    return request, package.check_output_path(request.output, locate_model(request))


@flow(name="optimize", persist_result=False, validate_parameters=True, **batch_table.HOOKS)
def optimize(request: OptimizeRequest):
    return failing_with_reason(_optimize, request)  # a user error: Failed, its message the reason


def _optimize(request: OptimizeRequest):
    from prefect.runtime import flow_run
    from prefect.states import Cancelled

    name_run_after_task(task_name(request))  # a run made in the UI's form has a random name
    request, output = preflight(request)
    limits = task_limits(request.time_limit, request.memory_limit_gb, request.device)
    created_output = not is_remote(output) and not os.path.exists(output)
    dest = Destination(output, package.start_staging(output), str(flow_run.get_id()))
    watcher = StopWatcher(flow_run.get_id(), time_limit=limits.seconds)
    device = engines.compute_device(request.device)
    with watcher, ModelProcess(dest.work_dir, device, limits.memory_gib, request.trust_model_code) as process:
        try:
            return completed(_optimize_into(request, dest, process))
        except BaseException as exc:
            process.kill()  # before the staging folder, its working directory, is removed
            package.discard(dest.staging, output if created_output else None)
            if watcher.requested:
                return Cancelled(message="stopped by the user; nothing was kept")
            limited = limit_error(exc, watcher.timed_out, limits)
            if limited is not None:
                raise limited from exc
            raise


def _optimize_into(request: OptimizeRequest, dest: Destination, pool: ModelProcess) -> dict:
    progress, work = Progress(), dest.work_dir
    with progress.step("fetch model"):
        fetched = steps.fetch_model(request.model, request.repo, request.model_file, work, request.trust_model_code)
        request = request.model_copy(update={"samples": fetch.local_file(request.samples, work),
                                             "calibration": fetch.local_file(request.calibration, work, "--calibration", folders=True)})
        for given in filter(None, [request.samples, *(calibration_files(request.calibration) if request.calibration else [])]):
            check_samples(given)  # from the zip's headers, before any work
    with progress.step("parse tensor information"):
        ctx = ModelContext(fetched.model_file, fetched.format, steps.parse_tensor_info(request.tensor_info), work,
                           thread_count(), pool.device, request.int_range_map(),
                           trust_model_code=request.trust_model_code)
    if fetched.format == diffusers_pipeline.NAME:  # several networks: each optimized, then the whole
        from accelflow.flows.optimize_pipeline import optimize_pipeline_into

        return optimize_pipeline_into(request, fetched, ctx, dest, progress, pool)
    with progress.step("convert to ONNX"):
        converted = steps.convert_to_onnx(ctx, request.qat, request.format_options(), pool)
        ctx = ctx.converted(converted)
    with progress.step("build engines"):
        int8 = Int8Builds.for_request(request, ctx, pool, progress)
        built = build_all(request, ctx, pool, progress, int8)
    ok = [b for b in built if not b.error]
    with progress.step("verify accuracy"):
        accuracies = steps.verify_accuracy(ctx, ok, request.accuracy_check(), pool) if ok else {}
        if int8:
            built, accuracies = int8.fall_back(built, accuracies, request.accuracy_check())
            ok = [b for b in built if not b.error]
    passing = [b for b in ok if accuracies[b.key].passed]
    with progress.step("benchmark"):
        plan = TimingPlan(seconds=request.bench_seconds)
        timed = steps.benchmark_candidates(
            ctx, passing, plan, pool, lambda i, n, label: progress.say(f"    shape point {label} timed ({i}/{n})"),
        ) if passing else {}
    with progress.step("report"):
        candidates = candidates_of(built, accuracies, timed)
        best = select(candidates)
        timings = dict(progress.timings, **overheads(progress))
        report = assemble(request.name, request, fetched, candidates, best, timings)
        if int8:
            report.int8 = int8.summary(best.precision)
            report.notes.extend(int8_notes(report.int8))
        if converted.cached:
            report.notes.append("the ONNX conversion came from the cache (same model bytes, tensor "
                                "information and converter versions).")
        chosen = next(b for b in built if b.key == f"{best.engine}-{best.precision}")
        report.notes.extend(engine_notes(chosen.engine_config))
    with progress.step("package"):
        result = _package(request, fetched, chosen, converted, report, dest, pool)
    publish_artifacts(report, result)
    return result


def _package(request, fetched, chosen, converted, report, dest: Destination, pool: ModelProcess) -> dict:
    from accelflow.reports.render import write_report
    from accelflow.tasks.manifest import manifest_for

    manifest = manifest_for(request.name, request, fetched, chosen, converted, report)
    manifest["io"] = pool.call(package.detector_files, chosen.folder, chosen.io or manifest["io"], pool)
    package.package_result(dest.staging, chosen.folder, manifest, report, write_report)
    return publish_result(dest, request, fetched, report)


__all__ = ["optimize", "preflight"]
