"""The model repository: models and their versions on a local folder or S3-compatible storage.

A repository lives under one root URI, opened through fsspec:

- a local folder (the default): a plain path or a ``file://`` URI;
- S3-compatible object storage: ``s3://bucket/prefix``, through s3fs. The endpoint and the
  credentials come from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``
  or ``AWS_ENDPOINT_URL_S3``; botocore reads all of them itself) or from explicit
  ``storage_options`` (``key``, ``secret``, ``endpoint_url``, ``client_kwargs``, ...).

Credentials never appear in the repository's URI, repr, messages or files.

Storage layout::

    <root>/models/<name>/model.json                       {name, id, source, format, created}
    <root>/models/<name>/versions/<version>/version.json  {version, id, created, files, sizes, extra}
    <root>/models/<name>/versions/<version>/files/...     the version's home directory

``files`` lists the home directory's files as relative POSIX paths and ``sizes`` maps each to
its size in bytes. ``extra`` is free JSON metadata (an optimized model records its original
model, version and task there).

A version exists if and only if its ``version.json`` exists: adding a version copies the files
first and writes ``version.json`` last, and a failed add removes what it wrote (best effort), so
a reader never sees a partial version. ``model.json`` is written with the model's first version
and removed again if that first version fails. Two concurrent first adds of the same new model
are not serialized (object storage has no portable lock); the last ``model.json`` wins.

This module is plain Python: no Prefect import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import posixpath
import re
import secrets
from dataclasses import dataclass, field

import fsspec

from formats.errors import RepositoryError

DEFAULT_REPO = "./model-repo"
REPO_ENV = "ACCELFLOW_REPO"

# Letters, digits and ._- only, so a name is always one safe path segment; a leading dot is
# refused, which also rules out "." and "..".
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_NAME_RULE = "1-128 characters of letters, digits, '.', '_' and '-', not starting with '.'"


@dataclass
class ModelEntry:
    """One model of the repository; ``versions`` are its version names in natural order."""

    name: str
    id: str
    source: str
    format: str
    created: str
    versions: list[str] = field(default_factory=list)


@dataclass
class VersionEntry:
    """One version of a model: ``home`` is its home directory (a local path or an s3:// URI)."""

    model: str
    model_id: str
    version: str
    id: str
    created: str
    home: str
    files: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def parse_model_ref(ref: str) -> tuple[str, str] | None:
    """``"NAME@VERSION"`` -> ``(name, version)``; a path-like string -> None.

    Path-like means: it exists on disk, or contains a path separator. A string with no ``@``
    is also taken as a path, so the caller reports it as a missing file.
    """
    if os.path.exists(ref) or "/" in ref or "\\" in ref or "@" not in ref:
        return None
    name, _, version = ref.rpartition("@")
    check_name(name, "model")
    check_name(version, "version")
    return name, version


def check_name(value: str, kind: str) -> str:
    """Refuse a model or version name that is not one safe path segment."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise RepositoryError(
            f"invalid {kind} name {value!r}: use {_NAME_RULE}"
        )
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _new_id() -> str:
    return secrets.token_hex(4)


def _natural_key(text: str) -> list:
    # "v2" sorts before "v10"; re.split alternates text and digits, so items compare alike.
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _storage_exceptions() -> tuple[type[BaseException], ...]:
    """The errors that mean "the storage said no", as opposed to a bug in this module."""
    errors: list[type[BaseException]] = [OSError]
    try:  # botocore comes with s3fs; a local-only install may lack it
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    return tuple(errors)


def _local_files(src: str) -> list[tuple[str, str]]:
    """(local path, relative POSIX path) for every file of ``src``, a file or a folder."""
    if os.path.isfile(src):
        return [(src, os.path.basename(src))]
    if not os.path.isdir(src):
        raise RepositoryError(f"cannot add {src!r}: no such file or folder")
    found = []
    for folder, _, names in os.walk(src):
        for name in names:
            path = os.path.join(folder, name)
            found.append((path, os.path.relpath(path, src).replace(os.sep, "/")))
    if not found:
        raise RepositoryError(f"cannot add {src!r}: the folder holds no files")
    return sorted(found, key=lambda pair: pair[1])  # version.json's file list is reproducible


def _safe_relpath(rel: str) -> str:
    # version.json is data from storage: never let it steer a copy outside the destination.
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RepositoryError(f"malformed file entry {rel!r} in a version.json")
    return rel


# Uploads slower than this are taken for a stalled store (see _upload_deadline).
_SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024


def _s3_timeout() -> float:
    """Seconds an S3 call may wait to connect or for an answer (ACCELFLOW_S3_TIMEOUT)."""
    return float(os.environ.get("ACCELFLOW_S3_TIMEOUT", "15"))


def _open_remote(protocol: str, storage_options: dict | None) -> fsspec.AbstractFileSystem:
    options = dict(storage_options or {})
    if protocol in ("s3", "s3a"):
        # A private instance sees the current environment (credentials, endpoint); fsspec's
        # cache would hand back one built with an older environment. Fresh listings let a
        # reader see versions another process just added.
        options.setdefault("skip_instance_cache", True)
        options.setdefault("use_listings_cache", False)
        # Short timeouts and few retries per call: an unreachable store then fails a call in
        # seconds, and tasks.retry retries the whole operation with backoff and says so.
        timeout = _s3_timeout()
        options.setdefault("config_kwargs", {"connect_timeout": timeout, "read_timeout": timeout,
                                             "retries": {"total_max_attempts": 2}})
    try:
        fs = fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its package is missing
        raise RepositoryError(
            f"cannot open a {protocol}:// model repository: {exc}; use a local folder or s3://"
        ) from exc
    if hasattr(fs, "retries"):
        fs.retries = 2  # s3fs's own retry loop (default 5), not an option of its constructor
    return fs


class ModelRepository:
    """A model repository on a local folder or S3-compatible storage (see the module docstring)."""

    def __init__(self, uri: str | None = None, storage_options: dict | None = None):
        uri = uri or os.environ.get(REPO_ENV) or DEFAULT_REPO
        protocol, path = fsspec.core.split_protocol(str(uri))
        self._local = protocol in (None, "file", "local")
        if self._local:
            self._root = os.path.abspath(os.path.expanduser(path))
            self._uri = self._root
            self._fs = fsspec.filesystem("file", auto_mkdir=True, skip_instance_cache=True)
        else:
            if "@" in path.split("/", 1)[0]:
                raise RepositoryError(
                    "credentials in the repository URI are not supported; set "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or pass storage_options"
                )
            self._fs = _open_remote(protocol, storage_options)
            self._root = self._fs._strip_protocol(path).rstrip("/")
            self._uri = f"{protocol}://{self._root}"

    @property
    def uri(self) -> str:
        """The repository root: a local absolute path or ``protocol://bucket/prefix``."""
        return self._uri

    def __repr__(self) -> str:
        return f"ModelRepository({self._uri!r})"

    # -- paths -------------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        if self._local:
            return os.path.join(self._root, *parts)
        return posixpath.join(self._root, *parts)

    def _model_dir(self, name: str) -> str:
        return self._path("models", name)

    def _version_dir(self, name: str, version: str) -> str:
        return self._path("models", name, "versions", version)

    def _model_json(self, name: str) -> str:
        return self._path("models", name, "model.json")

    def _version_json(self, name: str, version: str) -> str:
        return self._path("models", name, "versions", version, "version.json")

    def _home_path(self, name: str, version: str) -> str:
        return self._path("models", name, "versions", version, "files")

    def _home_uri(self, name: str, version: str) -> str:
        home = self._home_path(name, version)
        return home if self._local else f"{self._uri.split('://')[0]}://{home}"

    @contextlib.contextmanager
    def _storage_errors(self, action: str):
        """Turn a storage failure into a RepositoryError that says what was being done where."""
        try:
            yield
        except RepositoryError:
            raise
        except _storage_exceptions() as exc:
            hint = ""
            if "bucket" in str(exc).lower():
                hint = ("; check the bucket name and the endpoint (AWS_ENDPOINT_URL_S3),"
                        " or create the bucket")
            raise RepositoryError(
                f"could not {action} in repository {self._uri}: {type(exc).__name__}: {exc}{hint}"
            ) from exc

    # -- reading -----------------------------------------------------------------------------

    def _read_json(self, path: str) -> dict | None:
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RepositoryError(f"malformed {path} in repository {self._uri}: {exc}") from exc

    def _write_json(self, path: str, data: dict) -> None:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self._fs.pipe_file(path, body, **self._upload_deadline(len(body)))

    def _upload_deadline(self, size: int) -> dict:
        """A whole-call deadline for an upload to S3. Its read timeout does not cover the wait
        for "100 Continue" before a PUT body, so a store that stops answering there would
        hang the upload forever (seen with a frozen server); fsspec cancels the call at it."""
        if self._local:
            return {}
        return {"timeout": _s3_timeout() + size / _SLOWEST_UPLOAD_BYTES_PER_S}

    def _children(self, path: str) -> list[str]:
        try:
            entries = self._fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        dirs = [e["name"].rstrip("/") for e in entries if e["type"] == "directory"]
        names = [posixpath.basename(d) for d in dirs]
        return sorted({n for n in names if _NAME_RE.fullmatch(n)}, key=_natural_key)

    def _model_names(self) -> list[str]:
        models = self._children(self._path("models"))
        return [n for n in models if self._fs.exists(self._model_json(n))]

    def _version_names(self, name: str) -> list[str]:
        versions = self._children(self._path("models", name, "versions"))
        return [v for v in versions if self._fs.exists(self._version_json(name, v))]

    def _model(self, name: str) -> ModelEntry | None:
        data = self._read_json(self._model_json(name))
        if data is None:
            return None
        try:
            return ModelEntry(
                name=data["name"], id=data["id"], source=data["source"], format=data["format"],
                created=data["created"], versions=self._version_names(name),
            )
        except KeyError as exc:
            raise RepositoryError(f"model.json of model {name!r} in {self._uri} lacks {exc}") from exc

    def _require_model(self, name: str) -> ModelEntry:
        check_name(name, "model")
        with self._storage_errors(f"read model {name!r}"):
            model = self._model(name)
            if model is None:
                models = ", ".join(self._model_names()) or "(none: the repository is empty)"
                raise RepositoryError(
                    f"model {name!r} is not in repository {self._uri}; models: {models}. "
                    f"Add one with: accelflow repo add {name} VERSION PATH --source S"
                )
        return model

    # -- public reading API ------------------------------------------------------------------

    def list(self, source: str | None = None) -> list[ModelEntry]:
        """Every model, by name; with ``source``, only the models of that source."""
        with self._storage_errors("list models"):
            models = [self._model(n) for n in self._model_names()]
        return [m for m in models if m is not None and (source is None or m.source == source)]

    def show(self, name: str, version: str | None = None) -> ModelEntry | VersionEntry:
        """A model, or one of its versions when ``version`` is given."""
        if version is None:
            return self._require_model(name)
        return self.version(name, version)

    def version(self, name: str, version: str) -> VersionEntry:
        """One version; a RepositoryError that lists what exists when it is missing."""
        model = self._require_model(name)
        check_name(version, "version")
        with self._storage_errors(f"read version {name}@{version}"):
            data = self._read_json(self._version_json(name, version))
        if data is None:
            raise RepositoryError(
                f"model {name!r} has no version {version!r}; versions: "
                f"{', '.join(model.versions) or '(none)'}. "
                f"Add one with: accelflow repo add {name} {version} PATH --source {model.source}"
            )
        return self._version_entry(model, data)

    def _version_entry(self, model: ModelEntry, data: dict) -> VersionEntry:
        try:
            return VersionEntry(
                model=model.name, model_id=model.id, version=data["version"], id=data["id"],
                created=data["created"], home=self._home_uri(model.name, data["version"]),
                files=[_safe_relpath(f) for f in data["files"]], extra=dict(data.get("extra") or {}),
            )
        except KeyError as exc:
            raise RepositoryError(
                f"version.json of {model.name} in {self._uri} lacks {exc}"
            ) from exc

    def fetch(self, name: str, version: str, dest: str) -> str:
        """Copy a version's home directory into the local folder ``dest``; returns ``dest``."""
        entry = self.version(name, version)
        home = self._home_path(name, version)
        with self._storage_errors(f"fetch {name}@{version} to {dest}"):
            for rel in entry.files:
                target = os.path.join(dest, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self._fs.get_file(self._join(home, rel), target)
        return dest

    def local_home(self, name: str, version: str) -> str | None:
        """The home directory's local path when the repository is local (use it in place), else None."""
        if not self._local:
            return None
        return self.version(name, version).home

    def _join(self, home: str, rel: str) -> str:
        return os.path.join(home, *rel.split("/")) if self._local else posixpath.join(home, rel)

    # -- adding ------------------------------------------------------------------------------

    def add(self, name: str, version: str, src: str, *, source: str, format: str,
            extra: dict | None = None, model_id: str | None = None,
            version_id: str | None = None) -> VersionEntry:
        """Add ``src`` (a local file or folder) as a new version of model ``name``.

        ``model_id`` (used only when the model is new) and ``version_id`` let a caller name
        folders after the ids before the add; by default they are generated.
        """
        check_name(name, "model")
        check_name(version, "version")
        _check_label(source, "source")
        _check_label(format, "format")
        extra = _check_extra(extra)
        files = _local_files(os.fspath(src))
        with self._storage_errors(f"add {name}@{version}"):
            model = self._model_for_add(name, source, format, model_id)
            self._refuse_existing(model, version)
            return self._write_version(model, version, files, extra, version_id)

    def _model_for_add(self, name: str, source: str, format: str, model_id: str | None) -> ModelEntry:
        model = self._model(name)
        if model is None:  # written with the first version, see _write_version
            return ModelEntry(name=name, id=model_id or _new_id(), source=source, format=format, created=_now())
        for key, wanted in (("source", source), ("format", format)):
            have = getattr(model, key)
            if have != wanted:
                raise RepositoryError(
                    f"model {name!r} in {self._uri} has {key} {have!r}, not {wanted!r}; add the "
                    f"version with --{key} {have}, or under another model name"
                )
        return model

    def _refuse_existing(self, model: ModelEntry, version: str) -> None:
        if version in model.versions:
            raise RepositoryError(
                f"model {model.name!r} already has version {version!r} in {self._uri}; "
                f"versions: {', '.join(model.versions)}. Choose a new version name"
            )
        # A folder without version.json is what a crashed add left behind: not a version.
        self._remove_quietly(self._version_dir(model.name, version))

    def _write_version(self, model: ModelEntry, version: str, files: list[tuple[str, str]],
                       extra: dict, version_id: str | None = None) -> VersionEntry:
        first = not model.versions
        try:
            sizes = self._copy_files(model.name, version, files)
            if first:
                self._write_json(self._model_json(model.name), _model_record(model))
            record = {"version": version, "id": version_id or _new_id(), "created": _now(),
                      "files": list(sizes), "sizes": sizes, "extra": extra}
            self._write_json(self._version_json(model.name, version), record)
        except BaseException:
            self._undo_add(model.name, version, first)
            raise
        model.versions.append(version)
        return self._version_entry(model, record)

    def _copy_files(self, name: str, version: str, files: list[tuple[str, str]]) -> dict[str, int]:
        home = self._home_path(name, version)
        sizes = {}
        for path, rel in files:
            sizes[rel] = os.path.getsize(path)
            self._fs.put_file(path, self._join(home, rel), **self._upload_deadline(sizes[rel]))
        return sizes

    def _undo_add(self, name: str, version: str, first: bool) -> None:
        self._remove_quietly(self._version_dir(name, version))
        with contextlib.suppress(Exception):
            if first and not self._version_names(name):
                self._remove_quietly(self._model_dir(name))

    def _remove_quietly(self, path: str) -> None:
        # Cleanup is best effort: the error that made us clean up is the one to report.
        with contextlib.suppress(Exception):
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)


def _model_record(model: ModelEntry) -> dict:
    record = dataclasses.asdict(model)
    del record["versions"]  # derived from the version folders, never stored
    return record


def _check_label(value: str, kind: str) -> None:
    if not isinstance(value, str) or not value.strip() or any(ord(c) < 32 for c in value):
        raise RepositoryError(f"a model needs a {kind}: a non-empty line of text, got {value!r}")


def _check_extra(extra: dict | None) -> dict:
    extra = dict(extra or {})
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise RepositoryError(f"version metadata (extra) must be JSON data: {exc}") from exc
    return extra
