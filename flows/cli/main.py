"""The `accelflow` command line.

    accelflow optimize MODEL... -t LINE ... --level fp16 --output DIR [--submit]
    accelflow tasks list|show|stop|save|retry|delete|tag ...
    accelflow repo add|list|show ...
    accelflow tensor-info LINE ... | -f FILE
    accelflow server [--port N] [--limit K]
    accelflow deploy [--git-url URL]          (a fleet: pools, deployments, lost-run detection)
    accelflow worker --pool TYPE [--limit K]  (a fleet: run one machine type's tasks here)

User errors (AccelflowError) print one clear message and exit 2, without a traceback
unless --debug is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from accelflow.core.errors import AccelflowError

EXIT_USER_ERROR = 2
EXIT_STOPPED = 3


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    try:
        return args.func(args)
    except AccelflowError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was kept.", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__name__ != "CancelledRun" or args.debug:
            raise
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED


def build_parser() -> argparse.ArgumentParser:
    from accelflow.flows.cli import repo as repo_cli
    from accelflow.flows.cli import tasks as tasks_cli
    from accelflow.flows.service import fleet, server

    parser = argparse.ArgumentParser(prog="accelflow", description="Optimize trained models for inference, and prove it.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own logs")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_optimize(verbs)
    tasks_cli.register(verbs)
    repo_cli.register(verbs)
    _add_tensor_info(verbs)
    server.register(verbs)
    fleet.register(verbs)
    return parser


def _add_optimize(verbs) -> None:
    from accelflow.flows.cli.options import add_request_options

    p = verbs.add_parser("optimize", help="optimize models and report the speed-up and accuracy")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model file or folder, or NAME@VERSION[,VERSION...] in the model repository")
    add_request_options(p)
    p.add_argument("--submit", action="store_true", help="send to the server at PREFECT_API_URL and return at once")
    p.add_argument("--json", action="store_true", help="print JSON (the result, or the submitted tasks)")
    p.set_defaults(func=run_optimize)


def _add_tensor_info(verbs) -> None:
    p = verbs.add_parser("tensor-info", help="parse tensor information and print its structure as JSON")
    p.add_argument("lines", nargs="*", metavar="LINE")
    p.add_argument("-f", "--file", help="read the lines from a file")
    p.set_defaults(func=run_tensor_info)


def run_tensor_info(args) -> int:
    from accelflow.core import tensor_info

    info = tensor_info.parse(tensor_info.load_lines(args.lines or None, args.file))
    print(json.dumps(info.to_json(), indent=2, ensure_ascii=False))
    return 0


def run_optimize(args) -> int:
    from accelflow.flows.cli.options import request_fields
    from accelflow.flows.cli.submit import run_inline, submit_requests
    from accelflow.flows.fanout import DEFAULT_BATCH_NAME, child_requests
    from accelflow.flows.request import OptimizeRequest

    base = OptimizeRequest(model=args.models[0], **request_fields(args))
    requests = child_requests(base, args.models)
    if args.submit:
        return submit_requests(requests, base.name or DEFAULT_BATCH_NAME, args.json, args.resource_group)
    return run_inline(requests, base.name or DEFAULT_BATCH_NAME, args.json)


def _configure_logging(debug: bool) -> None:
    """Our progress lines on stderr; Prefect's console output only with --debug."""
    from accelflow.flows.embedded import prefer_patient_startup

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefer_patient_startup()
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
