"""The optimize flow's path for a Stable Diffusion pipeline (docs/diffusers.md).

The same steps as for one model, each run once per network (text encoder, UNet, VAE
decoder): convert, build, verify, benchmark, choose. Then the whole pipeline: the optimized
one must make the original's image (PSNR) and is timed against it per image; the report and
the result folder cover both levels.
"""

from __future__ import annotations

import os


from accelflow.core.levels import level_named
from accelflow.core.errors import AccuracyError, ModelMismatchError
from accelflow.reports.results import PipelineReport
from accelflow.tasks import package, pipeline, pipeline_e2e, pipeline_report, steps
from accelflow.tasks.benchmark import TimingPlan
from accelflow.tasks.report import candidates_of
from accelflow.flows.stages import build_all, overheads, publish_artifacts, publish_result


def optimize_pipeline_into(request, fetched, output: str, staging, progress, threads: int, run_id: str) -> dict:
    work, path = os.path.join(staging.path, "work"), fetched.model_file
    if request.qat:
        raise ModelMismatchError("--qat is for models trained with quantization-aware training; a Stable "
                                 "Diffusion pipeline is optimized at --level fp16 or lossless. Drop --qat.")
    with progress.step("parse tensor information"):
        lines = steps.parse_tensor_info(request.tensor_info)
        specs = steps.plan_components(path, lines)
    with progress.step("convert to ONNX"):
        converted = {s.name: steps.export_component(path, s, work) for s in specs}
    with progress.step("build engines"):
        built = {}
        for s in specs:
            progress.say(f"  {s.name}:")
            built[s.name] = build_all(request, converted[s.name], s.lines, os.path.join(work, s.name), threads, progress)
    with progress.step("verify accuracy"):
        accuracies = {s.name: _verify(request, path, s, converted[s.name], built[s.name], threads) for s in specs}
    with progress.step("benchmark"):
        candidates, chosen = _benchmark_and_choose(request, path, specs, converted, built, accuracies, threads, progress)
        points, notes = _end_to_end(request, path, lines, specs, converted, built, candidates, chosen,
                                    threads, progress)
    with progress.step("report"):
        components = [pipeline_report.component_report(s, converted[s.name], candidates[s.name],
                                                       next(c for c in candidates[s.name] if c.selected)) for s in specs]
        settings = _settings(request)
        summary = PipelineReport(type(pipeline.original(path)).__name__, settings.prompt, settings.steps,
                                 settings.guidance_scale, settings.seed, points)
        timings = dict(progress.timings, **overheads(request, progress))
        report = pipeline_report.assemble(request.name, request, fetched, components, summary, timings, notes)
    with progress.step("package"):
        result = _package(request, fetched, specs, chosen, converted, report, staging, output, run_id)
    publish_artifacts(report, result)
    return result


def _settings(request) -> pipeline_e2e.Settings:
    return pipeline_e2e.Settings(prompt=request.prompt or pipeline_e2e.PROMPT, steps=request.steps,
                                 guidance_scale=request.guidance)


def _verify(request, path, spec, converted, built, threads) -> dict:
    ok = [b for b in built if not b.error]
    if not ok:
        return {}
    return steps.verify_component(path, spec, converted, ok, request.gate(), request.tolerance_overrides(),
                            request.draws, threads)


def _benchmark_and_choose(request, path, specs, converted, built, accuracies, threads, progress):
    """Each network's candidates timed against it in PyTorch; the fastest accurate one chosen."""
    plan = TimingPlan(seconds=request.bench_seconds)
    candidates, chosen = {}, {}
    for s in specs:
        passing = [b for b in built[s.name] if not b.error and accuracies[s.name][b.key].passed]
        timed = steps.benchmark_component(path, s, converted[s.name], passing, plan, threads) if passing else {}
        candidates[s.name] = candidates_of(built[s.name], accuracies[s.name], timed)
        best = pipeline.select_component(s.name, candidates[s.name])
        chosen[s.name] = next(b for b in built[s.name] if b.key == f"{best.engine}-{best.precision}")
        progress.say(f"    {s.name}: {best.engine} {best.precision}, {best.speedup:.2f}x per call")
    return candidates, chosen


