"""File-tree helpers the tests share: a folder's files as a dict, and files staged for publishing."""

from __future__ import annotations

import os


def tree(folder: str) -> dict[str, bytes]:
    """Every file under `folder`, by its relative path with forward slashes, with its bytes."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder).replace(os.sep, "/")] = f.read()
    return out


def write_files(folder: str, files: dict[str, bytes]) -> None:
    """Write `files` (relative path -> bytes) under `folder`, making subfolders as needed."""
    for rel, data in files.items():
        path = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
