"""Results in any store: published so that a reader never sees half of one.

A result is a folder `<output>/<slug of the task name>[-N]/` holding `model/`, the reports
and, written last, `accelflow-result.json` (the result manifest: which flow run made it, and
every file with its size). Readers take a folder as a result only when its manifest is
there and complete; everything else is work in progress or the leftover of a failed task.

- Local output: the staging folder beside it gets the manifest, then one atomic rename.
- A URI (s3://...): the publisher first claims the folder name by creating
  `.accelflow-claim.json` there exclusively (a conditional PUT), uploads the files, and
  writes the manifest last. A failed upload removes what it wrote. A claim without a
  manifest whose flow run has ended (the worker died mid-upload) is removed by the next
  task publishing under the same output.

Deleting a result checks that its manifest names the task's flow run and that it lies under
a results location the caller trusts: the URI comes from a Prefect artifact, and the
Prefect API has no authentication.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
from collections.abc import Callable, Iterable

from accelflow.core.errors import AccelflowError
from accelflow.storage.store import Store, is_remote
from accelflow.tasks.package import Staging, finalize_local, result_names, start_staging

RESULT_MANIFEST = "accelflow-result.json"
CLAIM = ".accelflow-claim.json"
KIND = "accelflow-result"
REPORT_FILES = ("report.json", "report.md", "report.html")
CACHE_ENV = "ACCELFLOW_RESULT_CACHE"


class ResultError(AccelflowError):
    """A result that is missing, unfinished, not the task's, or outside the trusted locations."""
    title = "result"


def result_store(uri: str) -> Store:
    return Store(uri, error=ResultError)


def publish(staging: Staging, output: str, name: str, run_id: str,
            claim_is_stale: Callable[[dict], bool] = lambda claim: False) -> str:
    """Publish the staging folder as a result under `output`; returns the result's URI."""
    record = _record(staging.path, name, run_id)
    if not is_remote(output):
        _write_manifest_file(staging.path, record)
        return finalize_local(staging, output, name)
    store = result_store(output)
    try:
        with store.errors(f"publish result {name!r}"):
            remove_dead_claims(store, claim_is_stale)
            return _upload(store, staging.path, name, record)
    finally:
        staging.discard()


def _record(folder: str, name: str, run_id: str) -> dict:
    files = {}
    for dirpath, _, names in os.walk(folder):
        for entry in names:
            path = os.path.join(dirpath, entry)
            if os.path.islink(path):
                raise ResultError(f"refusing to publish a symbolic link: {path}")
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    return {"kind": KIND, "version": 1, "flow_run_id": str(run_id), "task_name": name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "files": dict(sorted(files.items()))}


