"""Step 1: find the model to optimize, from a path or from the model repository."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from accelflow.core import links
from accelflow.core.errors import SpecError, UnsupportedFormatError
from accelflow.formats import check_model_code, detect_format, find_model_file, format_named, model_home


@dataclass
class FetchedModel:
    """A model ready to read locally: its home folder and the model file inside it."""

    name: str
    version: str
    home: str
    model_file: str
    format: str
    source: str = "local"
    repo: str = ""
    model_id: str = ""
    version_id: str = ""
    model_code: list[str] = dataclasses.field(default_factory=list)  # what of it runs code (trusted)


def fetch_model(model: str, repo_uri: str | None, model_file: str | None, scratch: str,
                trust_model_code: bool = False) -> FetchedModel:
    """Resolve `model` (a path, or NAME@VERSION in the repository) to a local model file.

    A local repository's version folder is used in place; a remote one is copied into
    `scratch` first. A model whose loading runs its author's code is refused unless trusted.
    """
    fetched = _fetch(model, repo_uri, model_file, scratch)
    risks = check_model_code(format_named(fetched.format), fetched.model_file, trust_model_code)
    return dataclasses.replace(fetched, model_code=risks)


def _fetch(model: str, repo_uri: str | None, model_file: str | None, scratch: str) -> FetchedModel:
    from accelflow.storage.repository import ModelRepository, parse_model_ref
    from accelflow.storage.retry import with_retries
    from accelflow.storage.store import is_remote

    if is_remote(model):
        return _remote_model(model, model_file, scratch)
    ref = parse_model_ref(model)
    if ref is None:
        return _local_model(model, model_file)
    repository = ModelRepository(repo_uri)
    entry = with_retries(lambda: repository.version(*ref), f"read {model}")
    home = repository.local_home(*ref) or with_retries(
        lambda: repository.fetch(*ref, os.path.join(scratch, "model")), f"fetch {model}")
    _refuse_links_out(home)  # a local repository's folder is used in place: a link may be planted there
    path = find_model_file(home, model_file)
    return FetchedModel(
        name=entry.model, version=entry.version, home=os.path.abspath(home),
        model_file=os.path.abspath(path), format=detect_format(path).NAME,
        source=repository.show(entry.model).source,
        repo=repository.uri, model_id=entry.model_id, version_id=entry.id,
    )


def _local_model(path: str, model_file: str | None) -> FetchedModel:
    if os.path.isdir(path):
        _refuse_links_out(path)
    model_path = find_model_file(path, model_file)
    fmt = detect_format(model_path)
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return FetchedModel(
        name=stem or "model", version="local", home=model_home(path),
        model_file=os.path.abspath(model_path), format=fmt.NAME,
    )


def _refuse_links_out(folder: str) -> None:
    """Refuse a model folder holding a symbolic link out of it (naming the link and its target)
    before any step reads it: the link's target would be read as the model's data, and copied
    with the result or into the repository. (A single model file's own references, an ONNX
    model's external data, are checked by its format: onnx_model.companion_files.)"""
    links.files_inside(folder, UnsupportedFormatError)


def remote_home(uri: str) -> str:
    """A model URI's home directory: the folder it names, or the folder of the file it names
    (fetched whole, as a version's home is: an ONNX model's external data lives there)."""
    from accelflow.storage.store import Store

    store = Store(uri, error=UnsupportedFormatError)
    with store.errors(f"find the model {uri}"):
        if store.fs.isdir(store.root):
            return store.uri
        if not store.fs.isfile(store.root):
            raise UnsupportedFormatError(f"model not found: {uri}. Give the URI of a model file or folder.")
    return store.uri.rsplit("/", 1)[0]


def _remote_model(uri: str, model_file: str | None, scratch: str) -> FetchedModel:
    from accelflow.storage.retry import with_retries
    from accelflow.storage.store import Store, check_fetch_size

    home_uri = with_retries(lambda: remote_home(uri), f"find {uri}")
    home = os.path.join(scratch, "model")
    store = Store(home_uri, error=UnsupportedFormatError)
    with store.errors(f"fetch the model {home_uri}"):
        listing = with_retries(lambda: store.files(store.root), f"list {home_uri}")
        # The whole folder's size, from the listing, before any byte moves (the worker's cap).
        check_fetch_size(sum(listing.values()), f"the model {home_uri}", UnsupportedFormatError)
        with_retries(lambda: [store.get_file(store.path(rel), os.path.join(home, *rel.split("/")), size=size)
                              for rel, size in listing.items()], f"fetch {home_uri}")
    named = model_file or (None if home_uri == Store(uri).uri else uri.rsplit("/", 1)[1])
    fetched = _local_model(home, named)
    stem = os.path.splitext(os.path.basename(uri.rstrip("/")))[0]
    return dataclasses.replace(fetched, name=stem or "model", source="uri", repo=home_uri)


def local_file(path: str | None, scratch: str, option: str = "--samples", folders: bool = False) -> str | None:
    """A local copy of a file given by URI (samples a worker reads), or with `folders` of a
    folder's .npz files (calibration inputs); a local path as it is."""
    from accelflow.storage.store import Store, check_fetch_size, is_remote

    if not path or not is_remote(path):
        return path
    store = Store(path, error=SpecError)
    target = os.path.join(scratch, "inputs", os.path.basename(store.root.rstrip("/")))
    with store.errors(f"fetch {path}"):
        if folders and store.fs.isdir(store.root):
            files = [f for f in store.fs.ls(store.root, detail=False) if f.endswith(".npz")]
            for remote in files:
                _fetch_one(store, remote, os.path.join(target, os.path.basename(remote)), path, check_fetch_size)
            os.makedirs(target, exist_ok=True)
            return target
        if not store.fs.isfile(store.root):
            raise SpecError(f"{option} file not found: {path}")
        _fetch_one(store, store.root, target, path, check_fetch_size)
    return target


def _fetch_one(store, remote: str, target: str, uri: str, check_fetch_size) -> None:
    size = int(store.fs.info(remote).get("size") or 0)
    check_fetch_size(size, f"the file {uri}", SpecError)
    store.get_file(remote, target, size=size)
