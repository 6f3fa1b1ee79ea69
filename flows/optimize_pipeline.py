"""The optimize flow's path for a Stable Diffusion pipeline (docs/diffusers.md).

The same steps as for one model, each run once per network (text encoder, UNet, VAE
decoder): convert, build, verify, benchmark, choose. Then the whole pipeline: the optimized
one must make the original's image (PSNR) and is timed against it per image; the report and
the result folder cover both levels.
"""

from __future__ import annotations

from accelflow.core.errors import AccuracyError, ModelMismatchError
from accelflow.core.levels import level_named
from accelflow.flows.int8 import Int8Builds, int8_notes
from accelflow.flows.progress import Progress
from accelflow.flows.stages import Destination, build_all, overheads, publish_artifacts, publish_result
from accelflow.reports.results import PipelineReport
from accelflow.tasks import package, pipeline, pipeline_e2e, pipeline_report, steps
from accelflow.tasks.benchmark import TimingPlan
from accelflow.tasks.context import ModelContext
from accelflow.tasks.isolation import ModelProcess
from accelflow.tasks.report import candidates_of


def optimize_pipeline_into(request, fetched, ctx: ModelContext, dest: Destination, progress: Progress,
                           pool: ModelProcess) -> dict:
    """`ctx` is the pipeline's: its folder and the image's tensor information, parsed."""
    if request.qat:
        raise ModelMismatchError("--qat is for models trained with quantization-aware training; a Stable "
                                 "Diffusion pipeline is optimized at --level fp16 or lossless. Drop --qat.")
    run = _PipelineRun(request, ctx, pool, progress)
    with progress.step("convert to ONNX"):
        run.convert()
    with progress.step("build engines"):
        run.build()
    with progress.step("verify accuracy"):
        run.verify()
    with progress.step("benchmark"):
        run.benchmark_and_choose()
        points, notes = run.end_to_end()
    with progress.step("report"):
        report = run.report(fetched, points, notes)
    with progress.step("package"):
        result = _package(run, fetched, report, dest)
    publish_artifacts(report, result)
    return result


def _settings(request) -> pipeline_e2e.Settings:
    return pipeline_e2e.Settings(prompt=request.prompt or pipeline_e2e.PROMPT, steps=request.steps,
                                 guidance_scale=request.guidance)


