"""The results of one optimization task, computed once by the tasks and only rendered here.

Everything is plain data (dataclasses of str/float/int/bool/list/dict) so that it converts
to JSON losslessly with `dataclasses.asdict` and back with `TaskReport.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from accelflow.core.accuracy import Accuracy, OutputAccuracy


@dataclass
class LatencyStats:
    """Latency of one runner at one shape point, in milliseconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    std: float
    iterations: int
    throughput: float  # samples per second: batch size * 1000 / mean


@dataclass
class Speedup:
    """Baseline p50 / optimized p50 with a bootstrap confidence interval over rounds."""

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95


@dataclass
class ShapeBenchmark:
    """Baseline and one candidate timed interleaved at one shape point."""

    shape_point: str  # "min", "mid", "max", "fixed" or "choice 0", ...
    shapes: dict[str, list[int]]  # element name -> concrete shape
    baseline: LatencyStats
    optimized: LatencyStats
    speedup: Speedup


@dataclass
class Candidate:
    """One engine configuration that was built, checked and (if accurate) timed."""

    engine: str
    engine_version: str
    precision: str  # the precision the engine computes in: f32, bf16, f16, int8
    build_seconds: float
    accuracy: Accuracy | None = None
    benchmarks: list[ShapeBenchmark] = field(default_factory=list)
    speedup: float | None = None  # geometric mean of per-shape p50 speed-ups
    selected: bool = False
    error: str = ""  # build or run failure, in words
    notes: list[str] = field(default_factory=list)


@dataclass
class ComponentReport:
    """One network of a pipeline (text encoder, UNet, VAE decoder), optimized as a model."""

    name: str
    tensor_info: list[str]
    engine: str
    engine_version: str
    precision: str
    speedup: float  # per call: geometric mean of p50 speed-ups over its shape points
    accuracy: Accuracy
    candidates: list[Candidate]
    export_seconds: float
    int8: dict = field(default_factory=dict)  # at the int8 level: as TaskReport.int8, for this network


@dataclass
class PipelinePoint:
    """The whole pipeline at one image shape point: same image (PSNR), and its time per image."""

    shape_point: str
    shapes: dict[str, list[int]]  # {"image": [N, 3, H, W]}
    psnr_db: float
    min_psnr_db: float
    max_abs_diff: float
    passed: bool
    benchmark: ShapeBenchmark | None = None  # ms per pipeline call (N images)
    baseline_seconds: dict[str, float] = field(default_factory=dict)  # per image, per network and "other"
    optimized_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class PipelineReport:
    """How the end-to-end image check and timing were run, and what they found."""

    pipeline_class: str
    prompt: str
    steps: int
    guidance_scale: float
    seed: int
    points: list[PipelinePoint]


@dataclass
class TaskReport:
    """Everything report.json holds; its fields are a contract others read (README, 'Report')."""

    task_name: str
    model: str
    version: str
    format: str
    level: str
    device: str
    engine: str
    engine_version: str
    precision: str
    speedup: float
    baseline: dict[str, LatencyStats]  # shape point -> stats of the original model
    optimized: dict[str, LatencyStats]  # shape point -> stats of the selected candidate
    accuracy: Accuracy
    candidates: list[Candidate]
    tensor_info: list[str]
    build_seconds: float
    timings: dict[str, float]  # step -> seconds, orchestration included
    library_versions: dict[str, str]
    machine: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    created: str = ""
    components: list[ComponentReport] = field(default_factory=list)  # pipelines only
    pipeline: PipelineReport | None = None  # pipelines only
    # int8 level: outcome, method, calibration, quantized_ops, kept_in_float, attempts, warnings (flows/int8.py)
    int8: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskReport":
        return _from_dict(cls, data)


def _from_dict(cls, data):
    """Rebuild nested dataclasses from `asdict` output (the inverse of asdict for our types)."""
    kwargs = {}
    hints = {f.name: f.type for f in fields(cls)}
    for name, value in data.items():
        if name not in hints:
            continue
        kwargs[name] = _convert(hints[name], value)
    return cls(**kwargs)


_NESTED = {}


def _convert(hint: str, value):
    for type_name, cls in _NESTED.items():
        if value is None:
            return None
        if hint in (type_name, f"{type_name} | None"):
            return _from_dict(cls, value)
        if hint == f"list[{type_name}]":
            return [_from_dict(cls, v) for v in value]
        if hint == f"dict[str, {type_name}]":
            return {k: _from_dict(cls, v) for k, v in value.items()}
    return value


_NESTED.update(
    {
        c.__name__: c
        for c in (LatencyStats, Speedup, ShapeBenchmark, OutputAccuracy, Accuracy, Candidate,
                  ComponentReport, PipelinePoint, PipelineReport)
    }
)
