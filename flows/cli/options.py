"""The options that make an optimization request, shared by `optimize` and `tasks retry`.

For `tasks retry` every option defaults to None, meaning "keep the retried task's value".
"""

from __future__ import annotations

import argparse

from accelflow.core.errors import AccelflowError
from accelflow.core.levels import level_help

# (flags, field, argparse keywords, default when creating a task)
_OPTIONS = (
    (("-t", "--tensor-info"), "tensor_info", {"action": "append", "metavar": "LINE", "help": "element:dtype(shape), once per input tensor"}, None),
    (("--tensor-info-file",), "tensor_info_file", {"metavar": "FILE", "help": "tensor information, one line per input tensor"}, None),
    (("--level",), "level", {"help": "default fp16; " + level_help().replace("%", "%%")}, "fp16"),
    (("--device",), "device", {"help": "deployment machine type (default cpu)"}, "cpu"),
    (("--output",), "output", {"metavar": "PATH|URI", "help": "folder or URI (s3://bucket/prefix) the result is published under (default $ACCELFLOW_RESULTS, or the server's Prefect variable accelflow-results)"}, None),
    (("--name",), "name", {"help": "task name (default <model>-<level>)"}, None),
    (("--tag",), "tags", {"action": "append", "help": "a tag; repeatable"}, None),
    (("--engine",), "engine", {"help": "auto (default: fastest accurate), onnxruntime, openvino, tensorrt or onnxruntime-cuda"}, "auto"),
    (("--engine-version",), "engine_version", {"help": "pin the engine's version (checked before any work)"}, None),
    (("--repo",), "repo", {"help": "model repository: a folder or s3://bucket/prefix (default $ACCELFLOW_REPO or ./model-repo)"}, None),
    (("--model-file",), "model_file", {"help": "the model file inside a version folder holding several"}, None),
    (("--samples",), "samples", {"metavar": "FILE.npz", "help": "sample inputs for the accuracy gate (keys: element names)"}, None),
    (("--calibration",), "calibration", {"metavar": "FILE.npz|FOLDER", "help": "int8: calibration inputs, an .npz or a folder of them (default: --samples, else inputs drawn from the tensor information)"}, None),
    (("--signature",), "signature", {"metavar": "NAME", "help": "TensorFlow SavedModel: the signature to optimize (default serving_default)"}, None),
    (("--outputs",), "outputs", {"action": "append", "metavar": "NODE[,NODE]", "help": "TensorFlow frozen graph: output nodes (default: the nodes nothing reads)"}, None),
    (("--steps",), "steps", {"type": int, "help": "Stable Diffusion: denoising steps per image (default 20)"}, 20),
    (("--prompt",), "prompt", {"help": "Stable Diffusion: prompt of the image check"}, None),
    (("--guidance",), "guidance", {"type": float, "help": "Stable Diffusion: guidance scale (default 7.5)"}, 7.5),
    (("--qat",), "qat", {"action": "store_const", "const": True, "help": "the model was trained with quantization-aware training"}, False),
    (("--rtol",), "rtol", {"type": float, "help": "accuracy: allowed max abs diff relative to the output's scale"}, None),
    (("--atol",), "atol", {"type": float, "help": "accuracy: allowed absolute diff added to the relative part"}, None),
    (("--min-cosine",), "min_cosine", {"type": float, "help": "accuracy: lowest cosine similarity allowed"}, None),
    (("--min-matched",), "min_matched", {"type": float, "help": "detectors: lowest share of matched detections (0..1)"}, None),
    (("--max-score-diff",), "max_score_diff", {"type": float, "help": "detectors: largest score difference of a matched pair"}, None),
    (("--max-box-diff",), "max_box_diff", {"type": float, "metavar": "PIXELS", "help": "detectors: largest box coordinate difference of a matched pair"}, None),
    (("--min-mask-iou",), "min_mask_iou", {"type": float, "help": "detectors: lowest mask IoU of a matched pair (0..1)"}, None),
    (("--int-range",), "int_range", {"action": "append", "metavar": "NAME=LO:HI", "help": "range of random integer inputs (HI excluded); NAME may be *"}, None),
    (("--draws",), "draws", {"type": int, "help": "random accuracy draws per shape point (default 3)"}, 3),
    (("--time-limit",), "time_limit", {"type": float, "metavar": "SECONDS", "help": "stop the task and fail it after this long"}, None),
    (("--memory-limit",), "memory_limit_gb", {"type": float, "metavar": "GIB", "help": "fail the task when its process needs more memory than this"}, None),
    (("--trust-model-code",), "trust_model_code", {"action": "store_const", "const": True, "help": "allow a model whose loading runs its author's code (an MMDetection .py config, Detectron2 YAML with python tags, diffusers custom components, TensorFlow file or Python ops); it runs in a process without credentials (docs/security.md)"}, False),
    (("--bench-seconds",), "bench_seconds", {"type": float, "help": "benchmark time per shape point (default 5)"}, 5.0),
)


def add_request_options(parser: argparse.ArgumentParser, editing: bool = False) -> None:
    for flags, field, kwargs, default in _OPTIONS:
        parser.add_argument(*flags, dest=field, default=None if editing else default, **kwargs)
    # Where the task waits, not what it is: passed to the server with the request, not in it.
    parser.add_argument("--resource-group", dest="resource_group",
                        help="resource group (work queue) of the machine type's pool, for --submit"
                             + (" (default: the retried task's)" if editing else ""))


def request_fields(args, editing: bool = False) -> dict:
    """The OptimizeRequest fields the options give (only those given, when editing)."""
    from accelflow.core import tensor_info

    fields = {field: getattr(args, field) for _, field, _, _ in _OPTIONS}
    info_lines, info_file = fields.pop("tensor_info"), fields.pop("tensor_info_file")
    if info_lines or info_file or not editing:
        fields["tensor_info"] = tensor_info.load_lines(info_lines or None, info_file)
    if fields["outputs"] is not None:
        fields["outputs"] = [n.strip() for item in fields["outputs"] for n in item.split(",") if n.strip()]
    ranges = fields.pop("int_range")
    if ranges is not None:
        fields["int_ranges"] = int_ranges(ranges)
    if fields["tags"] is None and not editing:
        fields["tags"] = []
    return {k: v for k, v in fields.items() if v is not None or not editing}


def int_ranges(items: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for item in items:
        name, _, span = item.rpartition("=")
        lo, _, hi = span.partition(":")
        try:
            ranges[name or "*"] = [int(lo), int(hi)]
        except ValueError:
            raise AccelflowError(f"--int-range {item!r}: write NAME=LOW:HIGH, for example input_ids=0:30522.") from None
    return ranges
