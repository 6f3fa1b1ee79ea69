"""A storage location: a local folder or any fsspec URI (s3://bucket/prefix at least).

The model repository and the results location both live in one. What crosses a machine
boundary is a URI; a Store turns it into fsspec calls with the few guarantees the callers
build on:

- `create` writes a small object only if none exists (S3: a conditional PUT with
  If-None-Match; locally: a hard link of a complete temporary file), so exactly one of
  several concurrent writers wins;
- `write` replaces an object whole (S3 PUTs are atomic; locally: rename of a temporary file);
- `copy_file` copies inside one store without a round trip through this machine (S3:
  CopyObject), and across stores through a local temporary file;
- S3 calls time out (ACCELFLOW_S3_TIMEOUT) instead of hanging on a store that went quiet;
- what a task downloads is capped (ACCELFLOW_MAX_FETCH_GB, `check_fetch_size`), and a
  download given its listed size stops once it grows past it (`get_file(..., size=)`).

Credentials come from the environment or `storage_options`, never from the URI.
This module is plain Python: no Prefect import.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import tempfile

import fsspec
from accelflow.core import quotas
from accelflow.core.errors import AccelflowError, RepositoryError
from fsspec.callbacks import Callback

# Uploads slower than this are taken for a stalled store (see Store._deadline).
_SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024


class StorageError(AccelflowError):
    """A storage location that cannot be opened, read or written."""
    title = "storage"


def is_remote(uri: str) -> bool:
    protocol, _ = fsspec.core.split_protocol(str(uri))
    return protocol not in (None, "file", "local")


def storage_exceptions() -> tuple[type[BaseException], ...]:
    """The errors that mean "the storage said no", as opposed to a bug here."""
    errors: list[type[BaseException]] = [OSError]
    try:  # botocore comes with s3fs; a local-only install may lack it
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    return tuple(errors)


def check_fetch_size(total: int, what: str, error: type[AccelflowError]) -> None:
    """Refuse a download of `total` bytes (summed from a listing, before any byte moves) over
    the worker's cap: a submitter must not fill a worker's disk, or keep it downloading."""
    limit = quotas.max_fetch_bytes()
    if total > limit:
        raise error(f"{what} is {quotas.size_text(total)} ({total} bytes), more than this worker's limit of "
                    f"{quotas.size_text(limit)} on what one task fetches from storage ({quotas.FETCH_GB_ENV}); "
                    f"nothing was downloaded. Use a smaller model, or ask the worker's operator to raise "
                    f"{quotas.FETCH_GB_ENV}.")


class _SizeGuard(Callback):
    """fsspec's progress callback, used to stop a download past its listed size: s3fs reports
    the object's length before the body and each chunk as it arrives (one streaming GET)."""

    def __init__(self, limit: int, refuse):
        super().__init__()
        self.limit, self.refuse = limit, refuse

    def call(self, *args, **kwargs):
        if max(self.size or 0, self.value) > self.limit:
            self.refuse(max(self.size or 0, self.value))


def s3_timeout() -> float:
    """Seconds an S3 call may wait to connect or for an answer (ACCELFLOW_S3_TIMEOUT)."""
    return float(os.environ.get("ACCELFLOW_S3_TIMEOUT", "15"))


def _open_remote(protocol: str, storage_options: dict | None, error: type[AccelflowError]):
    options = dict(storage_options or {})
    if protocol in ("s3", "s3a"):
        # A private instance sees the current environment (credentials, endpoint); fsspec's
        # cache would hand back one built with an older environment. Fresh listings let a
        # reader see what another process just wrote.
        options.setdefault("skip_instance_cache", True)
        options.setdefault("use_listings_cache", False)
        # Short timeouts and few retries per call: an unreachable store then fails a call in
        # seconds, and tasks.retry retries the whole operation with backoff and says so.
        timeout = s3_timeout()
        options.setdefault("config_kwargs", {"connect_timeout": timeout, "read_timeout": timeout,
                                             "retries": {"total_max_attempts": 2}})
    try:
        fs = fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its package is missing
        raise error(f"cannot open {protocol}:// storage: {exc}; use a local folder or s3://") from exc
    if hasattr(fs, "retries"):
        fs.retries = 2  # s3fs's own retry loop (default 5), not an option of its constructor
    return fs


