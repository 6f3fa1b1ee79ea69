"""The `accelflow` command line.

    accelflow optimize MODEL -t LINE ... --level fp16 --output DIR
    accelflow tensor-info LINE ... | -f FILE
    accelflow repo add|list|show ...

User errors (AccelflowError) print one clear message and exit 2, without a traceback
unless --debug is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from formats.errors import AccelflowError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug, getattr(args, "json", False))
    try:
        return args.func(args, started) if args.func is run_optimize else args.func(args)
    except AccelflowError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was kept.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelflow", description="Optimize trained models for inference, and prove it.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own logs")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_optimize(verbs)
    _add_tensor_info(verbs)
    from flows import repo_cli

    repo_cli.register(verbs)
    return parser


def _add_optimize(verbs) -> None:
    p = verbs.add_parser("optimize", help="optimize a model and report the speed-up and accuracy")
    p.add_argument("model", metavar="MODEL", help="model file or folder, or NAME@VERSION in the model repository")
    p.add_argument("-t", "--tensor-info", action="append", default=[], metavar="LINE", help="element:dtype(shape), once per input tensor")
    p.add_argument("--tensor-info-file", metavar="FILE", help="tensor information, one line per input tensor")
    p.add_argument("--level", default="fp16", help="fp16 (default) or lossless")
    p.add_argument("--device", default="cpu", help="deployment machine type (default cpu)")
    p.add_argument("--output", required=True, metavar="PATH", help="folder the result folder is written under")
    p.add_argument("--name", help="task name (default <model>-<level>)")
    p.add_argument("--tag", action="append", default=[], dest="tags", help="a tag; repeatable")
    p.add_argument("--engine", default="auto", help="auto (default: fastest accurate), onnxruntime or openvino")
    p.add_argument("--engine-version", help="pin the engine's version (checked before any work)")
    p.add_argument("--repo", help="model repository: a folder or s3://bucket/prefix (default $ACCELFLOW_REPO or ./model-repo)")
    p.add_argument("--model-file", help="the model file inside a version folder holding several")
    p.add_argument("--samples", metavar="FILE.npz", help="sample inputs for the accuracy gate (keys: element names)")
    p.add_argument("--qat", action="store_true", help="the model was trained with quantization-aware training")
    p.add_argument("--rtol", type=float, help="accuracy: allowed max abs diff relative to the output's scale")
    p.add_argument("--atol", type=float, help="accuracy: allowed absolute diff added to the relative part")
    p.add_argument("--min-cosine", type=float, help="accuracy: lowest cosine similarity allowed")
    p.add_argument("--int-range", action="append", default=[], metavar="NAME=LO:HI", help="range of random integer inputs (HI excluded); NAME may be *")
    p.add_argument("--draws", type=int, default=3, help="random accuracy draws per shape point (default 3)")
    p.add_argument("--bench-seconds", type=float, default=5.0, help="benchmark time per shape point (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result paths and figures")
    p.set_defaults(func=run_optimize)


def _add_tensor_info(verbs) -> None:
    p = verbs.add_parser("tensor-info", help="parse tensor information and print its structure as JSON")
    p.add_argument("lines", nargs="*", metavar="LINE")
    p.add_argument("-f", "--file", help="read the lines from a file")
    p.set_defaults(func=run_tensor_info)


def run_tensor_info(args) -> int:
    from formats import tensor_info

    info = tensor_info.parse(tensor_info.load_lines(args.lines or None, args.file))
    print(json.dumps(info.to_json(), indent=2, ensure_ascii=False))
    return 0


def request_from_args(args, started: float):
    from flows.request import OptimizeRequest
    from formats import tensor_info

    lines = tensor_info.load_lines(args.tensor_info or None, args.tensor_info_file)
    return OptimizeRequest(
        model=args.model, tensor_info=lines, output=args.output, level=args.level,
        device=args.device, name=args.name, tags=args.tags, engine=args.engine,
        engine_version=args.engine_version, repo=args.repo, model_file=args.model_file,
        samples=args.samples, qat=args.qat, rtol=args.rtol, atol=args.atol,
        min_cosine=args.min_cosine, int_ranges=_int_ranges(args.int_range),
        draws=args.draws, bench_seconds=args.bench_seconds, submitted_at=started,
    )


def _int_ranges(items: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for item in items:
        name, _, span = item.rpartition("=")
        lo, _, hi = span.partition(":")
        try:
            ranges[name or "*"] = [int(lo), int(hi)]
        except ValueError:
            raise AccelflowError(f"--int-range {item!r}: write NAME=LOW:HIGH, for example input_ids=0:30522.") from None
    return ranges


def run_optimize(args, started: float) -> int:
    from flows.optimize import optimize, preflight

    request, _ = preflight(request_from_args(args, started))
    result = optimize.with_options(flow_run_name=request.name)(request=request)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result)
    return 0


def _print_summary(result: dict) -> None:
    from reports.render import console_summary
    from reports.results import TaskReport

    with open(result["report_json"], encoding="utf-8") as f:
        report = TaskReport.from_dict(json.load(f))
    print(console_summary(report, result["result_folder"]))


def _configure_logging(debug: bool, quiet: bool) -> None:
    """Our progress lines on stderr; Prefect's console output only with --debug."""
    if not debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("accelflow.progress")
    progress.handlers[:] = [handler]
    progress.setLevel(logging.DEBUG if debug else logging.INFO)
    progress.propagate = False


if __name__ == "__main__":
    sys.exit(main())
