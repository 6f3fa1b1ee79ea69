"""An optimization request: the fields of a new task, checked before any work."""

from __future__ import annotations

import os
from typing import Literal

from accelflow.core import tensor_info
from accelflow.core.accuracy import check_samples
from accelflow.core.errors import SpecError
from accelflow.core.levels import LEVELS, level_help, level_named
from accelflow.storage.store import is_remote
from accelflow.tasks.context import AccuracyCheck
from pydantic import BaseModel, ConfigDict, Field, field_validator

from accelflow import engines

RESULTS_ENV = "ACCELFLOW_RESULTS"
RESULTS_VARIABLE = "accelflow-results"


# The run form of a deployment in the Prefect UI is made from this model's JSON schema: every
# field has a description and a default (an optional one: empty), a choice is an enum (a select), nothing internal
# is here (when a task was made, what it retries, its work queue): those belong to the flow run.
# Descriptions avoid angle brackets: the UI renders them as HTML and drops `<model>`.
LEVEL_CHOICES = tuple(LEVELS)
ENGINE_CHOICES = ("auto", *(engine.NAME for engine in engines.ENGINES))


# The form's labels, where pydantic's (the field's name, title-cased) would read badly.
TITLES = {
    "repo": "Model Repository",
    "qat": "QAT",
    "rtol": "Relative Tolerance",
    "atol": "Absolute Tolerance",
    "min_mask_iou": "Min Mask IoU",
    "int_ranges": "Integer Input Ranges",
    "draws": "Accuracy Draws",
    "bench_seconds": "Benchmark Seconds",
    "time_limit": "Time Limit (seconds)",
    "memory_limit_gb": "Memory Limit (GiB)",
}


def device_choices() -> list[str]:
    """The machine types a task can be sent to: accelflow's known ones, and the CPU classes
    prefect.yaml deploys (any cpu-CLASS is accepted; the form lists those with a deployment)."""
    from accelflow.flows.prefect_yaml import machine_types

    try:
        deployed = machine_types()
    except (OSError, KeyError, TypeError):  # an installed package without the checkout's prefect.yaml
        deployed = []
    known = [*engines.CPU_DEVICES, *engines.GPU_DEVICES]
    return known + [t for t in deployed if t not in known]


def _optional(description: str, **schema) -> dict:
    """Field keywords of an optional value (None: not given) shown as a plain input, not as
    Prefect's `anyOf [X, null]` type picker ("Property is type None")."""
    return {"description": description, "json_schema_extra": lambda s: _drop_null(s, schema)}


def _drop_null(schema: dict, extra: dict) -> None:
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    if schema.get("default", 0) is None:
        del schema["default"]
    schema.update(extra)


def _set_titles(properties: dict) -> None:
    for name, title in TITLES.items():
        properties[name]["title"] = title