def _end_to_end(request, path, lines, specs, converted, built, candidates, chosen, threads, progress):
    """The image check, then the timing per image."""
    settings = _settings(request)
    optimized, points, notes = _same_image(request, path, lines, specs, converted, built, candidates, chosen,
                                           threads, progress, settings)
    pipeline_e2e.time_pipelines(path, optimized, points, request.bench_seconds, settings)
    for p in points:
        progress.say(f"    {p.shape_point}: {p.benchmark.baseline.p50 / 1000:.2f} s -> "
                     f"{p.benchmark.optimized.p50 / 1000:.2f} s per call, {p.benchmark.speedup.ratio:.2f}x")
    return points, notes


def _same_image(request, path, lines, specs, converted, built, candidates, chosen, threads, progress, settings):
    """The optimized pipeline whose image passes, falling back to f32 for the networks chosen at
    reduced precision when their drift over the denoising steps adds up to too much."""
    notes, min_psnr = [], level_named(request.level).min_psnr_db
    unet_lines = next(s.lines for s in specs if s.name == "unet")
    optimized = pipeline_e2e.optimized_pipeline(path, chosen, converted, unet_lines, threads)
    points = pipeline_e2e.check_images(path, optimized, lines, min_psnr, settings)
    _say_images(progress, points)
    fallback = _full_precision(chosen, candidates, specs) if not all(p.passed for p in points) else None
    if fallback:
        notes.append(f"with the fastest networks the image's PSNR was {min(p.psnr_db for p in points):.1f} dB, "
                     f"below {min_psnr:g} dB; {', '.join(fallback)} kept in f32.")
        for name, pick in fallback.items():
            _reselect(candidates[name], built[name], chosen, name, pick)
        optimized = pipeline_e2e.optimized_pipeline(path, chosen, converted, unet_lines, threads)
        points = pipeline_e2e.check_images(path, optimized, lines, min_psnr, settings)
        _say_images(progress, points)
    failed = [p for p in points if not p.passed]
    if failed:
        raise AccuracyError(
            "the optimized pipeline's image differs from the original's: "
            + "; ".join(f"{p.shape_point}: PSNR {p.psnr_db:.1f} dB (required >= {min_psnr:g} dB)" for p in failed)
            + ". Try --level lossless."
        )
    return optimized, points, notes


def _say_images(progress, points) -> None:
    for p in points:
        progress.say(f"    image {p.shape_point}: PSNR {p.psnr_db:.1f} dB (required >= {p.min_psnr_db:g})")


def _full_precision(chosen: dict, candidates: dict, specs) -> dict:
    """For each network chosen at reduced precision, its fastest accurate f32 candidate."""
    swaps = {}
    for s in specs:
        if chosen[s.name].precision == "f32":
            continue
        f32 = [c for c in candidates[s.name] if c.precision == "f32" and c.speedup and c.accuracy.passed]
        if f32:
            swaps[s.name] = max(f32, key=lambda c: c.speedup)
    return swaps


def _reselect(candidates: list, built: list, chosen: dict, name: str, pick) -> None:
    for c in candidates:
        c.selected = c is pick
    chosen[name] = next(b for b in built if b.key == f"{pick.engine}-{pick.precision}")


def _package(request, fetched, specs, chosen, converted, report, staging, output, run_id) -> dict:
    from accelflow.reports.render import write_report

    pipe = pipeline.original(fetched.model_file)
    folder, carried = pipeline_report.pipeline_folder(fetched.model_file, os.path.join(staging.path, "work"), specs,
                                                      chosen, converted, pipe)
    manifest = pipeline_report.manifest_for(request.name, request, fetched, report, carried)
    package.package_result(staging, folder, manifest, report, write_report)
    return publish_result(staging, output, request, fetched, report, run_id)
