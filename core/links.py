"""Symbolic links in a model's folder: never followed out of it (docs/security.md).

A model folder comes from whoever submitted the model. A link in it to ~/.aws/credentials
would otherwise be read as weights, copied into the model repository or saved with a result.
The rule, everywhere a model's files are read or copied (adding, fetching, optimizing,
saving): a link whose target lies outside the folder is refused, naming the link and its
target. A link to a file inside the folder is followed: it reveals nothing the folder does
not already hold, and tools lay out files that way (a weights file linked under the name a
graph expects); a copy holds the target's bytes under the link's name. A link to a folder is
refused even inside: following one can loop (`a -> .`), and no format needs it. (ONNX
external data is stricter still, as onnx itself is: no link at all, formats/onnx_model.py.)

Plain Python, no third-party import.
"""

from __future__ import annotations

import os

from accelflow.core.errors import AccelflowError

_HINT = "copy the real file into the folder in place of the link"


def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (both already resolved or both not)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def resolved_inside(folder: str, path: str, error: type[AccelflowError] = AccelflowError) -> str:
    """The real path of `path` (a file under `folder`, perhaps a link or under a link), refused
    with `error` when it resolves outside `folder`, to nothing, or to something not a file."""
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    link = outermost_link(folder, path)
    if not inside(real, root):
        where = f"{link} is a symbolic link to {os.path.realpath(link)}" if link else f"{path} resolves to {real}"
        raise error(f"{where}, outside the model's folder {root}: links are not followed out of a "
                    f"model's folder; {_HINT}.")
    if not os.path.isfile(real):
        what = "nothing" if not os.path.exists(real) else "a folder"
        raise error(f"{link or path} is a symbolic link to {real}, which is {what}; {_HINT}.")
    return real


def outermost_link(folder: str, path: str) -> str | None:
    """The first link met on the way from `folder` down to `path` (the one to name), if any;
    `folder` itself is not looked at (the caller chose it)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    current = os.path.abspath(folder)
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def files_inside(folder: str, error: type[AccelflowError] = AccelflowError) -> list[tuple[str, str]]:
    """(real path, relative POSIX path) of every file under `folder`, sorted by relative path.

    A link to a file inside the folder is listed under its own name with its target's real
    path (copy from that: it is what was checked); any other link is refused with `error`.
    """
    found = []
    for dirpath, dirs, names in os.walk(folder):  # never descends into a linked folder
        for name in sorted(dirs):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if not inside(real, os.path.realpath(folder)):
                    resolved_inside(folder, path, error)  # raises, naming the link and its target
                raise error(f"{path} is a symbolic link to the folder {real}: links to folders are not "
                            "followed in a model's folder; copy the folder in place of the link.")
        for name in names:
            path = os.path.join(dirpath, name)
            real = resolved_inside(folder, path, error) if os.path.islink(path) else path
            found.append((real, os.path.relpath(path, folder).replace(os.sep, "/")))
    return sorted(found, key=lambda pair: pair[1])
