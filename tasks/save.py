"""Save an accelerated task to the model repository (SPEC 4).

Every file of the original model version's home directory is copied into
`<output>/m-<model id>/mv-<version id>/`, the optimized model into its `model/` subfolder
and the report beside it; the folder is then registered as a new version of the model
`<original>-optimized` (source `optimized`), recording the original model, version and task.
The folder is assembled under a `.partial-*` name and renamed at the end, and the
repository writes a version's metadata last, so a failed save leaves no partial registration.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil

from formats.errors import RepositoryError
from tasks.package import PARTIAL_PREFIX, slug
from tasks.repository import ModelRepository, VersionEntry, parse_model_ref
from tasks.retry import with_retries

OPTIMIZED_SOURCE = "optimized"
OPTIMIZED_FORMAT = "accelflow"
REPORT_FILES = ("report.json", "report.md", "report.html")


def optimized_model_name(model: str) -> str:
    return f"{model}-optimized"[:128]


def _stable_id(repo_uri: str, name: str) -> str:
    """The optimized model's id, the same for every concurrent first save of it."""
    return hashlib.sha1(f"{repo_uri}\n{name}".encode()).hexdigest()[:8]


def save_task(task_id: str, task_name: str, request: dict, result: dict) -> VersionEntry:
    """Copy, then register; returns the new repository version."""
    repository = ModelRepository(request.get("repo"))
    name = optimized_model_name(result["model"])
    version = f"{result['version']}-{slug(task_name)}"[:128]
    _refuse_if_saved(repository, name, version, task_name)
    model_id = _existing_id(repository, name) or _stable_id(repository.uri, name)
    version_id = secrets.token_hex(4)
    folder = os.path.join(request["output"], f"m-{model_id}", f"mv-{version_id}")
    _assemble(repository, request, result, folder)
    try:
        return with_retries(
            lambda: repository.add(name, version, folder, source=OPTIMIZED_SOURCE, format=OPTIMIZED_FORMAT,
                                   extra=_lineage(task_id, task_name, result), model_id=model_id,
                                   version_id=version_id),
            f"save {name}@{version}", lambda: _added_before(repository, name, version, version_id))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _added_before(repository, name: str, version: str, version_id: str) -> VersionEntry | None:
    """The version, when an attempt whose answer was lost did register it."""
    try:
        entry = repository.version(name, version)
    except RepositoryError:
        return None
    return entry if entry.id == version_id else None


def _refuse_if_saved(repository, name: str, version: str, task_name: str) -> None:
    try:
        existing = repository.version(name, version)
    except RepositoryError:
        return
    raise RepositoryError(f"task {task_name!r} is already saved as {name}@{version} ({existing.home}).")


def _existing_id(repository, name: str) -> str | None:
    try:
        return repository.show(name).id
    except RepositoryError:
        return None


def _assemble(repository, request: dict, result: dict, folder: str) -> None:
    """Build the saved folder under a temporary name beside it, then rename it into place."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f"{PARTIAL_PREFIX}{os.path.basename(folder)}")
    try:
        _copy_original(repository, request, result, staging)
        shutil.copytree(os.path.join(result["result_folder"], "model"), os.path.join(staging, "model"))
        for report in REPORT_FILES:
            shutil.copy2(os.path.join(result["result_folder"], report), staging)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _copy_original(repository, request: dict, result: dict, dest: str) -> None:
    ref = parse_model_ref(request["model"])
    if ref is not None:
        repository.fetch(*ref, dest)
        return
    os.makedirs(dest, exist_ok=True)
    source = request["model"]
    if os.path.isdir(source):
        shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        return
    from formats.onnx_model import companion_files

    for path in [source, *companion_files(source)]:
        shutil.copy2(path, dest)


def _lineage(task_id: str, task_name: str, result: dict) -> dict:
    original = {f"original_{k}": result.get(k) for k in ("model", "version", "model_id", "version_id")}
    built = {k: result.get(k) for k in ("engine", "engine_version", "precision", "level", "device", "speedup")}
    return {**original, **built, "task_id": task_id, "task_name": task_name}
