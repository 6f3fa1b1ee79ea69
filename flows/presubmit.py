"""What the client checks before it submits a request: what a worker would otherwise find first.

Where the model is on this machine (a file or folder, or an entry of a local repository), the
checks of the flow's preflight that read no model data run here too: the model exists, its format
is known, its code is allowed, the options fit the format, the output is outside its folder. Then the tensor information is matched
against the model's inputs by the format's own check, which runs none of the model: an ONNX
graph's inputs are read from its protobuf, a TorchScript forward()'s parameters from the source in
its archive. A remote model (s3://, an entry of a remote repository, whose credentials may be the
workers' alone) is checked by the worker, as an inline run checks it.
"""

from __future__ import annotations

from accelflow.core import tensor_info
from accelflow.flows.optimize import locate_model
from accelflow.flows.request import OptimizeRequest, check_request
from accelflow.formats import detect_format, find_model_file, onnx_model, torchscript
from accelflow.storage.repository import ModelRepository, parse_model_ref
from accelflow.storage.store import is_remote
from accelflow.tasks.package import check_output_path

# Per format, the check of tensor information against the model's inputs that runs no model code.
INPUT_CHECKS = {onnx_model.NAME: onnx_model.check_inputs, torchscript.NAME: torchscript.check_input_names}


def check_before_submit(request: OptimizeRequest) -> OptimizeRequest:
    """The request normalised (check_request), or the user error its worker would have failed with."""
    request = check_request(request, local=False)
    model_file = local_model_file(request)
    if model_file:  # an output inside the model's folder (or around it) is refused by the worker too
        check_output_path(request.output, locate_model(request))
    check = INPUT_CHECKS.get(detect_format(model_file).NAME) if model_file else None
    if check is not None:
        check(model_file, tensor_info.parse(request.tensor_info))
    return request


def local_model_file(request: OptimizeRequest) -> str | None:
    """The model file the worker will read, when it is on this machine (checked by the flow's
    `locate_model`); None for a remote model."""
    ref = parse_model_ref(request.model)
    if is_remote(request.model) or (ref is not None and is_remote(ModelRepository(request.repo).uri)):
        return None
    home = locate_model(request)
    return find_model_file(request.model if ref is None else home, request.model_file)
