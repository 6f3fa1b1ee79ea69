"""Fan-out: one task per (model, version) of a request, named by the product's rule.

`accelflow optimize NAME@V1,V2 OTHER@V3` is three tasks, `<name>-NAME-V1#1`, `<name>-NAME-V2#2`,
`<name>-OTHER-V3#3`; a request for one model version keeps the plain name.
"""

from __future__ import annotations

import os

from accelflow.core.errors import SpecError
from accelflow.flows.request import OptimizeRequest, default_task_name

DEFAULT_BATCH_NAME = "optimize"


def expand_models(models: list[str]) -> list[str]:
    """`NAME@V1,V2` -> `NAME@V1`, `NAME@V2`; paths pass through unchanged."""
    refs = []
    for model in models:
        name, at, versions = model.rpartition("@")
        if at and name and not os.path.exists(model):
            parts = [v.strip() for v in versions.replace("，", ",").split(",")]
            if not all(parts):
                raise SpecError(f"{model!r}: give versions as NAME@V1,V2 with no empty version.")
            refs.extend(f"{name}@{v}" for v in parts)
        else:
            refs.append(model)
    if len(set(refs)) != len(refs):
        raise SpecError(f"the same model version is asked for twice: {', '.join(refs)}")
    return refs


def _model_and_version(ref: str) -> tuple[str, str]:
    name, at, version = ref.rpartition("@")
    if at and name and not os.path.exists(ref):
        return name, version
    return os.path.splitext(os.path.basename(os.path.normpath(ref)))[0], "local"


def child_requests(request: OptimizeRequest, models: list[str]) -> list[OptimizeRequest]:
    """One request per model version; several get `<name>-<model>-<version>#<n>` names."""
    refs = expand_models(models)
    if len(refs) == 1:
        name = request.name or default_task_name(refs[0], request.level)
        return [request.model_copy(update={"model": refs[0], "name": name})]
    base = request.name or DEFAULT_BATCH_NAME
    return [
        request.model_copy(update={"model": ref, "name": f"{base}-{'-'.join(_model_and_version(ref))}#{n}"})
        for n, ref in enumerate(refs, start=1)
    ]
