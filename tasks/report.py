"""Step 7: choose the fastest accurate candidate and assemble the task's report."""

from __future__ import annotations

import datetime as dt

from accelflow.core.errors import AccuracyError, ConversionError
from accelflow.engines.loading import serving_settings
from accelflow.engines.machine import library_versions, machine_info
from accelflow.reports.results import Candidate, TaskReport
from accelflow.reports.stats import geometric_mean


def candidates_of(built: list, accuracies: dict, benchmarks: dict) -> list[Candidate]:
    """One Candidate per build, with its accuracy, timings and mean speed-up where it got that far."""
    result = []
    for b in built:
        rows = benchmarks.get(b.key, [])
        result.append(Candidate(
            engine=b.engine, engine_version=b.engine_version, precision=b.precision,
            build_seconds=round(b.build_seconds, 3), accuracy=accuracies.get(b.key),
            benchmarks=rows, error=b.error,
            speedup=geometric_mean([r.speedup.ratio for r in rows]) if rows else None,
        ))
    return result


def select(candidates: list[Candidate]) -> Candidate:
    """The accurate candidate with the best geometric-mean speed-up over the shape points."""
    timed = [c for c in candidates if c.speedup is not None and c.accuracy and c.accuracy.passed]
    if timed:
        best = max(timed, key=lambda c: c.speedup)
        best.selected = True
        return best
    built = [c for c in candidates if not c.error]
    if not built:
        errors = "; ".join(f"{c.engine} {c.precision}: {c.error}" for c in candidates)
        raise ConversionError(f"no engine could build the model: {errors}")
    reasons = "\n  ".join(f"{c.engine} {c.precision}: {c.accuracy.reason}" for c in built if c.accuracy)
    options = ("--min-matched / --max-box-diff / --max-score-diff" if "detections:" in reasons or "masks:" in reasons
               else "--rtol / --min-cosine")
    raise AccuracyError(
        "no candidate passed the accuracy gate:\n  " + reasons + "\nTry --level lossless, or, "
        f"if these differences are acceptable for your model, loosen the gate with {options}."
    )


def assemble(task_name: str, request, fetched, candidates: list[Candidate], best: Candidate,
             timings: dict[str, float]) -> TaskReport:
    baseline = {r.shape_point: r.baseline for r in best.benchmarks}
    optimized = {r.shape_point: r.optimized for r in best.benchmarks}
    return TaskReport(
        task_name=task_name, model=fetched.name, version=fetched.version, format=fetched.format,
        level=request.level, device=request.device, engine=best.engine,
        engine_version=best.engine_version, precision=best.precision, speedup=best.speedup,
        baseline=baseline, optimized=optimized, accuracy=best.accuracy, candidates=candidates,
        tensor_info=list(request.tensor_info), build_seconds=sum(c.build_seconds for c in candidates),
        timings=timings, library_versions=library_versions(), machine=machine_info(),
        settings=_settings(request, fetched), notes=candidate_notes(request.level, candidates, best),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _settings(request, fetched) -> dict:
    settings = request.model_dump(exclude={"submitted_at"})
    settings["model_file"] = fetched.model_file
    settings["model_home"] = fetched.home
    settings["model_code"] = list(fetched.model_code)  # what of the model runs code (--trust-model-code)
    return settings


def candidate_notes(level: str, candidates: list[Candidate], best: Candidate) -> list[str]:
    notes = []
    reduced = [c for c in candidates if c.precision in ("bf16", "f16")]
    if level == "fp16" and not reduced:
        notes.append("this CPU computes neither bf16 nor f16 natively, so the FP16 level ran in f32.")
    reduced = [c for c in reduced if c.speedup]
    if best.precision == "f32" and reduced:
        slower = ", ".join(f"{c.engine} {c.precision} {c.speedup:.2f}x" for c in reduced)
        notes.append(f"reduced precision was slower than f32 on this CPU ({slower}); f32 was kept.")
    behind = [f"{r.shape_point} ({r.speedup.ratio:.2f}x)" for r in best.benchmarks if r.speedup.ratio < 1.0]
    if behind:
        notes.append(f"the optimized model is slower than the original at: {', '.join(behind)}; "
                     "consider narrowing the tensor information to the shapes you serve.")
    if best.engine == "onnxruntime":
        notes.append("ONNX Runtime's offline-optimized graph may hold layouts specific to this CPU; "
                     "serve it on the same machine type.")
    return notes


def engine_notes(engine_config: dict) -> list[str]:
    """What the chosen engine's build decided that the reader must know (GPU FP16 fallback,
    the threading settings it was timed and is served with)."""
    serving = serving_settings(engine_config)
    fallback = (engine_config or {}).get("fp16", {}).get("fallback")
    if not fallback:
        return [serving] if serving else []
    notes = [f"FP16 fallback: {fallback['reason']}; kept in FP32: {', '.join(fallback['kept_fp32_ops'])}."]
    return notes + ([serving] if serving else [])
