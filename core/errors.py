"""The one error hierarchy of accelflow.

Every error a user can cause derives from AccelflowError: the command line prints its
message (what failed, on which input, what to do) without a traceback. Anything else
is a bug and keeps its traceback.
"""


class AccelflowError(Exception):
    """A problem with the user's input, environment or model; the message says how to fix it."""
    title = "error"  # the short reason a task list shows beside its state: "Failed: <title>"


class SpecError(AccelflowError):
    """Tensor information that cannot be parsed or does not fit together."""
    title = "invalid request"


class UnsupportedFormatError(AccelflowError):
    """A model file that is not one of the supported formats, or is unreadable."""
    title = "unsupported model"


class MissingDependencyError(AccelflowError):
    """An optional backend is not installed; the message names the extra to install."""
    title = "missing package"


class ConversionError(AccelflowError):
    """The model could not be converted to ONNX or built by an engine."""
    title = "conversion failed"


class ModelMismatchError(AccelflowError):
    """Tensor information that does not match the model's own inputs."""
    title = "tensor information mismatch"


class AccuracyError(AccelflowError):
    """No optimized candidate stayed within the accuracy tolerances."""
    title = "accuracy gate"


class DeviceError(AccelflowError):
    """An unknown device, or one that is not present on this machine."""
    title = "device"


class EngineError(AccelflowError):
    """An engine that is missing, of the wrong version, or unable to load a result."""
    title = "engine"


class RepositoryError(AccelflowError):
    """A model repository entry that is missing, malformed or cannot be written."""
    title = "model repository"


class ResourceLimitError(AccelflowError):
    """A task that ran out of memory or past its time limit."""
    title = "resource limit"


class UntrustedModelError(SpecError):
    """A model whose loading would run its author's code, refused without --trust-model-code."""
    title = "model would run code"


class ModelProcessError(AccelflowError):
    """The process running a task's model crashed or was killed (tasks/isolation.py)."""
    title = "model process died"


class OutputPathError(AccelflowError):
    """An output path that overlaps the model's home directory or cannot be written."""
    title = "output path"


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The first non-empty line of an exception's text: the gist of most library errors."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def last_line(exc: BaseException, limit: int = 400) -> str:
    """The last non-empty line: TorchScript puts the message after an interpreter traceback."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[-1][:limit] if lines else type(exc).__name__


# The optional parts `bash scripts/install.sh EXTRA` adds, in the user's words, and what it costs.
OPTIONAL_SUPPORT = {
    "tf": ("TensorFlow", "about 2 min"),
    "diffusers": ("Stable Diffusion (diffusers)", "about 1 min"),
    "mmdet": ("MMDetection", "about 15 min, once: mmcv is built from source"),
    "detectron2": ("Detectron2", "about 3 min, once; it lives in an environment of its own, so run its "
                   "accelflow: $(bash scripts/install_detectron2.sh --path)/bin/accelflow"),
    "tensorrt": ("TensorRT", "on a GPU machine"),
    "gpu": ("GPU engine", "on a GPU machine"),
}


def missing_dependency(module: str, extra: str | None = None, why: str = "") -> MissingDependencyError:
    """The error for an import that failed, naming the command that installs it."""
    why = f" ({why})" if why else ""
    if extra is None:
        return MissingDependencyError(f"{module} is not installed{why}; the core install brings it: "
                                      "run `bash scripts/install.sh`.")
    name, cost = OPTIONAL_SUPPORT[extra]
    return MissingDependencyError(f"{name} support is not installed ({module} is missing{why}): "
                                  f"run `bash scripts/install.sh {extra}` ({cost}).")


TRUST_HINT = ("If you trust the model's author, pass --trust-model-code (accelflow.load(..., "
              "trust_model_code=True)); the model then runs in a process without credentials "
              "(docs/security.md).")


def untrusted_model(path: str, format_name: str, risks: list[str]) -> UntrustedModelError:
    """The refusal of a model whose loading runs code: what would run, and how to allow it."""
    shown = "; ".join(risks[:5]) + (f"; and {len(risks) - 5} more" if len(risks) > 5 else "")
    return UntrustedModelError(f"{path}: loading this {format_name} model would run its author's code ({shown}). "
                               f"accelflow refuses model code by default. {TRUST_HINT}")
