"""The networks of a Stable Diffusion pipeline as plain tensor-in, tensor-out models.

Each wrapper takes the flat tensors of its ComponentSpec and returns a tuple of tensors, so
the component exports to ONNX (legacy exporter, as TorchScript models do) and runs as a
baseline under the same Runner convention as any model (core/runner.py).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
from accelflow.core.errors import ConversionError, first_line
from accelflow.core.modelio import ModelIO, flat_structure
from accelflow.formats.torchscript import DEFAULT_OPSET, to_numpy, to_torch


def wrapper(pipe, name: str):
    """The nn.Module computing component `name` of a loaded pipeline on flat tensors."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = pipe.text_encoder

        def forward(self, input_ids):
            return (self.inner(input_ids, return_dict=False)[0],)

    class UNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = pipe.unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return (self.inner(sample, timestep, encoder_hidden_states, return_dict=False)[0],)

    class VaeDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = pipe.vae

        def forward(self, latent):
            return (self.inner.decode(latent, return_dict=False)[0],)

    classes = {"text_encoder": TextEncoder, "unet": UNet, "vae_decoder": VaeDecoder}
    return classes[name]().eval()


def to_onnx(pipe, component, out_dir: str, example: list[np.ndarray]) -> tuple[str, ModelIO]:
    """Export one component with dynamic axes where its tensor information has them."""
    import torch
    from accelflow.core import tensor_info

    spec = tensor_info.parse(component.lines)
    names = component.input_names
    axes = {name: {a: f"{name}_dim{a}" for a in leaf.shape.dynamic_axes}
            for name, leaf in zip(names, spec.leaves) if leaf.shape.dynamic_axes}
    for out in component.output_names:  # outputs follow the batch and spatial sizes of the inputs
        axes[out] = {0: "batch", 2: "height", 3: "width"} if component.name != "text_encoder" else {0: "batch"}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                wrapper(pipe, component.name), tuple(to_torch(a) for a in example), path,
                input_names=names, output_names=component.output_names, dynamic_axes=axes,
                opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(
            f"exporting the pipeline's {component.name} to ONNX failed: {first_line(exc)}. "
            "Run with --debug for details."
        ) from exc
    return path, ModelIO(names, list(component.output_names), flat_structure(len(component.output_names)))


class ComponentBaseline:
    """One component of the original pipeline in PyTorch (inference mode, given threads)."""

    def __init__(self, pipe, name: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.module = wrapper(pipe, name)
        self.label = f"diffusers {name} (torch {torch.__version__})"

    def prepare(self, arrays):
        return [to_torch(a) for a in arrays]

    def run(self, feed):
        with self.torch.inference_mode():
            return self.module(*feed)

    def outputs(self, raw):
        return [to_numpy(t) for t in raw]


@contextlib.contextmanager
def _quiet():
    """The legacy exporter warns that it is deprecated, and tracing warns on Python branches
    over shapes (diffusers checks sizes that the tensor information fixes or bounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
