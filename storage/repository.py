"""The model repository: models and their versions on a local folder or S3-compatible storage.

A repository lives under one root URI, opened as a `tasks.storage.Store`:

- a local folder (the default): a plain path or a ``file://`` URI;
- S3-compatible object storage: ``s3://bucket/prefix``, through s3fs. The endpoint and the
  credentials come from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``
  or ``AWS_ENDPOINT_URL_S3``; botocore reads all of them itself) or from explicit
  ``storage_options`` (``key``, ``secret``, ``endpoint_url``, ``client_kwargs``, ...).

Credentials never appear in the repository's URI, repr, messages or files.

Storage layout::

    <root>/models/<name>/model.json                       {name, id, source, format, created}
    <root>/models/<name>/versions/<version>/version.json  {version, id, upload, created, files, sizes, extra}
    <root>/models/<name>/versions/<version>/files-<upload>/...   the version's home directory

``upload`` is the random id of the add that wrote the version; its files are in
``files-<upload>/``. (A ``version.json`` without ``upload``, written by older releases, has its
files in ``files/``.) ``files`` lists the home directory's files as relative POSIX paths and
``sizes`` maps each to its size in bytes. ``extra`` is free JSON metadata (an optimized model
records its original model, version and task there). Both JSON files are checked when read:
names must match their folders, ids are single safe path segments and no file entry can
point outside the home directory.

A version exists if and only if its ``version.json`` exists. Adding a version:

1. refuses early when the version's ``version.json`` is already there, or the model's
   ``model.json`` has another source or format;
2. copies the files into a folder of its own, ``files-<upload>/``, that no other writer touches.
   The source is a local file or folder (a symbolic link out of it is refused: it could
   upload a file from anywhere, say ~/.aws/credentials; a link to a file inside it is copied
   as that file, core/links.py) or the URI of a file or folder in any store, copied server
   side (CopyObject) within one S3 store;
3. creates ``version.json`` exclusively (a conditional PUT on S3, a hard link locally): of
   several concurrent adds of one version exactly one wins; the others remove their own
   upload folder and fail with "already exists";
4. creates ``model.json`` exclusively if the model is new; when another writer created it
   first (concurrent first adds of different versions), its source and format must match,
   else this add removes its own ``version.json`` and upload folder.

So no version ever mixes two writers' files, and a failing add removes only what it wrote:
never ``model.json``, a model folder, or another writer's upload. A writer that crashed
mid-add, or whose create of ``version.json`` timed out (a store may still carry out a PUT it
did not answer), leaves an unreferenced ``files-<upload>/`` folder: harmless, never read,
removable by hand. A retried add with the caller's ``version_id`` finds its own earlier
attempt's version and returns it. (A writer killed between steps 3 and 4 of a new model leaves a version that shows
once the model's ``model.json`` is written by its next add.)

This module is plain Python: no Prefect import.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import posixpath
import re
import secrets
import stat
from dataclasses import dataclass, field

from accelflow.core import links
from accelflow.core.errors import RepositoryError
from accelflow.storage.retry import is_transient
from accelflow.storage.store import Store, check_fetch_size, is_remote, repository_store

DEFAULT_REPO = "./model-repo"
REPO_ENV = "ACCELFLOW_REPO"

# Letters, digits and ._- only, so a name is always one safe path segment; a leading dot is
# refused, which also rules out "." and "..".
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_NAME_RULE = "1-128 characters of letters, digits, '.', '_' and '-', not starting with '.'"
_LEGACY_HOME = "files"


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
    if not _is_segment(value):
        raise RepositoryError(
            f"invalid {kind} name {value!r}: use {_NAME_RULE}"
        )
    return value


def _is_segment(value) -> bool:
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _new_id() -> str:
    return secrets.token_hex(4)


def _natural_key(text: str) -> list:
    # "v2" sorts before "v10"; re.split alternates text and digits, so items compare alike.
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _is_safe_relpath(rel) -> bool:
    # Data from storage or a listing: never let it steer a copy outside the destination.
    if not isinstance(rel, str) or not rel or rel.startswith("/"):
        return False
    if "\\" in rel or any(ord(c) < 32 for c in rel):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _join(store: Store, base: str, rel: str) -> str:
    """`rel` (a checked relative POSIX path) under the store path `base`."""
    if store.local:
        return os.path.join(base, *rel.split("/"))
    return posixpath.join(base, rel)


# -- the JSON records --------------------------------------------------------------------------


def _malformed(where: str, why: str) -> RepositoryError:
    return RepositoryError(f"malformed {where}: {why}; it was not written by accelflow or was "
                           "altered: restore it, or remove its folder")


def _require_keys(data: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise _malformed(where, f"lacks {', '.join(map(repr, missing))}")
    for key in keys:
        if key not in ("files", "extra", "sizes") and not isinstance(data[key], str):
            raise _malformed(where, f"{key!r} is not a string")


def _checked_model(data: dict, folder: str, where: str) -> dict:
    _require_keys(data, ("name", "id", "source", "format", "created"), where)
    if data["name"] != folder:
        raise _malformed(where, f"its name {data['name']!r} is not its folder's name {folder!r}")
    if not _is_segment(data["id"]):
        raise _malformed(where, f"its id {data['id']!r} is not a safe name")
    return data


def _checked_version(data: dict, folder: str, where: str) -> dict:
    _require_keys(data, ("version", "id", "created", "files"), where)
    if data["version"] != folder or not _is_segment(data["version"]):
        raise _malformed(where, f"its version {data['version']!r} is not its folder's name {folder!r}")
    for key in ("id", "upload"):
        if key in data and not _is_segment(data[key]):
            raise _malformed(where, f"its {key} {data[key]!r} is not a safe name")
    if not isinstance(data["files"], list):
        raise _malformed(where, "'files' is not a list")
    for rel in data["files"]:
        if not _is_safe_relpath(rel):
            raise _malformed(where, f"file entry {rel!r} is not a relative path inside the version")
    if not isinstance(data.get("extra") or {}, dict):
        raise _malformed(where, "'extra' is not an object")
    return data


def _model_record(model: ModelEntry) -> dict:
    record = dataclasses.asdict(model)
    del record["versions"]  # derived from the version folders, never stored
    return record


def _home_name(record: dict) -> str:
    upload = record.get("upload")
    return f"files-{upload}" if upload else _LEGACY_HOME


# -- what an add copies ------------------------------------------------------------------------


@dataclass
class _Source:
    """The files to add: (store path, relative POSIX path, size) in `store`."""

    store: Store
    files: list[tuple[str, str, int]]


def _local_source(src: str) -> _Source:
    if not src:
        raise RepositoryError("cannot add '': no such file or folder")
    store = Store(src, error=RepositoryError)
    root = store.root
    if os.path.isfile(root):
        _refuse_special(src, root)
        return _Source(store, [(root, os.path.basename(root), os.path.getsize(root))])
    if not os.path.isdir(root):
        raise RepositoryError(f"cannot add {src!r}: no such file or folder")
    found = []
    for path, rel in _walk(src, root):
        _refuse_special(src, path)
        found.append((path, rel, os.path.getsize(path)))
    if not found:
        raise RepositoryError(f"cannot add {src!r}: the folder holds no files")
    return _Source(store, found)  # sorted by relative path: a reproducible file list


def _walk(src: str, root: str) -> list[tuple[str, str]]:
    """(path to copy, relative POSIX path) of each file under `root`. A link out of the folder
    could upload a file from anywhere (say ~/.aws/credentials) to storage other people read:
    refused, naming the link and its target; a link to a file inside is copied as that file,
    from the checked target (core/links.py)."""
    try:
        return links.files_inside(root, RepositoryError)
    except RepositoryError as exc:
        raise RepositoryError(f"cannot add {src!r}: {exc}") from None


def _refuse_special(src: str, path: str) -> None:
    # A FIFO or a device would block the copy or stream without end.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise RepositoryError(f"cannot add {src!r}: {path} is not a regular file")


def _remote_source(src: str, options: dict | None) -> _Source:
    store = Store(src, options, error=RepositoryError)
    with store.errors(f"read the model to add from {store.uri}"):
        try:
            info = store.fs.info(store.root)
        except FileNotFoundError:
            raise RepositoryError(f"cannot add {store.uri}: no such file or folder") from None
        if info.get("type") != "directory":
            return _Source(store, [(store.root, posixpath.basename(store.root), int(info.get("size") or 0))])
        listing = store.files(store.root)
    if not listing:
        raise RepositoryError(f"cannot add {store.uri}: the folder holds no files")
    for rel in listing:
        if not _is_safe_relpath(rel):
            raise RepositoryError(f"cannot add {store.uri}: its file {rel!r} is not a safe relative path")
    return _Source(store, [(posixpath.join(store.root, rel), rel, size) for rel, size in listing.items()])


class ModelRepository:
    """A model repository on a local folder or S3-compatible storage (see the module docstring)."""

    def __init__(self, uri: str | None = None, storage_options: dict | None = None):
        uri = uri or os.environ.get(REPO_ENV) or DEFAULT_REPO
        self.store = repository_store(str(uri), storage_options)

    @property
    def uri(self) -> str:
        """The repository root: a local absolute path or ``protocol://bucket/prefix``."""
        return self.store.uri

    def __repr__(self) -> str:
        return f"ModelRepository({self.uri!r})"

    # -- paths (store paths) -----------------------------------------------------------------

    def _model_json(self, name: str) -> str:
        return self.store.path("models", name, "model.json")

    def _version_json(self, name: str, version: str) -> str:
        return self.store.path("models", name, "versions", version, "version.json")

    def _home(self, name: str, version: str, record: dict) -> str:
        return self.store.path("models", name, "versions", version, _home_name(record))

    # -- reading -----------------------------------------------------------------------------

    def _model_record(self, name: str) -> dict | None:
        path = self._model_json(name)
        data = self.store.read_json(path)
        return None if data is None else _checked_model(data, name, self.store.uri_of(path))

    def _version_record(self, name: str, version: str) -> dict | None:
        path = self._version_json(name, version)
        data = self.store.read_json(path)
        return None if data is None else _checked_version(data, version, self.store.uri_of(path))

    def _names(self, folder: str) -> list[str]:
        return sorted((n for n in self.store.children(folder) if _is_segment(n)), key=_natural_key)

    def _model_names(self) -> list[str]:
        return [n for n in self._names(self.store.path("models")) if self.store.exists(self._model_json(n))]

    def _version_names(self, name: str) -> list[str]:
        versions = self._names(self.store.path("models", name, "versions"))
        return [v for v in versions if self.store.exists(self._version_json(name, v))]

    def _model(self, name: str) -> ModelEntry | None:
        data = self._model_record(name)
        if data is None:
            return None
        return ModelEntry(name=data["name"], id=data["id"], source=data["source"], format=data["format"],
                          created=data["created"], versions=self._version_names(name))

    def _require_model(self, name: str) -> ModelEntry:
        check_name(name, "model")
        with self.store.errors(f"read model {name!r}"):
            model = self._model(name)
            if model is None:
                models = ", ".join(self._model_names()) or "(none: the repository is empty)"
                raise RepositoryError(
                    f"model {name!r} is not in repository {self.uri}; models: {models}. "
                    f"Add one with: accelflow repo add {name} VERSION PATH --source S"
                )
        return model

    def _entry(self, model: ModelEntry, record: dict) -> VersionEntry:
        home = self._home(model.name, record["version"], record)
        return VersionEntry(
            model=model.name, model_id=model.id, version=record["version"], id=record["id"],
            created=record["created"], home=self.store.uri_of(home), files=list(record["files"]),
            extra=dict(record.get("extra") or {}),
        )

    # -- public reading API ------------------------------------------------------------------

    def list(self, source: str | None = None) -> list[ModelEntry]:
        """Every model, by name; with ``source``, only the models of that source."""
        with self.store.errors("list models"):
            models = [self._model(n) for n in self._model_names()]
        return [m for m in models if m is not None and (source is None or m.source == source)]

    def show(self, name: str, version: str | None = None) -> ModelEntry | VersionEntry:
        """A model, or one of its versions when ``version`` is given."""
        if version is None:
            return self._require_model(name)
        return self.version(name, version)

    def version(self, name: str, version: str) -> VersionEntry:
        """One version; a RepositoryError that lists what exists when it is missing."""
        model, record = self._lookup(name, version)
        return self._entry(model, record)

    def _lookup(self, name: str, version: str) -> tuple[ModelEntry, dict]:
        model = self._require_model(name)
        check_name(version, "version")
        with self.store.errors(f"read version {name}@{version}"):
            record = self._version_record(name, version)
        if record is None:
            raise RepositoryError(
                f"model {name!r} has no version {version!r}; versions: "
                f"{', '.join(model.versions) or '(none)'}. "
                f"Add one with: accelflow repo add {name} {version} PATH --source {model.source}"
            )
        return model, record

    def copy_version(self, name: str, version: str, dest: Store, dest_path: str) -> list[str]:
        """Copy a version's files under `dest_path`, a store path of `dest` (see `Store.path`);
        server side when both are S3 with the same options. Returns the relative paths copied."""
        _, record = self._lookup(name, version)
        home = self._home(name, version, record)
        with self.store.errors(f"copy {name}@{version} to {dest.uri_of(dest_path)}"):
            for rel in record["files"]:
                dest.copy_file(self.store, self._home_file(home, rel), _join(dest, dest_path, rel))
        return list(record["files"])

    def _home_file(self, home: str, rel: str) -> str:
        """A version's file to read. In a local repository, a link put into a version folder by
        hand is followed only to a file inside that folder (core/links.py): else a copy would
        carry, say, ~/.aws/credentials to whoever fetches or saves the version."""
        path = _join(self.store, home, rel)
        return links.resolved_inside(home, path, RepositoryError) if self.store.local else path

    def fetch(self, name: str, version: str, dest: str) -> str:
        """Copy a version's home directory into the local folder ``dest``; returns ``dest``.

        The sizes come from the store's listing (version.json's are whatever its writer wrote),
        and their sum is checked against ACCELFLOW_MAX_FETCH_GB before any byte is downloaded;
        each download stops if the file grows past its listed size.
        """
        _, record = self._lookup(name, version)
        home = self._home(name, version, record)
        target = Store(dest, error=RepositoryError)
        with self.store.errors(f"fetch {name}@{version} to {dest}"):
            listing = self.store.files(home)
            missing = [rel for rel in record["files"] if rel not in listing]
            if missing:
                raise RepositoryError(f"{name}@{version} is incomplete: {missing[0]} is missing from "
                                      f"{self.store.uri_of(home)}")
            check_fetch_size(sum(listing[rel] for rel in record["files"]), f"{name}@{version}", RepositoryError)
            for rel in record["files"]:
                self.store.get_file(self._home_file(home, rel), _join(target, target.root, rel), size=listing[rel])
        return dest

    def local_home(self, name: str, version: str) -> str | None:
        """The home directory's local path when the repository is local (use it in place), else None."""
        if not self.store.local:
            return None
        return self.version(name, version).home

    # -- adding ------------------------------------------------------------------------------

    def add(self, name: str, version: str, src: str, *, source: str, format: str,
            extra: dict | None = None, model_id: str | None = None,
            version_id: str | None = None) -> VersionEntry:
        """Add ``src`` as a new version of model ``name``: a local file or folder, or the URI
        of a file or folder in any store (copied server side within one S3 store).

        ``model_id`` (used only when the model is new) and ``version_id`` let a caller name
        folders after the ids before the add; by default they are generated. An add whose
        ``version_id`` is already the version's id is taken as done (an earlier attempt of the
        same add whose answer was lost) and returns that version.
        """
        check_name(name, "model")
        check_name(version, "version")
        _check_label(source, "source")
        _check_label(format, "format")
        extra = _check_extra(extra)
        for value, kind in ((model_id, "model_id"), (version_id, "version_id")):
            if value is not None and not _is_segment(value):
                raise RepositoryError(f"invalid {kind} {value!r}: use {_NAME_RULE}")
        pending = ModelEntry(name=name, id=model_id or _new_id(), source=source, format=format, created=_now())
        with self.store.errors(f"add {name}@{version}"):
            files = self._source(os.fspath(src))
            model = self._model_for_add(name, source, format)
            record = self._refuse_existing(name, version, version_id)
            if record is None:
                record = self._upload_version(name, version, files, extra, version_id)
            return self._finish(model, pending, record)

    def _source(self, src: str) -> _Source:
        if not is_remote(src):
            return _local_source(src)
        # The repository's credentials and endpoint serve a source in the same kind of store,
        # and make a copy inside one S3 store server side (Store.same_backend).
        same_kind = not self.store.local and src.split("://", 1)[0] == self.store.protocol
        return _remote_source(src, self.store.storage_options if same_kind else None)

    def _model_for_add(self, name: str, source: str, format: str) -> ModelEntry | None:
        model = self._model(name)
        if model is not None:
            self._check_model_matches(model, source, format)
        return model

    def _check_model_matches(self, model: ModelEntry, source: str, format: str) -> None:
        for key, wanted in (("source", source), ("format", format)):
            have = getattr(model, key)
            if have != wanted:
                raise RepositoryError(
                    f"model {model.name!r} in {self.uri} has {key} {have!r}, not {wanted!r}; add the "
                    f"version with --{key} {have}, or under another model name"
                )

    def _refuse_existing(self, name: str, version: str, version_id: str | None) -> dict | None:
        """Refuse before uploading anything when the version is there; never touches a version
        folder without version.json (another writer's add in progress uses it)."""
        record = self._version_record(name, version)
        if record is None:
            return None
        if version_id is not None and record["id"] == version_id:
            return record
        raise self._exists_error(name, version, f"added {record['created']} by another writer")

    def _exists_error(self, name: str, version: str, how: str) -> RepositoryError:
        versions = ", ".join(self._version_names(name)) or version
        return RepositoryError(
            f"model {name!r} already has version {version!r} in {self.uri}: {name}@{version} "
            f"already exists ({how}); versions: {versions}. Choose a new version name"
        )

    def _upload_version(self, name: str, version: str, source: _Source, extra: dict,
                        version_id: str | None) -> dict:
        """Copy into this add's own folder, then claim the version; returns its version.json."""
        upload = secrets.token_hex(8)
        folder = self.store.path("models", name, "versions", version, f"files-{upload}")
        try:
            for path, rel, _ in source.files:
                self.store.copy_file(source.store, path, _join(self.store, folder, rel))
        except BaseException:
            self.store.remove_quietly(folder)  # this add's own folder: nobody else writes there
            raise
        sizes = {rel: size for _, rel, size in source.files}
        record = {"version": version, "id": version_id or _new_id(), "upload": upload, "created": _now(),
                  "files": list(sizes), "sizes": sizes, "extra": extra}
        return self._claim_version(name, version, folder, record)

    def _claim_version(self, name: str, version: str, folder: str, record: dict) -> dict:
        path = self._version_json(name, version)
        try:
            created = self.store.create_json(path, record)
        except BaseException as exc:
            self._drop_unclaimed(name, version, folder, record, exc)
            raise
        if created:
            return record
        self.store.remove_quietly(folder)
        winner = self._version_record(name, version)
        if winner is not None and winner["id"] == record["id"]:
            return winner  # an earlier attempt of this same add (same version_id) landed
        raise self._exists_error(
            name, version, "another writer added it while this add was uploading; nothing of this add was kept")

    def _drop_unclaimed(self, name: str, version: str, folder: str, record: dict, exc: BaseException) -> None:
        """Remove the upload after a failed create of version.json, unless that create may
        still land: a timed-out PUT can be carried out later, and a version.json pointing at
        a removed folder would be a broken version; an unreferenced folder is harmless."""
        if not is_transient(exc):
            self.store.remove_quietly(folder)
            return
        try:
            winner = self._version_record(name, version)
        except Exception:  # noqa: BLE001 - the store is still away: keep the folder
            return
        if winner is not None and winner.get("upload") != record["upload"]:
            self.store.remove_quietly(folder)  # another writer won: ours can never be referenced

    def _finish(self, model: ModelEntry | None, pending: ModelEntry, record: dict) -> VersionEntry:
        """Make sure model.json exists (it is written after the version), and return the entry."""
        if model is None:
            model = self._claim_model(pending, record)
        return self._entry(model, record)

    def _claim_model(self, pending: ModelEntry, record: dict) -> ModelEntry:
        try:
            if self.store.create_json(self._model_json(pending.name), _model_record(pending)):
                return pending
            existing = self._model(pending.name)
            if existing is None:
                raise RepositoryError(f"model.json of {pending.name!r} in {self.uri} was removed during this add")
            self._check_model_matches(existing, pending.source, pending.format)
            return existing
        except BaseException:
            self._withdraw(pending.name, record)
            raise

    def _withdraw(self, name: str, record: dict) -> None:
        """Take back this add's own version (its version.json, then its files), nothing else."""
        version = record["version"]
        self.store.remove_quietly(self._version_json(name, version))
        self.store.remove_quietly(self._home(name, version, record))


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