class _PipelineRun:
    """One pipeline task's networks as they go through the steps: each network's context,
    candidates, accuracies and the one chosen."""

    def __init__(self, request, ctx: ModelContext, pool: ModelProcess, progress: Progress):
        self.request, self.ctx, self.pool, self.progress = request, ctx, pool, progress
        self.settings = _settings(request)
        self.specs = steps.plan_components(ctx.model_file, ctx.spec)
        self.contexts = {s.name: pipeline.component_context(ctx, s) for s in self.specs}
        self.converted, self.built, self.accuracies, self.candidates, self.chosen = {}, {}, {}, {}, {}
        self.int8: dict[str, Int8Builds] = {}  # at the int8 level: each network's INT8 builds and attempts

    def convert(self) -> None:
        for s in self.specs:
            self.converted[s.name] = steps.export_component(self.contexts[s.name], s, self.pool)
            self.contexts[s.name] = self.contexts[s.name].converted(self.converted[s.name])

    def build(self) -> None:
        for s in self.specs:
            self.progress.say(f"  {s.name}:")
            ctx = self.contexts[s.name]  # int8: calibrated on drawn inputs (the pipeline's samples are images)
            int8 = Int8Builds.for_request(self.request, ctx, self.pool, self.progress, own_data=False)
            self.built[s.name] = build_all(self.request, ctx, self.pool, self.progress, int8)
            if int8:
                self.int8[s.name] = int8

    def verify(self) -> None:
        """Each network's candidates; where its INT8 fails, the fallback of the single-model flow."""
        check = self.request.accuracy_check()
        for s in self.specs:
            ctx = self.contexts[s.name]

            def verify(ok, ctx=ctx, s=s):
                return steps.verify_component(ctx, s, ok, check, self.pool) if ok else {}

            self.accuracies[s.name] = verify([b for b in self.built[s.name] if not b.error])
            if s.name in self.int8:
                self.built[s.name], self.accuracies[s.name] = self.int8[s.name].fall_back(
                    self.built[s.name], self.accuracies[s.name], check, verify)

    def benchmark_and_choose(self) -> None:
        """Each network's candidates timed against it in PyTorch; the fastest accurate one chosen."""
        plan = TimingPlan(seconds=self.request.bench_seconds)
        for s in self.specs:
            built, accuracies = self.built[s.name], self.accuracies[s.name]
            passing = [b for b in built if not b.error and accuracies[b.key].passed]
            timed = steps.benchmark_component(self.contexts[s.name], s, passing, plan, self.pool) if passing else {}
            self.candidates[s.name] = candidates_of(built, accuracies, timed)
            best = pipeline.select_component(s.name, self.candidates[s.name])
            self.chosen[s.name] = next(b for b in built if b.key == f"{best.engine}-{best.precision}")
            self.progress.say(f"    {s.name}: {best.engine} {best.precision}, {best.speedup:.2f}x per call")

    def end_to_end(self):
        """The image check, then the timing per image."""
        choice, points, notes = self._same_image()
        with steps.on_device(self.pool, "time the pipeline", timing=True):
            points = self.pool.call(pipeline_e2e.time_pipelines, self.pool, self.ctx.model_file, choice, points,
                                    self.request.bench_seconds, self.settings)
        for p in points:
            self.progress.say(f"    {p.shape_point}: {p.benchmark.baseline.p50 / 1000:.2f} s -> "
                              f"{p.benchmark.optimized.p50 / 1000:.2f} s per call, {p.benchmark.speedup.ratio:.2f}x")
        return points, notes

    def _same_image(self):
        """The optimized pipeline whose image passes, falling back to f32 for the networks chosen at
        reduced precision when their drift over the denoising steps adds up to too much."""
        notes, min_psnr = [], level_named(self.request.level).min_psnr_db
        choice, points = self._check_images(min_psnr)
        fallback = _full_precision(self.chosen, self.candidates, self.specs) if not all(p.passed for p in points) else None
        if fallback:
            notes.append(f"with the fastest networks the image's PSNR was {min(p.psnr_db for p in points):.1f} dB, "
                         f"below {min_psnr:g} dB; {', '.join(fallback)} kept in f32.")
            for name, pick in fallback.items():
                _reselect(self.candidates[name], self.built[name], self.chosen, name, pick)
            choice, points = self._check_images(min_psnr)
        failed = [p for p in points if not p.passed]
        if failed:
            raise AccuracyError(
                "the optimized pipeline's image differs from the original's: "
                + "; ".join(f"{p.shape_point}: PSNR {p.psnr_db:.1f} dB (required >= {min_psnr:g} dB)" for p in failed)
                + ". Try --level lossless."
            )
        return choice, points, notes

    def _check_images(self, min_psnr: float):
        unet_lines = next(s.lines for s in self.specs if s.name == "unet")
        choice = pipeline_e2e.Choice(dict(self.chosen), dict(self.contexts), unet_lines)
        points = self.pool.call(pipeline_e2e.check_images, self.pool, self.ctx.model_file, choice, self.ctx.spec,
                                min_psnr, self.settings)
        for p in points:
            self.progress.say(f"    image {p.shape_point}: PSNR {p.psnr_db:.1f} dB (required >= {p.min_psnr_db:g})")
        return choice, points

    def report(self, fetched, points, notes):
        components = []
        for s in self.specs:
            best = next(c for c in self.candidates[s.name] if c.selected)
            int8 = self.int8[s.name].summary(best.precision) if s.name in self.int8 else {}
            components.append(pipeline_report.component_report(s, self.converted[s.name], self.candidates[s.name],
                                                               best, int8))
        notes = notes + _int8_notes(components)
        summary = PipelineReport(self.pool.call(pipeline.pipeline_class, self.pool, self.ctx.model_file),
                                 self.settings.prompt, self.settings.steps, self.settings.guidance_scale,
                                 self.settings.seed, points)
        timings = dict(self.progress.timings, **overheads(self.progress))
        return pipeline_report.assemble(self.request.name, self.request, fetched, components, summary, timings, notes)


def _int8_notes(components: list) -> list[str]:
    """Each network's INT8 outcome, then the calibration's warnings once."""
    notes = [f"{c.name}: {int8_notes(c.int8)[0]}" for c in components if c.int8]
    warnings = {w for c in components for w in c.int8.get("warnings", [])}
    return notes + sorted(warnings)


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


def _package(run: _PipelineRun, fetched, report, dest: Destination) -> dict:
    from accelflow.reports.render import write_report

    folder, carried = run.pool.call(pipeline_report.pipeline_folder, run.pool, fetched.model_file, dest.work_dir,
                                    run.specs, run.chosen, run.converted)
    manifest = pipeline_report.manifest_for(run.request.name, run.request, fetched, report, carried)
    package.package_result(dest.staging, folder, manifest, report, write_report)
    return publish_result(dest, run.request, fetched, report)
