"""Step 1: find the model to optimize, from a path or from the model repository."""

from __future__ import annotations

import os
from dataclasses import dataclass

from formats import detect_format, find_model_file, model_home


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


def fetch_model(model: str, repo_uri: str | None, model_file: str | None, scratch: str) -> FetchedModel:
    """Resolve `model` (a path, or NAME@VERSION in the repository) to a local model file.

    A local repository's version folder is used in place; a remote one is copied into
    `scratch` first.
    """
    from tasks.repository import ModelRepository, parse_model_ref
    from tasks.retry import with_retries

    ref = parse_model_ref(model)
    if ref is None:
        return _local_model(model, model_file)
    repository = ModelRepository(repo_uri)
    entry = with_retries(lambda: repository.version(*ref), f"read {model}")
    home = repository.local_home(*ref) or with_retries(
        lambda: repository.fetch(*ref, os.path.join(scratch, "model")), f"fetch {model}")
    path = find_model_file(home, model_file)
    return FetchedModel(
        name=entry.model, version=entry.version, home=os.path.abspath(home),
        model_file=os.path.abspath(path), format=detect_format(path).NAME,
        source=repository.show(entry.model).source,
        repo=repository.uri, model_id=entry.model_id, version_id=entry.id,
    )


def _local_model(path: str, model_file: str | None) -> FetchedModel:
    model_path = find_model_file(path, model_file)
    fmt = detect_format(model_path)
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return FetchedModel(
        name=stem or "model", version="local", home=model_home(path),
        model_file=os.path.abspath(model_path), format=fmt.NAME,
    )
