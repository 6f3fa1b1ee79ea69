"""Step 8: the task's result, assembled in a private staging folder.

A task works in a hidden `.partial-*` staging folder: beside the final result when the
output is a local folder (published by one atomic rename), in a local scratch folder when it
is a URI (published by tasks/publish.py). While the task lives it holds an exclusive lock
(flock) on the staging folder's `.lock` file; the kernel drops the lock when the process
dies, however it dies. Any later task under the same folder removes staging folders whose
lock it can take, at once: their owner is gone. A host name and a process id would not tell
that across containers sharing a disk; a lock does, on one host's file systems.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import time

from accelflow.core.errors import OutputPathError
from accelflow.formats import format_named
from accelflow.storage.store import Store, is_remote

PARTIAL_PREFIX = ".partial-"
LOCK_SUFFIX = ".lock"
# A staging folder without a lock file was left by an older accelflow (or is being made
# right now, between its lock file and its folder): only one this old is removed.
UNLOCKED_PARTIAL_SECONDS = 3600
SCRATCH_ENV = "ACCELFLOW_SCRATCH"
# Local inputs of submitted requests are uploaded here, under the results location; a result
# folder is a slug of a task name, which never starts with a dot.
INPUTS_FOLDER = ".inputs"


class Staging:
    """A private staging folder, locked while this process holds it."""

    def __init__(self, parent: str):
        os.makedirs(parent, exist_ok=True)
        name = f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"
        self.lock_path = os.path.join(parent, name + LOCK_SUFFIX)
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = os.path.join(parent, name)
        os.mkdir(self.path, 0o700)

    def __fspath__(self) -> str:
        return self.path

    def release(self) -> None:
        """Drop the lock (after the folder was renamed away or removed)."""
        if self._lock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_path)
        os.close(self._lock)
        self._lock = None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def scratch_root() -> str:
    """Local scratch for a task whose output is a URI (ACCELFLOW_SCRATCH, else the temp dir)."""
    return os.environ.get(SCRATCH_ENV) or os.path.join(tempfile.gettempdir(), "accelflow-scratch")


def start_staging(output: str) -> Staging:
    """A locked staging folder for a task writing under `output`; stale ones are removed first."""
    parent = scratch_root() if is_remote(output) else output
    os.makedirs(parent, exist_ok=True)
    remove_stale_partials(parent)
    return Staging(parent)


def remove_stale_partials(parent: str) -> list[str]:
    """Remove the staging folders (and lock files) under `parent` whose owner is gone."""
    removed = []
    for entry in os.scandir(parent):
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False) and _remove_if_unowned(entry.path):
                removed.append(entry.path)
            elif entry.name.endswith(LOCK_SUFFIX) and _orphan_lock(entry):
                _remove_if_unowned(entry.path[: -len(LOCK_SUFFIX)])
    return removed


def _orphan_lock(entry) -> bool:
    # A lock file is made just before its folder: a young one may be about to get it.
    folder = entry.path[: -len(LOCK_SUFFIX)]
    return not os.path.lexists(folder) and time.time() - entry.stat().st_mtime > 60


def _remove_if_unowned(folder: str) -> bool:
    lock_path = folder + LOCK_SUFFIX
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        if time.time() - os.stat(folder).st_mtime < UNLOCKED_PARTIAL_SECONDS:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its task is alive
        shutil.rmtree(folder, ignore_errors=True)
        os.unlink(lock_path)
        return True
    finally:
        os.close(fd)


def check_output_path(output: str, model_home: str | None) -> str:
    """The output as an absolute path or a normalised URI, refused if it overlaps the model's
    home directory (neither may contain the other) or names a file."""
    if is_remote(output):
        return _check_output_uri(output, model_home)
    out = os.path.realpath(os.path.abspath(os.path.expanduser(output)))
    if model_home and not is_remote(model_home):
        home = os.path.realpath(model_home)
        if _inside(out, home) or _inside(home, out):
            raise _overlap(out, home, os.path.join(os.path.dirname(home), "accelflow-results"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputPathError(f"output path {out} exists and is not a folder; choose a folder.")
    return out


def _check_output_uri(output: str, model_home: str | None) -> str:
    store = Store(output, error=OutputPathError)
    if model_home and is_remote(model_home):
        home = Store(model_home, error=OutputPathError)
        uploaded = Store(store.uri_of(store.path(INPUTS_FOLDER))).contains(home.uri)
        if not uploaded and (store.contains(home.uri) or home.contains(store.uri)):
            raise _overlap(store.uri, home.uri, store.uri.rsplit("/", 1)[0] + "/accelflow-results")
    return store.uri


def _overlap(out: str, home: str, suggestion: str) -> OutputPathError:
    return OutputPathError(
        f"output path {out} overlaps the model's home directory {home} (one contains the other), so "
        f"results could mix with the original model's files. Choose an output outside it, for example {suggestion}."
    )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def slug(name: str) -> str:
    """A file-system-safe folder name for a task name (`job-bert-v1#2` -> `job-bert-v1-2`)."""
    text = re.sub(r"[^0-9A-Za-z._-]+", "-", name).strip("-.")
    return (text or "task")[:120]


def result_names(name: str):
    """The folder names a result may take, in order: `<slug>`, `<slug>-2`, `<slug>-3`, ..."""
    base = slug(name)
    for n in range(1, 10_000):
        yield base if n == 1 else f"{base}-{n}"


def discard(staging: Staging, created_output: str | None = None) -> None:
    """Remove a failed task's staging folder, and the output folder if the task made it."""
    staging.discard()
    if created_output and not is_remote(created_output):
        with contextlib.suppress(OSError):
            os.rmdir(created_output)  # only if empty: other tasks' results stay


def finalize_local(staging: Staging, output: str, name: str) -> str:
    """Rename the staging folder to <output>/<slug(name)>, adding -2, -3 ... if taken."""
    for folder in result_names(name):
        target = os.path.join(output, folder)
        if os.path.lexists(target):
            continue
        try:
            os.mkdir(target)  # claims the name: mkdir fails if another task took it first
        except FileExistsError:
            continue
        os.rename(staging.path, target)  # onto the empty folder we own: atomic
        staging.release()
        return target
    raise OutputPathError(f"no free result folder name under {output} for {name!r}.")


def detector_files(folder: str, io: dict, pool) -> dict:
    """A detector's heads run from its config and checkpoint: copy them into the chosen
    engine's `folder` (merged config, as the framework reads it) and return the io naming
    them. Run in the model process (`pool`, its RunnerPool): merging runs the framework."""
    from accelflow.formats import detections

    if not detections.is_detector(io):
        return io
    fmt = format_named(detections.format_name(io))
    return detections.package(fmt, folder, io, pool.trust_model_code)


def package_result(staging: Staging, best_folder: str, manifest: dict, report, write_report) -> dict[str, str]:
    """Move the chosen engine's files into <staging>/model with its manifest; write the reports."""
    from accelflow.engines.result import write_manifest

    model_dir = os.path.join(staging.path, "model")
    shutil.move(best_folder, model_dir)
    write_manifest(model_dir, manifest)
    shutil.rmtree(os.path.join(staging.path, "work"), ignore_errors=True)
    return write_report(report, staging.path)