class OptimizeRequest(BaseModel):
    """One optimization task: give the model and its tensor information; the rest has defaults.
    (Shown in the UI's run form and by `accelflow tasks show`.)"""

    model_config = ConfigDict(json_schema_extra=lambda schema: _set_titles(schema["properties"]))

    model: str = Field(description="model path, or NAME@VERSION in the model repository")
    tensor_info: list[str] = Field(description="one line per input tensor: element:dtype(shape), "
                                   "for example input_ids:int64(1,128)")
    output: str | None = Field(None, **_optional(
        "folder or URI (s3://bucket/prefix) the result is published under; empty: the server's results "
        "location (ACCELFLOW_RESULTS or the Prefect variable accelflow-results)"))
    level: Literal[LEVEL_CHOICES] = Field("fp16", description=f"optimization level: {level_help()}")
    device: str = Field("cpu", description="deployment machine type the engines are built for: the one the "
                        "deployment serves (optimize/a10: a10)",
                        json_schema_extra=lambda s: s.update(enum=device_choices()))
    name: str | None = Field(None, **_optional(
        "task name, also the run's name and result folder's; empty: the model's name and the level, "
        "for example bert-v1-fp16"))
    tags: list[str] = Field(default_factory=list, description="tags to find the task by",
                            json_schema_extra={"default": []})
    engine: Literal[ENGINE_CHOICES] = Field("auto", description="engine to build with; auto: every "
                                            "engine available, the fastest accurate one wins")
    engine_version: str | None = Field(None, **_optional("pin the engine's version (checked before any work); "
                                                         "empty: the installed one"))
    repo: str | None = Field(None, **_optional("model repository: a folder or s3://bucket/prefix; empty: "
                                               "ACCELFLOW_REPO or ./model-repo"))
    model_file: str | None = Field(None, **_optional("the model file inside a version folder holding several"))
    samples: str | None = Field(None, **_optional(".npz of sample inputs for the accuracy gate (keys: element "
                                                  "names); empty: random inputs"))
    calibration: str | None = Field(None, **_optional(
        "int8: .npz of calibration inputs, or a folder of them (keys as for samples); empty: the samples, else "
        "inputs drawn from the tensor information"))
    qat: bool = Field(False, description="the model was trained with quantization-aware training (INT8 engines)")
    trust_model_code: bool = Field(False, description="allow a model whose loading runs its author's code; it runs "
                                   "in a process without credentials (docs/security.md)")
    steps: int = Field(20, ge=1, le=1000, description="Stable Diffusion: denoising steps of the image check and timing")
    prompt: str | None = Field(None, **_optional("Stable Diffusion: prompt of the image check; empty: a fixed one"))
    guidance: float = Field(7.5, ge=0, description="Stable Diffusion: guidance scale of the image check and timing")
    signature: str | None = Field(None, **_optional("TensorFlow SavedModel signature; empty: serving_default"))
    outputs: list[str] | None = Field(None, **_optional("TensorFlow frozen graph output nodes; empty: its sinks"))
    rtol: float | None = Field(None, **_optional("accuracy: allowed max abs diff relative to the output's scale; "
                                                 "empty: the level's"))
    atol: float | None = Field(None, **_optional("accuracy: allowed absolute diff added to the relative part; "
                                                 "empty: the level's"))
    min_cosine: float | None = Field(None, **_optional("accuracy: lowest cosine similarity allowed; empty: the "
                                                       "level's"))
    # Detectors (MMDetection, Detectron2): thresholds of the detection gate (formats/detections.py).
    min_matched: float | None = Field(None, ge=0, le=1, **_optional(
        "detectors: lowest share of matched detections (0 to 1); empty: the level's"))
    max_score_diff: float | None = Field(None, ge=0, **_optional(
        "detectors: largest score difference of a matched pair; empty: the level's"))
    max_box_diff: float | None = Field(None, ge=0, **_optional(
        "detectors: largest box coordinate difference (pixels) of a matched pair; empty: the level's"))
    min_mask_iou: float | None = Field(None, ge=0, le=1, **_optional(
        "detectors: lowest mask IoU of a matched pair (0 to 1); empty: the level's"))
    int_ranges: dict[str, list[int]] = Field(default_factory=dict, description=(
        "range [LOW, HIGH) of random integer inputs per input name (* for all), for example "
        '{"input_ids": [0, 30522]}'), json_schema_extra={"default": {}})  # the form's JSON editor starts at {}
    draws: int = Field(3, ge=1, le=100, description="random accuracy draws per shape point")
    bench_seconds: float = Field(5.0, gt=0, description="benchmark time per shape point")
    time_limit: float | None = Field(None, gt=0, **_optional("seconds the task may run before it is stopped; "
                                                             "empty: no limit"))
    memory_limit_gb: float | None = Field(None, gt=0, **_optional("GiB of address space the task process may use; "
                                                                  "empty: no limit"))

    @field_validator("level", mode="before")
    @classmethod
    def _canonical_level(cls, value):
        """`FP16`, `Lossless`: the CLI and old stored requests may spell a level otherwise."""
        return level_named(value).name if isinstance(value, str) else value

    @field_validator("device", mode="before")
    @classmethod
    def _canonical_device(cls, value):
        return engines.known_device(value) if isinstance(value, str) else value

    @field_validator("engine", mode="before")
    @classmethod
    def _canonical_engine(cls, value):
        """An unknown engine is refused with the choices (EngineError), as the CLI always did."""
        if isinstance(value, str) and value.lower() != "auto":
            return engines.engine_named(value.lower()).NAME
        return value.lower() if isinstance(value, str) else value

    def gate(self) -> str:
        """Which default tolerances apply: the level's, or INT8's for a QAT model."""
        return "qat" if self.qat else self.level

    def accuracy_check(self) -> AccuracyCheck:
        """How the accuracy step draws its inputs and what it accepts."""
        return AccuracyCheck(self.gate(), self.tolerance_overrides(), self.samples, self.draws)

    def tolerance_overrides(self) -> dict[str, float]:
        values = {"rtol": self.rtol, "atol": self.atol, "min_cosine": self.min_cosine,
                  "min_matched": self.min_matched, "max_score_diff": self.max_score_diff,
                  "max_box_diff": self.max_box_diff, "min_mask_iou": self.min_mask_iou}
        return {k: v for k, v in values.items() if v is not None}

    def format_options(self) -> dict:
        """Options only some formats take; the conversion refuses them for the others."""
        return {"signature": self.signature, "outputs": self.outputs}

    def int_range_map(self) -> dict[str, tuple[int, int]]:
        return {k: (int(v[0]), int(v[1])) for k, v in self.int_ranges.items()}


