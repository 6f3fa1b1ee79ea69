"""Converted ONNX models cached by content, so a re-run (another level, a retry, a second
task on the same model version) skips the conversion.

The key is a hash of the model file's bytes, the format, the canonical tensor information
and the converter's versions; an entry is a folder with model.onnx (and external data) and
io.json, written under a temporary name and renamed, so a reader never sees half an entry.
`ACCELFLOW_CACHE_DIR` moves the cache (default ~/.cache/accelflow/onnx); `ACCELFLOW_CACHE=off`
turns it off. The oldest entries go once the cache passes ACCELFLOW_CACHE_GB (default 20), and
staging folders (.partial-*) untouched for an hour go too: their writer died mid-copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time

_CHUNK = 1 << 22
_PARTIAL = ".partial-"
# A staging folder is written in one go (seconds, a few minutes for a model of many GB): one
# that nothing was written to for this long belongs to a writer that was killed or failed.
STALE_PARTIAL_S = 3600


def enabled() -> bool:
    return os.environ.get("ACCELFLOW_CACHE", "on").lower() not in ("off", "0", "false", "no")


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("ACCELFLOW_CACHE_DIR", "~/.cache/accelflow/onnx"))


def key(model_file: str, format_name: str, spec_lines: list[str], qat: bool, options: dict | None = None) -> str:
    """The entry of a model file's (or model folder's) bytes converted with these settings."""
    digest = hashlib.sha256()
    for path in _model_files(model_file):
        digest.update(os.path.relpath(path, model_file).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    settings = [format_name, spec_lines, qat, _converter_versions()] + ([options] if options else [])
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _model_files(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    return sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names)


def _converter_versions() -> list[str]:
    versions = []
    for name in ("accelflow", "torch", "onnx", "tensorflow-cpu", "tensorflow", "tf2onnx"):
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=-")
    return versions


def lookup(entry_key: str) -> tuple[str, dict] | None:
    """(onnx path, io) of a cached conversion, or None."""
    folder = os.path.join(cache_dir(), entry_key)
    try:
        with open(os.path.join(folder, "io.json"), encoding="utf-8") as f:
            io = json.load(f)
    except (OSError, ValueError):
        return None
    os.utime(folder)  # recently used: evicted last
    return os.path.join(folder, "model.onnx"), io


def store(entry_key: str, onnx_path: str, io: dict) -> tuple[str, dict]:
    """Copy a fresh conversion into the cache; returns its cached location."""
    root = cache_dir()
    os.makedirs(root, exist_ok=True)
    source, staging = os.path.dirname(onnx_path), tempfile.mkdtemp(prefix=_PARTIAL, dir=root)
    for name in os.listdir(source):
        shutil.copy2(os.path.join(source, name), staging)
    with open(os.path.join(staging, "io.json"), "w", encoding="utf-8") as f:
        json.dump(io, f)
    try:
        os.rename(staging, os.path.join(root, entry_key))
    except OSError:  # another task cached the same conversion meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    _evict(root, keep=entry_key)
    return lookup(entry_key) or (onnx_path, io)


def _evict(root: str, keep: str) -> None:
    """Remove stale staging folders, then the least recently used entries past the size limit
    (never `keep`, just stored)."""
    _remove_stale_partials(root, time.time() - STALE_PARTIAL_S)
    limit = float(os.environ.get("ACCELFLOW_CACHE_GB", "20")) * 2**30
    entries = sorted((e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")),
                     key=lambda e: (e.name != keep, -e.stat().st_mtime))
    total = 0
    for entry in entries:
        total += sum(f.stat().st_size for f in os.scandir(entry.path) if f.is_file())
        if total > limit and entry.name != keep:
            shutil.rmtree(entry.path, ignore_errors=True)


def _remove_stale_partials(root: str, cutoff: float) -> None:
    """Staging folders last written before `cutoff`: lookups never see them, so without this
    a writer killed mid-copy (or a full disk) would leave its bytes in the cache for good."""
    for entry in os.scandir(root):
        if entry.name.startswith(_PARTIAL) and entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):  # another task's eviction was first
                if _last_write(entry.path) < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _last_write(folder: str) -> float:
    """The newest mtime of a folder and its files: a file being copied in keeps it current."""
    times = [os.stat(folder).st_mtime]
    for here, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                times.append(os.stat(os.path.join(here, name), follow_symlinks=False).st_mtime)
    return max(times)
