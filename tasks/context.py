"""What every step knows of the model it works on, parsed once and passed as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from accelflow.core.tensor_info import TensorInfo


@dataclass(frozen=True)
class ModelContext:
    model_file: str
    format: str  # a formats module's NAME
    spec: TensorInfo  # the tensor information, parsed
    work_dir: str  # the task's private scratch folder
    threads: int  # every runner gets the same count, or the comparison is unfair
    device: str = "cpu"  # where the original is timed: "cpu", or "cuda" for a GPU machine type
    int_ranges: dict | None = None  # element name -> (low, high) for integer inputs
    onnx_path: str = ""  # set once converted
    io: dict = field(default_factory=dict)  # the conversion's ModelIO.to_dict(), once converted
    trust_model_code: bool = False  # --trust-model-code: loaders may run the model's own code

    def converted(self, converted) -> ModelContext:
        """This context after conversion to ONNX (a tasks.convert.ConvertedModel)."""
        return replace(self, onnx_path=converted.onnx_path, io=converted.io)


@dataclass(frozen=True)
class AccuracyCheck:
    """How the accuracy gate draws its inputs and what it accepts."""

    gate: str  # a level's name, or "qat" (core/levels.py)
    overrides: dict | None = None  # --rtol/--atol/... or the detection options
    samples: str | None = None  # the user's .npz of inputs; random draws otherwise
    draws: int = 3  # random draws per shape point
