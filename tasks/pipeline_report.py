"""Steps 7-8 for a pipeline: one TaskReport for the whole pipeline, and its result folder.

The report's headline fields describe the pipeline end to end (latency per image call,
speed-up, every network's accuracy); `components` holds each network's own report with its
candidates, and `pipeline` the image check and the seconds per image of each network.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import replace

from accelflow.core import VERSION
from accelflow.engines.machine import library_versions, machine_info
from accelflow.formats import diffusers_pipeline
from accelflow.reports.results import Accuracy, ComponentReport, PipelineReport, TaskReport
from accelflow.reports.stats import geometric_mean
from accelflow.tasks import report as model_report
from accelflow.tasks.manifest import model_code_fields

NETWORK_SOURCES = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}


def component_report(spec, converted, candidates: list, best, int8: dict | None = None) -> ComponentReport:
    return ComponentReport(
        name=spec.name, tensor_info=list(spec.lines), engine=best.engine, engine_version=best.engine_version,
        precision=best.precision, speedup=best.speedup, accuracy=best.accuracy, candidates=candidates,
        export_seconds=round(converted.seconds, 3), int8=int8 or {},
    )


def assemble(task_name: str, request, fetched, components: list[ComponentReport], pipeline: PipelineReport,
             timings: dict[str, float], notes: list[str]) -> TaskReport:
    points = pipeline.points
    return TaskReport(
        task_name=task_name, model=fetched.name, version=fetched.version, format=fetched.format,
        level=request.level, device=request.device, engine=_joined(c.engine for c in components),
        engine_version=_engine_versions(components),
        precision=_joined(c.precision for c in components),
        speedup=geometric_mean([p.benchmark.speedup.ratio for p in points]),
        baseline={p.shape_point: p.benchmark.baseline for p in points},
        optimized={p.shape_point: p.benchmark.optimized for p in points},
        accuracy=_accuracy(components, pipeline), candidates=[], tensor_info=list(request.tensor_info),
        build_seconds=sum(c.build_seconds for comp in components for c in comp.candidates),
        timings=timings, library_versions=library_versions(), machine=machine_info(),
        settings=dict(request.model_dump(exclude={"submitted_at"}), model_file=fetched.model_file, model_home=fetched.home,
                      model_code=list(fetched.model_code)),
        notes=notes + _component_notes(request.level, components),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        components=components, pipeline=pipeline,
    )


def _joined(values) -> str:
    """One value when every network agrees, else each distinct one joined by '+'."""
    return "+".join(dict.fromkeys(values))


def _engine_versions(components: list[ComponentReport]) -> str:
    """The engine's version when one engine built every network, else `engine version` of each."""
    if len({c.engine for c in components}) == 1:
        return _joined(c.engine_version for c in components)
    return _joined(f"{c.engine} {c.engine_version}" for c in components)


def _accuracy(components: list[ComponentReport], pipeline: PipelineReport) -> Accuracy:
    """Every network's outputs (named network/output) and the image check, as one verdict."""
    outputs = [replace(o, output=f"{c.name}/{o.output}") for c in components for o in c.accuracy.outputs]
    failed = [f"image at {p.shape_point}: PSNR {p.psnr_db:.1f} dB (required >= {p.min_psnr_db:g} dB)"
              for p in pipeline.points if not p.passed]
    failed += [f"{c.name}: {c.accuracy.reason}" for c in components if not c.accuracy.passed]
    return Accuracy(passed=not failed, draws=sum(c.accuracy.draws for c in components), outputs=outputs,
                    reason="; ".join(failed))


def _component_notes(level: str, components: list[ComponentReport]) -> list[str]:
    return [f"{c.name}: {note}" for c in components
            for note in model_report.candidate_notes(level, c.candidates, next(x for x in c.candidates if x.selected))]


# ---------------------------------------------------------------- result folder


def pipeline_folder(pool, path: str, work: str, specs: list, chosen: dict, converted: dict) -> tuple[str, list[str]]:
    """<work>/pipeline: the original model_index.json and small components (tokenizer, scheduler,
    ...) as saved by diffusers, and one optimized model folder per network. Returns the folder
    and the names of the components copied as they were. (`pool` holds the original pipeline,
    whose network configs each network folder keeps.)"""
    from accelflow.engines.pipeline_result import CONFIG
    from accelflow.engines.result import write_manifest
    from accelflow.tasks.pipeline import original

    pipe = original(pool, path)
    folder = os.path.join(work, "pipeline")
    os.makedirs(folder)
    shutil.copy2(os.path.join(path, diffusers_pipeline.INDEX), folder)
    carried = _carried(path)
    for name in carried:
        shutil.copytree(os.path.join(path, name), os.path.join(folder, name))
    for spec in specs:
        target = os.path.join(folder, spec.name)
        shutil.move(chosen[spec.name].folder, target)
        write_manifest(target, _network_manifest(spec, chosen[spec.name], converted[spec.name]))
        with open(os.path.join(target, CONFIG), "w", encoding="utf-8") as f:
            json.dump(diffusers_pipeline.config_dict(getattr(pipe, NETWORK_SOURCES[spec.name])), f, indent=2)
    return folder, carried


def _carried(path: str) -> list[str]:
    """The pipeline's components that are not optimized networks: tokenizer, scheduler, ..."""
    index = diffusers_pipeline.read_index(path)
    return [name for name, entry in index.items()
            if isinstance(entry, list) and entry[0] and name not in NETWORK_SOURCES.values()]


def _network_manifest(spec, built, converted) -> dict:
    return {
        "component": spec.name, "format": "diffusers-component", "engine": built.engine,
        "engine_version": built.engine_version, "precision": built.precision,
        "engine_config": built.engine_config, "io": converted.io, "tensor_info": list(spec.lines),
    }


def manifest_for(task_name: str, request, fetched, report: TaskReport, carried: list[str]) -> dict:
    return {
        "task_name": task_name, "model": fetched.name, "version": fetched.version, "format": fetched.format,
        "level": request.level, "device": request.device, "engine": report.engine,
        "engine_version": report.engine_version, "precision": report.precision,
        "pipeline_class": report.pipeline.pipeline_class,
        "components": {c.name: {"engine": c.engine, "engine_version": c.engine_version, "precision": c.precision,
                                "tensor_info": c.tensor_info} for c in report.components},
        "carried": carried, "tensor_info": list(report.tensor_info), "speedup": report.speedup,
        "machine": report.machine, "library_versions": report.library_versions,
        "accelflow_version": VERSION, "created": report.created, **model_code_fields(request, fetched),
        "load": "import accelflow; pipe = accelflow.load_pipeline(RESULT_FOLDER); image = pipe(prompt).images[0]",
    }
