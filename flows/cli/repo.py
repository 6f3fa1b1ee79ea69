"""The ``accelflow repo`` verbs: add, list and show models of the model repository.

``flows/cli/main.py`` calls :func:`register` with its subparsers; each verb sets ``args.func``,
which returns the exit code. Errors are AccelflowError subclasses, printed by the main CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from accelflow.core.errors import UnsupportedFormatError
from accelflow.storage.repository import ModelEntry, ModelRepository, VersionEntry, check_name

_REPO_HELP = "model repository: a folder or s3://bucket/prefix (default: $ACCELFLOW_REPO or ./model-repo)"


def register(subparsers) -> None:
    """Add the ``repo`` verb group (add, list, show) to the main CLI's subparsers."""
    repo = subparsers.add_parser("repo", help="add, list and show models in the model repository")
    verbs = repo.add_subparsers(dest="repo_verb", metavar="VERB", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", metavar="URI", help=_REPO_HELP)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _register_add(verbs, common)
    _register_list(verbs, common)
    _register_show(verbs, common)


def _register_add(verbs, common) -> None:
    add = verbs.add_parser("add", parents=[common], help="add a file or folder as a new model version")
    add.add_argument("name", help="model name")
    add.add_argument("version", help="version name, new for this model (e.g. v1)")
    add.add_argument("path", help="the model file, or its folder (copied recursively); or its URI, copied inside the store (needs --format)")
    add.add_argument("--source", required=True, help="how the model got here, e.g. uploaded, training")
    add.add_argument("--format", help="model format, e.g. onnx, torchscript (default: detected)")
    add.add_argument("--trust-model-code", action="store_true",
                     help="add a model whose loading runs its author's code (docs/security.md)")
    add.set_defaults(func=cmd_add)


def _register_list(verbs, common) -> None:
    lst = verbs.add_parser("list", parents=[common], help="list models and their versions")
    lst.add_argument("--source", help="only models of this source")
    lst.set_defaults(func=cmd_list)


def _register_show(verbs, common) -> None:
    show = verbs.add_parser("show", parents=[common], help="show a model, or one version")
    show.add_argument("ref", metavar="NAME[@VERSION]", help="a model, or a model version")
    show.set_defaults(func=cmd_show)


def cmd_add(args) -> int:
    # Names first: a bad name should not wait for format detection.
    check_name(args.name, "model")
    check_name(args.version, "version")
    repo = ModelRepository(args.repo)
    fmt = args.format or _detect_format(args.path)
    extra = _model_code(args.path, fmt, args.trust_model_code, given=bool(args.format))
    entry = repo.add(args.name, args.version, args.path, source=args.source, format=fmt, extra=extra)
    if args.json:
        _print_json(entry)
    else:
        print(f"added {entry.model}@{entry.version} (format {fmt}, source {args.source}) "
              f"to {repo.uri}: {len(entry.files)} file(s)")
        print(f"home: {entry.home}")
    return 0


def _model_code(path: str, format_name: str, trusted: bool, given: bool) -> dict | None:
    """A local model whose loading runs code is refused unless trusted; the version records it.
    (A URI is checked when a task fetches it: nothing is downloaded here.)"""
    from accelflow.formats import check_model_code, find_model_file, format_named
    from accelflow.storage.store import is_remote

    if is_remote(path):
        return {"trust_model_code": True} if trusted else None
    try:
        model_file = find_model_file(path)
    except UnsupportedFormatError:
        if not given:
            raise
        model_file = path  # --format named it: what was given is what is checked
    risks = check_model_code(format_named(format_name), model_file, trusted)
    return {"trust_model_code": True, "model_code": risks} if trusted else None


def _detect_format(path: str) -> str:
    from accelflow.storage.store import is_remote

    if is_remote(path):  # detection reads the file: name the format rather than download it here
        raise UnsupportedFormatError(f"give the format of {path} with --format (for example --format onnx): "
                                     "it is detected only for local files.")
    try:
        from accelflow.formats import detect_format_name  # lazy: detection may import heavy backends
    except ImportError as exc:
        raise UnsupportedFormatError(
            f"cannot detect the format of {path!r} ({exc}); pass it with --format, "
            "e.g. --format onnx"
        ) from exc
    name = detect_format_name(path)
    if not name:
        raise UnsupportedFormatError(f"cannot detect the format of {path!r}; pass it with --format")
    return name


def cmd_list(args) -> int:
    repo = ModelRepository(args.repo)
    models = repo.list(source=args.source)
    if args.json:
        _print_json(models)
    elif not models:
        which = f" with source {args.source!r}" if args.source else ""
        print(f"no models{which} in {repo.uri}; add one with: accelflow repo add NAME VERSION PATH --source S")
    else:
        from accelflow.flows.cli import console  # rich: imported only when a table is printed

        rows = [[m.name, m.id, m.source, m.format, ", ".join(m.versions), m.created] for m in models]
        console.print_table(["NAME", "ID", "SOURCE", "FORMAT", "VERSIONS", "CREATED"], rows,
                            wrap=("NAME", "VERSIONS"))
    return 0


def cmd_show(args) -> int:
    name, _, version = args.ref.partition("@")
    if "@" in args.ref:
        check_name(version, "version")  # "bert@" is a typo, not a request for the model
    entry = ModelRepository(args.repo).show(name, version or None)
    if args.json:
        _print_json(entry)
    elif isinstance(entry, ModelEntry):
        _print_model(entry)
    else:
        _print_version(entry)
    return 0


def _print_model(model: ModelEntry) -> None:
    _print_fields([("model", model.name), ("id", model.id), ("source", model.source),
                   ("format", model.format), ("created", model.created),
                   ("versions", ", ".join(model.versions) or "(none)")])


def _print_version(entry: VersionEntry) -> None:
    _print_fields([("model", f"{entry.model} ({entry.model_id})"), ("version", entry.version),
                   ("id", entry.id), ("created", entry.created), ("home", entry.home)])
    print("files:")
    for name in entry.files:
        print(f"  {name}")
    if entry.extra:
        print("extra:")
        for line in json.dumps(entry.extra, indent=2, sort_keys=True).splitlines():
            print(f"  {line}")


def _print_fields(pairs: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        print(f"{key + ':':<{width}} {value}")


def _print_json(value) -> None:
    if isinstance(value, list):
        data = [dataclasses.asdict(item) for item in value]
    else:
        data = dataclasses.asdict(value)
    print(json.dumps(data, indent=2, sort_keys=True))