def _write_manifest_file(folder: str, record: dict) -> None:
    import json

    with open(os.path.join(folder, RESULT_MANIFEST), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def _upload(store: Store, local: str, name: str, record: dict) -> str:
    for folder_name in result_names(name):
        folder = store.path(folder_name)
        if not _claim(store, folder, record):
            continue
        try:
            for rel in record["files"]:
                store.put_file(os.path.join(local, *rel.split("/")), store.path(folder_name, rel))
            if not store.create_json(store.path(folder_name, RESULT_MANIFEST), record):
                raise ResultError(f"{store.uri_of(folder)} got a manifest from another writer while claimed")
        except BaseException:
            store.remove_files_quietly([store.path(folder_name, rel) for rel in record["files"]])
            store.remove_quietly(store.path(folder_name, CLAIM))  # last: the name is ours until then
            raise
        return store.uri_of(folder)
    raise ResultError(f"no free result folder name under {store.uri} for {name!r}.")


def _claim(store: Store, folder: str, record: dict) -> bool:
    """Take the folder name for this run: only a folder with no manifest and no claim."""
    manifest = f"{folder}/{RESULT_MANIFEST}"
    if store.exists(manifest):
        return False
    claim = {k: record[k] for k in ("kind", "flow_run_id", "task_name", "created", "host")}
    if not store.create_json(f"{folder}/{CLAIM}", claim):
        return False
    if store.exists(manifest):  # finished by another writer between the check and the claim
        store.remove_quietly(f"{folder}/{CLAIM}")
        return False
    return True


def remove_dead_claims(store: Store, claim_is_stale: Callable[[dict], bool]) -> list[str]:
    """Remove unfinished uploads (a claim, no manifest) whose flow run has ended."""
    removed = []
    for name in store.children(store.root):
        folder = store.path(name)
        claim = _read_quietly(store, f"{folder}/{CLAIM}")
        if claim is None or store.exists(f"{folder}/{RESULT_MANIFEST}") or not claim_is_stale(claim):
            continue
        # The claim last: the name stays taken until everything else is gone.
        store.remove_files_quietly([f"{folder}/{rel}" for rel in store.files(folder) if rel != CLAIM])
        store.remove_quietly(f"{folder}/{CLAIM}")
        removed.append(store.uri_of(folder))
    return removed


def _read_quietly(store: Store, path: str) -> dict | None:
    try:
        return store.read_json(path)
    except AccelflowError:
        return None


def result_row(uri: str, request, fetched, report) -> dict:
    """What the task list records of a published result (a Prefect table artifact)."""
    return {
        "task_name": request.name, "result_uri": uri, "result_folder": uri, "model_folder": f"{uri}/model",
        **{f"report_{kind}": f"{uri}/report.{ext}" for kind, ext in (("json", "json"), ("markdown", "md"),
                                                                      ("html", "html"))},
        "host": platform.node(), "speedup": report.speedup, "engine": report.engine,
        "engine_version": report.engine_version, "precision": report.precision,
        "accuracy_passed": report.accuracy.passed, "model": fetched.name, "version": fetched.version,
        "model_id": fetched.model_id, "version_id": fetched.version_id, "level": request.level,
        "device": request.device,
    }


# -- reading ---------------------------------------------------------------------------------

def read_manifest(uri: str) -> dict:
    """The result manifest at `uri`, checked; a ResultError when there is no finished result."""
    store = result_store(uri)
    with store.errors("read the result"):
        record = store.read_json(store.path(RESULT_MANIFEST))
    if record is None or record.get("kind") != KIND:
        raise ResultError(f"no finished result at {store.uri} (no {RESULT_MANIFEST}): the task did not "
                          "publish one, it is still being written, or it was deleted.")
    files = record.get("files")
    if not isinstance(files, dict) or not all(_safe_relpath(f) for f in files):
        raise ResultError(f"malformed {RESULT_MANIFEST} at {store.uri}: bad file list")
    return record


def _safe_relpath(rel: str) -> bool:
    parts = rel.split("/") if isinstance(rel, str) else [""]
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and "\\" not in rel


def read_report(uri: str) -> dict | None:
    """A finished result's report.json, or None when the result has none."""
    import json

    read_manifest(uri)
    store = result_store(uri)
    with store.errors("read the report"):
        data = store.read_bytes(store.path("report.json"))
    return json.loads(data) if data is not None else None


def local_copy(uri: str) -> str:
    """A local folder holding the result: itself when local, else a checked download, cached
    by URI and manifest (ACCELFLOW_RESULT_CACHE, default ~/.cache/accelflow/results)."""
    if not is_remote(uri):
        return uri
    record = read_manifest(uri)
    key = hashlib.sha256(f"{uri}\n{record['flow_run_id']}\n{record['created']}".encode()).hexdigest()[:24]
    cache = os.environ.get(CACHE_ENV) or os.path.expanduser("~/.cache/accelflow/results")
    target = os.path.join(cache, key)
    if os.path.isdir(target):
        return target
    staging = start_staging(cache)  # also removes downloads a killed process left half done
    try:
        download(uri, record, staging.path)
        os.rename(staging.path, target)
    except FileExistsError:
        pass  # another process downloaded it meanwhile
    except OSError as exc:
        if not os.path.isdir(target):
            raise ResultError(f"could not keep the download of {uri} in {cache}: {exc}") from exc
    finally:
        staging.discard()
    return target


def download(uri: str, record: dict, dest: str) -> None:
    store = result_store(uri)
    with store.errors(f"download the result to {dest}"):
        for rel, size in [*record["files"].items(), (RESULT_MANIFEST, None)]:
            target = os.path.join(dest, *rel.split("/"))
            store.get_file(store.path(rel), target)
            if size is not None and os.path.getsize(target) != size:
                raise ResultError(f"{store.uri}/{rel} has {os.path.getsize(target)} bytes, its manifest says {size}")


def copy_into(uri: str, files: Iterable[str], dest: Store, dest_folder: str) -> None:
    """Copy some of a result's files into `dest_folder` of another store location; inside one
    object store, server side."""
    store = result_store(uri)
    for rel in files:
        dest.copy_file(store, store.path(rel), dest.join(dest_folder, rel))


# -- deleting --------------------------------------------------------------------------------

def delete(uri: str, run_id: str, trusted_roots: list[str]) -> list[str]:
    """Remove the result of flow run `run_id` at `uri`; returns the removed files' paths."""
    store = result_store(uri)
    roots = [result_store(r) for r in trusted_roots]
    if not any(root.contains(store.uri) and root.uri != store.uri for root in roots):
        shown = ", ".join(r.uri for r in roots) or "(none configured)"
        raise ResultError(f"{store.uri} is not under a configured results location ({shown}), so it was not "
                          "deleted. Set ACCELFLOW_RESULTS (or add it to ACCELFLOW_RESULT_ROOTS), or delete the "
                          "task alone with --keep-files.")
    with store.errors("delete the result"):
        record = store.read_json(store.path(RESULT_MANIFEST)) or store.read_json(store.path(CLAIM))
        if record is None:
            return []  # nothing published there
        if record.get("kind") != KIND or record.get("flow_run_id") != str(run_id):
            raise ResultError(f"the result at {store.uri} belongs to flow run {record.get('flow_run_id')}, "
                              f"not {run_id}; nothing was deleted.")
        files = [f for f in record.get("files", {}) if _safe_relpath(f)]
        for rel in [*files, RESULT_MANIFEST, CLAIM]:
            store.remove(store.path(rel))
        _remove_empty_folders(store)
    return files


def _remove_empty_folders(store: Store) -> None:
    """Local folders left empty by a delete (object stores have no empty folders)."""
    if not store.local or not os.path.isdir(store.root):
        return
    for dirpath, _, _ in sorted(os.walk(store.root), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass  # not empty: a file nobody listed stays


def trusted_roots(extra: Iterable[str | None] = ()) -> list[str]:
    """The results locations deletes may reach: ACCELFLOW_RESULTS, ACCELFLOW_RESULT_ROOTS
    (comma separated) and `extra` (the server-wide Prefect variable, read by the caller)."""
    found = [os.environ.get("ACCELFLOW_RESULTS"), *os.environ.get("ACCELFLOW_RESULT_ROOTS", "").split(","), *extra]
    return list(dict.fromkeys(r.strip() for r in found if r and r.strip()))


__all__ = ["publish", "read_manifest", "read_report", "local_copy", "delete", "copy_into", "trusted_roots",
           "ResultError", "RESULT_MANIFEST", "REPORT_FILES"]
