"""Save an accelerated task to the model repository (`accelflow tasks save`).

Every file of the original model version's home directory is copied into
`<output>/m-<model id>/mv-<version id>/`, the optimized model into its `model/` subfolder
and the report beside it; the folder is then registered as a new version of the model
`<original>-optimized` (source `optimized`), recording the original model, version and task.

Output, result and repository may each be a local folder or a URI: copies inside one object
store happen server side, never through this machine. The version id is new for every save,
so nothing else writes into its folder; a failed save removes the folder, and the repository
writes a version's metadata last, so it registers nothing half-saved.
"""

from __future__ import annotations

import hashlib
import secrets

from accelflow.core import links
from accelflow.core.errors import RepositoryError
from accelflow.storage.repository import ModelRepository, VersionEntry, parse_model_ref
from accelflow.storage.retry import with_retries
from accelflow.storage.store import Store, is_remote
from accelflow.tasks import publish
from accelflow.tasks.package import slug

OPTIMIZED_SOURCE = "optimized"
OPTIMIZED_FORMAT = "accelflow"


def optimized_model_name(model: str) -> str:
    return f"{model}-optimized"[:128]


def _stable_id(repo_uri: str, name: str) -> str:
    """The optimized model's id, the same for every concurrent first save of it."""
    return hashlib.sha1(f"{repo_uri}\n{name}".encode()).hexdigest()[:8]


def save_task(task_id: str, task_name: str, request: dict, result: dict) -> VersionEntry:
    """Copy, then register; returns the new repository version."""
    result_uri = result.get("result_uri") or result["result_folder"]
    record = publish.read_manifest(result_uri)
    if record["flow_run_id"] != task_id:
        raise publish.ResultError(f"the result at {result_uri} belongs to flow run {record['flow_run_id']}, "
                                  f"not to task {task_name!r}; re-accelerate the task to save it.")
    repository = ModelRepository(request.get("repo"))
    name = optimized_model_name(result["model"])
    version = f"{result['version']}-{slug(task_name)}"[:128]
    _refuse_if_saved(repository, name, version, task_name)
    model_id = _existing_id(repository, name) or _stable_id(repository.uri, name)
    version_id = secrets.token_hex(4)
    output = Store(request["output"], error=RepositoryError)
    folder = output.path(f"m-{model_id}", f"mv-{version_id}")
    try:
        with output.errors(f"save task {task_name!r}"):
            _assemble(repository, request, result_uri, record, output, folder)
        return with_retries(
            lambda: repository.add(name, version, output.uri_of(folder), source=OPTIMIZED_SOURCE,
                                   format=OPTIMIZED_FORMAT, extra=_lineage(task_id, task_name, result),
                                   model_id=model_id, version_id=version_id),
            f"save {name}@{version}", lambda: _added_before(repository, name, version, version_id))
    except BaseException:
        output.remove_quietly(folder)
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


def _assemble(repository, request: dict, result_uri: str, record: dict, output: Store, folder: str) -> None:
    """The original version's files, then the optimized model and the reports over them."""
    with_retries(lambda: _copy_original(repository, request, output, folder), "copy the original model")
    wanted = [f for f in record["files"] if f.startswith("model/") or f in publish.REPORT_FILES]
    with_retries(lambda: publish.copy_into(result_uri, wanted, output, folder), "copy the optimized model")


def _copy_original(repository, request: dict, output: Store, folder: str) -> None:
    ref = parse_model_ref(request["model"])
    if ref is not None:
        repository.copy_version(*ref, output, folder)
        return
    source, files = _original_files(request["model"])
    for path, rel in files:
        output.copy_file(source, path, output.join(folder, rel))


def _original_files(model: str) -> tuple[Store, list[tuple[str, str]]]:
    """The model's home directory: the folder given, or the folder of the file given.

    A symbolic link out of the home directory is refused, naming it and its target: saving
    copies into the repository, where a link to ~/.aws/credentials would publish the secret.
    A link to a file inside is copied as that file (core/links.py)."""
    import os

    if is_remote(model):
        from accelflow.tasks.fetch import remote_home

        home = Store(remote_home(model), error=RepositoryError)
        return home, [(home.path(rel), rel) for rel in home.files(home.root)]
    home = Store(model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model)), error=RepositoryError)
    if os.path.isdir(model):
        return home, [(real, rel) for real, rel in links.files_inside(home.root, RepositoryError)
                      if not rel.startswith(".")]
    from accelflow.formats.onnx_model import companion_files

    paths = [os.path.abspath(model), *companion_files(model)]
    return home, [(links.resolved_inside(home.root, p, RepositoryError),
                   os.path.relpath(p, home.root).replace(os.sep, "/")) for p in paths]


def _lineage(task_id: str, task_name: str, result: dict) -> dict:
    original = {f"original_{k}": result.get(k) for k in ("model", "version", "model_id", "version_id")}
    built = {k: result.get(k) for k in ("engine", "engine_version", "precision", "level", "device", "speedup")}
    return {**original, **built, "task_id": task_id, "task_name": task_name}
