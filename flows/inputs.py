"""A submitted request names only what its worker can reach.

A worker may be another machine: a path on the client means nothing there. Before a request
is submitted, each local input (the model file or folder, the samples, the calibration inputs) is uploaded into the
results location when that is shared storage (`<output>/.inputs/<content hash>/...`, so a
resubmission uploads nothing new; no result is ever named with a leading dot) and the request names its URI. Without shared storage a
local path is kept only when the server runs on this machine (`accelflow server`, whose
runner reads this disk); otherwise the request is refused before anything is submitted.
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import urlparse

from accelflow.core.errors import SpecError
from accelflow.flows.request import OptimizeRequest
from accelflow.storage.repository import ModelRepository, parse_model_ref
from accelflow.storage.store import Store, is_remote
from accelflow.tasks.package import INPUTS_FOLDER

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def server_is_local(api_url: str | None) -> bool:
    return not api_url or (urlparse(api_url).hostname or "") in _LOOPBACK


def prepare_for_submit(request: OptimizeRequest, api_url: str | None) -> OptimizeRequest:
    """The request with its local inputs uploaded, or a SpecError saying how to fix it."""
    shared = is_remote(request.output)
    here = server_is_local(api_url)
    update = {}
    ref = parse_model_ref(request.model)
    if ref is None and not is_remote(request.model):
        update["model"] = _reachable(request.model, "model", shared, here, request.output)
    elif ref is not None and not is_remote(ModelRepository(request.repo).uri) and not here:
        raise SpecError(_unreachable("the model repository", request.repo or ModelRepository(request.repo).uri))
    for kind in ("samples", "calibration"):  # a file, or (calibration) a folder of them
        given = getattr(request, kind)
        if given and not is_remote(given):
            update[kind] = _reachable(given, kind, shared, here, request.output)
    if not shared and not here:
        raise SpecError(f"--output {request.output} is a folder on this machine, which a worker elsewhere cannot "
                        "write to: give shared storage (--output s3://bucket/results), or set the server's "
                        "results location (prefect variable set accelflow-results s3://bucket/results).")
    return request.model_copy(update=update)


def _reachable(path: str, kind: str, shared: bool, here: bool, output: str) -> str:
    if shared:
        return upload_input(path, output)
    if here:
        return path
    raise SpecError(_unreachable(f"the {kind}", path))


def _unreachable(what: str, path: str) -> str:
    return (f"{what} {path} is on this machine, and the server's workers may run elsewhere. Give shared "
            "storage so that accelflow uploads it: --output s3://bucket/results (or the server's results "
            "location), or put the model in an S3 repository (accelflow repo add ... --repo s3://...) and "
            "submit NAME@VERSION.")


def upload_input(path: str, output: str) -> str:
    """Upload a local file (with an ONNX model's external data) or folder; returns its URI."""
    files = _input_files(path)
    digest = _digest(files)
    store = Store(output, error=SpecError)
    name = os.path.basename(os.path.normpath(path))
    with store.errors(f"upload {path}"):
        for local, rel in files:
            target = store.path(INPUTS_FOLDER, digest, rel)
            if not store.exists(target):
                store.put_file(local, target)
    return store.uri_of(store.path(INPUTS_FOLDER, digest, name))


def _input_files(path: str) -> list[tuple[str, str]]:
    """(local path, relative POSIX path under the upload folder): a folder keeps its name."""
    if not os.path.exists(path):
        raise SpecError(f"not found: {path}")
    if os.path.islink(path):
        raise SpecError(f"{path} is a symbolic link: give the file it points to.")
    if os.path.isfile(path):
        from accelflow.formats.onnx_model import companion_files

        folder = os.path.dirname(os.path.abspath(path))
        return [(p, os.path.relpath(p, folder).replace(os.sep, "/")) for p in [path, *companion_files(path)]]
    base = os.path.dirname(os.path.abspath(path))
    found = []
    for dirpath, _, names in os.walk(path):
        for entry in sorted(names):
            local = os.path.join(dirpath, entry)
            if os.path.islink(local):
                raise SpecError(f"{path} holds a symbolic link, {local}: copy the file itself into the folder.")
            found.append((local, os.path.relpath(local, base).replace(os.sep, "/")))
    return sorted(found, key=lambda pair: pair[1])


def _digest(files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for local, rel in files:
        h.update(rel.encode() + b"\0")
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]