class Store:
    """One storage location; paths given to its methods are store paths (see `path`)."""

    def __init__(self, uri: str, storage_options: dict | None = None, error: type[AccelflowError] = StorageError):
        protocol, path = fsspec.core.split_protocol(str(uri))
        self.local = protocol in (None, "file", "local")
        self.error = error
        self.storage_options = dict(storage_options or {})
        if self.local:
            self.root = os.path.abspath(os.path.expanduser(path))
            self.uri = self.root
            self.fs = fsspec.filesystem("file", auto_mkdir=True, skip_instance_cache=True)
            return
        if "@" in path.split("/", 1)[0]:
            raise error("credentials in a storage URI are not supported; set AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY (or pass storage_options)")
        self.protocol = protocol
        self.fs = _open_remote(protocol, storage_options, error)
        self.root = self.fs._strip_protocol(path).rstrip("/")
        self.uri = f"{protocol}://{self.root}"

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- paths -------------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """A path under the root; each part may hold '/'-separated segments."""
        segments = [s for p in parts for s in p.split("/") if s]
        if self.local:
            return os.path.join(self.root, *segments)
        return posixpath.join(self.root, *segments)

    def join(self, folder: str, rel: str) -> str:
        """A store path `rel` (POSIX, relative) below the store path `folder`."""
        if self.local:
            return os.path.join(folder, *rel.split("/"))
        return posixpath.join(folder, rel)

    def uri_of(self, path: str) -> str:
        return path if self.local else f"{self.protocol}://{path}"

    def contains(self, uri: str) -> bool:
        """Whether `uri` (a path or URI) lies under this store's root."""
        protocol, path = fsspec.core.split_protocol(str(uri))
        if (protocol in (None, "file", "local")) != self.local:
            return False
        if self.local:
            root, inner = os.path.realpath(self.root), os.path.realpath(os.path.abspath(path))
            return inner == root or inner.startswith(root.rstrip(os.sep) + os.sep)
        inner = posixpath.normpath(self.fs._strip_protocol(path))
        return protocol == self.protocol and (inner == self.root or inner.startswith(self.root + "/"))

    @contextlib.contextmanager
    def errors(self, action: str):
        """A storage failure as this store's error type, saying what was done where."""
        try:
            yield
        except AccelflowError:
            raise
        except storage_exceptions() as exc:
            hint = ""
            if "bucket" in str(exc).lower():
                hint = "; check the bucket name and the endpoint (AWS_ENDPOINT_URL_S3), or create the bucket"
            raise self.error(f"could not {action} in {self.uri}: {type(exc).__name__}: {exc}{hint}") from exc

    # -- reading -----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def read_json(self, path: str) -> dict | None:
        data = self.read_bytes(path)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise self.error(f"malformed {self.uri_of(path)}: {exc}") from exc
        if not isinstance(value, dict):
            raise self.error(f"malformed {self.uri_of(path)}: not a JSON object")
        return value

    def files(self, folder: str) -> dict[str, int]:
        """Every file under `folder` as {relative POSIX path: size}; {} when there is none."""
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return {}
        prefix = folder.rstrip("/" if not self.local else os.sep)
        listing = {}
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            rel = os.path.relpath(name, prefix).replace(os.sep, "/") if self.local else name[len(prefix) + 1:]
            listing[rel] = int(info.get("size") or 0)
        return dict(sorted(listing.items()))

    def children(self, folder: str) -> list[str]:
        """Names of the folders directly under `folder`."""
        try:
            entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    # -- writing -----------------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> None:
        """Replace the object at `path` whole: a reader sees the old or the new, never half."""
        if self.local:
            with _temporary_beside(path, data) as tmp:
                os.replace(tmp, path)
            return
        self.fs.pipe_file(path, data, **self._deadline(len(data)))

    def write_json(self, path: str, value: dict) -> None:
        self.write(path, _json_bytes(value))

    def create(self, path: str, data: bytes) -> bool:
        """Write `path` only if nothing is there; False when another writer was first."""
        if self.local:
            with _temporary_beside(path, data) as tmp:
                try:
                    os.link(tmp, path)  # atomic, and fails if the name exists
                except FileExistsError:
                    return False
            return True
        if self.protocol not in ("s3", "s3a"):  # no conditional write: check, then write
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create", **self._deadline(len(data)))
        except FileExistsError:
            return False
        return True

    def create_json(self, path: str, value: dict) -> bool:
        return self.create(path, _json_bytes(value))

    def put_file(self, local_path: str, path: str) -> None:
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fs.put_file(local_path, path, **self._deadline(os.path.getsize(local_path)))

    def get_file(self, path: str, local_path: str, size: int | None = None) -> None:
        """Download `path`; with `size` (its listed size), a file that turns out larger (replaced
        or growing since it was listed) is stopped there, and nothing of it is kept."""
        os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
        if size is None:
            self.fs.get_file(path, local_path)
            return

        def refuse(seen: int):
            raise self.error(f"{self.uri_of(path)} grew past its listed size while it was fetched ({seen} bytes, "
                             f"listed {size}); the download was stopped")

        try:
            self.fs.get_file(path, local_path, callback=_SizeGuard(size, refuse))
            if os.path.getsize(local_path) > size:  # a backend that reports no progress
                refuse(os.path.getsize(local_path))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(local_path)
            raise

    def copy_file(self, source: "Store", source_path: str, path: str) -> None:
        """Copy one file from `source` (this store or another) to `path` here."""
        if source.local and self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fs.copy(source_path, path)
        elif source.local:
            self.put_file(source_path, path)
        elif self.local:
            source.get_file(source_path, path)
        elif self.same_backend(source):  # server side: nothing passes through this machine
            self.fs.copy(source_path, path)
        else:
            with tempfile.TemporaryDirectory(prefix="accelflow-copy-") as tmp:
                local = os.path.join(tmp, "file")
                source.get_file(source_path, local)
                self.put_file(local, path)

    def same_backend(self, other: "Store") -> bool:
        return (not self.local and not other.local and self.protocol == other.protocol
                and self.storage_options == other.storage_options)

    def remove(self, path: str) -> None:
        """Remove a file or a folder with everything in it; nothing there is not an error."""
        if self.local:
            if os.path.isdir(path) and not os.path.islink(path):
                import shutil

                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            return
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def remove_files_quietly(self, paths: list[str]) -> None:
        """Best-effort removal of many files in one call (S3: one bulk delete per 1000), so that
        cleaning up after a store that stopped answering takes one timeout, not one per file."""
        with contextlib.suppress(Exception):
            if self.local:
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            elif paths:
                self.fs.rm(paths)

    def remove_quietly(self, path: str) -> None:
        # Cleanup is best effort: the error that made us clean up is the one to report.
        with contextlib.suppress(Exception):
            self.remove(path)

    def _deadline(self, size: int) -> dict:
        """A whole-call deadline for an upload to S3. Its read timeout does not cover the wait
        for "100 Continue" before a PUT body, so a store that stops answering there would
        hang the upload forever (seen with a frozen server); fsspec cancels the call at it."""
        if self.local:
            return {}
        return {"timeout": s3_timeout() + size / _SLOWEST_UPLOAD_BYTES_PER_S}


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


@contextlib.contextmanager
def _temporary_beside(path: str, data: bytes):
    """A complete file with `data` in the folder of `path`, removed afterwards unless renamed."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(6)}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def repository_store(uri: str, storage_options: dict | None = None) -> Store:
    return Store(uri, storage_options, error=RepositoryError)