def check_request(request: OptimizeRequest, local: bool = True) -> OptimizeRequest:
    """Every check that needs no model: level, device, engine and version, tensor information.

    `local=False` (a request submitted to a server) skips what depends on the machine that
    will run it: the engines installed there and the GPU it has.
    Returns the request normalised (canonical level, device and tensor-information lines).
    """
    level = level_named(request.level).name
    device = engines.check_device(request.device) if local else engines.known_device(request.device)
    if local:
        engines.candidates(level, device, request.engine, request.engine_version, request.qat)
    lines = tensor_info.parse(request.tensor_info).lines()
    if request.samples and not is_remote(request.samples):
        if not os.path.isfile(request.samples):
            raise SpecError(f"--samples file not found: {request.samples}")
        check_samples(request.samples)
    _check_calibration(request.calibration, level)
    _check_int_ranges(request.int_ranges)
    name = task_name(request)
    _check_text("task name", name, 200)
    for tag in request.tags:
        _check_text("tag", tag, 64)
    return request.model_copy(update={"level": level, "device": device, "tensor_info": lines, "name": name,
                                      **_absolute_locations(request)})


def _absolute_locations(request: OptimizeRequest) -> dict:
    """Paths and the repository made absolute, so the request means the same in a worker
    started from another folder (a relative path or the default repository would not)."""
    from accelflow.storage.repository import ModelRepository, parse_model_ref

    fields = {"output": _absolute(results_location(request.output)), "repo": ModelRepository(request.repo).uri}
    if parse_model_ref(request.model) is None:
        fields["model"] = _absolute(request.model)
    for option in ("samples", "calibration"):
        if getattr(request, option):
            fields[option] = _absolute(getattr(request, option))
    return fields


def _absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def results_location(output: str | None) -> str:
    """Where a result is published: --output, else the results location of this machine
    (ACCELFLOW_RESULTS), else the server-wide one (the Prefect variable accelflow-results)."""
    location = output or os.environ.get(RESULTS_ENV) or server_results_location()
    if not location:
        raise SpecError(
            "--output is required: the folder or URI (s3://bucket/prefix) the result is published under. "
            f"Or set a default for everyone: prefect variable set {RESULTS_VARIABLE} s3://bucket/results "
            f"(server-wide), or export {RESULTS_ENV}=... (this machine)."
        )
    return location


def server_results_location() -> str | None:
    """The Prefect variable, when a server is configured (the embedded one has no shared settings)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return None
    from prefect.variables import Variable

    value = Variable.get(RESULTS_VARIABLE, default=None)
    return str(value) if value else None


def task_name(request: OptimizeRequest) -> str:
    """The request's name, else MODEL-LEVEL (flows/run_name.py: the run is named so too)."""
    return request.name or default_task_name(request.model, request.gate())


def default_task_name(model: str, level: str) -> str:
    """`bert@v1` -> `bert-v1-fp16`; `models/bert.pt` -> `bert-fp16`."""
    from accelflow.storage.repository import parse_model_ref

    ref = parse_model_ref(model)
    base = "-".join(ref) if ref else os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
    return f"{base or 'model'}-{level}"


def _check_calibration(calibration: str | None, level: str) -> None:
    """Calibration inputs serve the int8 level; a local file or folder is checked as samples are."""
    if not calibration:
        return
    if not level_named(level).int8:
        raise SpecError(f"--calibration calibrates INT8 engines, and --level {level} builds none: use --level int8, "
                        "or drop --calibration.")
    if is_remote(calibration):
        return
    for path in calibration_files(calibration):
        check_samples(path)


def calibration_files(calibration: str) -> list[str]:
    """The .npz files of a --calibration file or folder."""
    if os.path.isfile(calibration):
        return [calibration]
    if not os.path.isdir(calibration):
        raise SpecError(f"--calibration {calibration}: no such file or folder.")
    files = sorted(os.path.join(calibration, f) for f in os.listdir(calibration) if f.endswith(".npz"))
    if not files:
        raise SpecError(f"--calibration {calibration}: the folder holds no .npz file; save calibration inputs "
                        "with np.savez(path, element_name=array, ...).")
    return files


def _check_int_ranges(ranges: dict[str, list[int]]) -> None:
    for name, pair in ranges.items():
        if len(pair) != 2 or pair[0] >= pair[1]:
            raise SpecError(f"--int-range {name}={pair}: give LOW:HIGH with LOW < HIGH (HIGH excluded).")


def _check_text(kind: str, value: str, limit: int) -> None:
    """Names and tags are shown in terminals and the UI: one printable line, of sane length.
    (They never become paths as given: result folders use a slug of the name.)"""
    if not value.strip() or len(value) > limit or not value.isprintable():
        raise SpecError(f"invalid {kind} {value[:80]!r}: use 1 to {limit} printable characters "
                        "(no control characters or line breaks).")
