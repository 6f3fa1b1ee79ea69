"""Step 8: the task's result folder, written whole or not at all.

Everything is assembled in a hidden staging folder beside the final one and renamed into
place at the end (one atomic rename on the same file system), so a failed or interrupted
task never leaves a half-written result folder: at most a `.partial-*` folder, which the
next task under the same output removes once its owner process is gone (killed, crashed)
or, for one made on another machine, once it is older than any task could run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time

from formats.errors import OutputPathError

PARTIAL_PREFIX = ".partial-"
STALE_PARTIAL_SECONDS = 24 * 3600


def check_output_path(output: str, model_home: str | None) -> str:
    """The absolute output path, refused if it overlaps the model's home directory."""
    out = os.path.realpath(os.path.abspath(os.path.expanduser(output)))
    if model_home:
        home = os.path.realpath(model_home)
        if _inside(out, home) or _inside(home, out):
            raise OutputPathError(
                f"output path {out} overlaps the model's home directory {home} (one contains the "
                "other), so results could mix with the original model's files. Choose an output "
                f"folder outside it, for example {os.path.join(os.path.dirname(home), 'accelflow-results')}."
            )
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputPathError(f"output path {out} exists and is not a folder; choose a folder.")
    return out


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def slug(name: str) -> str:
    """A file-system-safe folder name for a task name (`job-bert-v1#2` -> `job-bert-v1-2`)."""
    text = re.sub(r"[^0-9A-Za-z._-]+", "-", name).strip("-.")
    return (text or "task")[:120]


def start_staging(output: str) -> str:
    os.makedirs(output, exist_ok=True)
    remove_stale_partials(output)
    return tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{_owner_tag()}-", dir=output)


def _owner_tag() -> str:
    """Host and process that own a staging folder: `<host>~<pid>`."""
    host = re.sub(r"[^0-9A-Za-z.-]+", "-", socket.gethostname())[:60] or "host"
    return f"{host}~{os.getpid()}"


def discard(staging: str, created_output: str | None = None) -> None:
    """Remove a failed task's staging folder, and the output folder if the task made it."""
    shutil.rmtree(staging, ignore_errors=True)
    if created_output:
        with contextlib.suppress(OSError):
            os.rmdir(created_output)  # only if empty: other tasks' results stay


def finalize(staging: str, output: str, name: str) -> str:
    """Rename the staging folder to <output>/<slug(name)>, adding -2, -3 ... if taken."""
    base = os.path.join(output, slug(name))
    for n in range(1, 10_000):
        target = base if n == 1 else f"{base}-{n}"
        if os.path.exists(target):
            continue
        try:
            os.rename(staging, target)
            return target
        except OSError:  # taken by a concurrent task between the check and the rename
            continue
    raise OutputPathError(f"no free result folder name under {output} for {name!r}.")


def remove_stale_partials(output: str, max_age: float = STALE_PARTIAL_SECONDS) -> None:
    """Staging folders left by killed tasks: at once when their process on this machine is
    gone, otherwise once older than any task could run."""
    now = time.time()
    for entry in os.scandir(output):
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        with contextlib.suppress(OSError):
            if _owner_gone(entry.name) or now - entry.stat().st_mtime > max_age:
                shutil.rmtree(entry.path, ignore_errors=True)


def _owner_gone(name: str) -> bool:
    host, _, rest = name[len(PARTIAL_PREFIX):].partition("~")
    pid = rest.split("-", 1)[0]
    if host != _owner_tag().split("~")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def package_result(staging: str, best_folder: str, manifest: dict, report, write_report) -> dict[str, str]:
    """Move the chosen engine's files into <staging>/model with its manifest; write the reports."""
    from engines.result import write_manifest
    from formats import detections

    model_dir = os.path.join(staging, "model")
    shutil.move(best_folder, model_dir)
    if detections.is_detector(manifest.get("io")):  # its heads run from the config and checkpoint
        manifest = dict(manifest, io=detections.package(model_dir, manifest["io"]))
    write_manifest(model_dir, manifest)
    shutil.rmtree(os.path.join(staging, "work"), ignore_errors=True)
    return write_report(report, staging)
