"""An optimized Stable Diffusion pipeline: the original pipeline class around engine-built networks.

    import accelflow
    pipe = accelflow.load_pipeline("results/sd-fp16")     # accelflow.load(...) returns the same
    image = pipe("a red apple", num_inference_steps=20, height=256, width=256,
                 generator=torch.Generator().manual_seed(0)).images[0]

The result's model/ folder holds one subfolder per optimized network (text_encoder, unet,
vae_decoder), each an optimized model folder with its own manifest, and the original
tokenizer and scheduler (and any other small component) as saved by diffusers. The pipeline
is diffusers' own class, so scheduling, guidance and image post-processing are the original
code; only the networks' forward calls go to the engines.
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np
from accelflow.core.runner import run_arrays, thread_count

OPTIMIZED = ("text_encoder", "unet", "vae_decoder")
CONFIG = "component_config.json"  # the original network's config.json, which the pipeline reads


class _Network:
    """A network the pipeline calls, run by an engine on numpy arrays; `forward` is an instance
    attribute so that end-to-end timing can wrap it the same way as a torch module's."""

    def __init__(self, runner, config: dict):
        import torch
        from diffusers.configuration_utils import FrozenDict

        self.runner, self.config = runner, FrozenDict(config)
        self.dtype, self.device, self.torch = torch.float32, torch.device("cpu"), torch

    def _run(self, *tensors):
        arrays = [t.detach().cpu().numpy() for t in tensors]
        return [self.torch.from_numpy(np.ascontiguousarray(o)) for o in run_arrays(self.runner, arrays)]

    def to(self, *args, **kwargs):  # the pipeline's .to("cpu") moves nothing here
        return self


class TextEncoder(_Network):
    def __init__(self, runner, config: dict):
        super().__init__(runner, config)
        self.forward = self._encode

    def __call__(self, input_ids, attention_mask=None, **_):
        return self.forward(input_ids.to(self.torch.int64))

    def _encode(self, input_ids):
        return tuple(self._run(input_ids))


class UNet(_Network):
    def __init__(self, runner, config: dict, batch_sizes: tuple[int, int]):
        super().__init__(runner, config)
        self.batch_sizes = batch_sizes  # the smallest and largest batch it was built for
        self.forward = self._denoise

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict=True, **_):
        out = self.forward(sample, timestep, encoder_hidden_states)
        return (out,) if not return_dict else _Output(sample=out)

    def _denoise(self, sample, timestep, encoder_hidden_states):
        t = self.torch.as_tensor(timestep, dtype=self.torch.float32).reshape(1)
        n = sample.shape[0]
        if n < self.batch_sizes[0]:
            # Built for classifier-free guidance (batch 2N); guidance_scale <= 1 sends N:
            # run the batch twice over and keep one copy, rather than refuse.
            doubled = self._run(self.torch.cat([sample] * 2), t, self.torch.cat([encoder_hidden_states] * 2))[0]
            return doubled[:n]
        return self._run(sample, t, encoder_hidden_states)[0]


class VaeDecoder(_Network):
    def __init__(self, runner, config: dict):
        super().__init__(runner, config)
        self.forward = self._decode_latent

    def decode(self, latent, return_dict=True, **_):
        image = self.forward(latent)
        return (image,) if not return_dict else _Output(sample=image)

    def _decode_latent(self, latent):
        return self._run(latent)[0]


class _Output(dict):
    """What diffusers' UNet and VAE return with return_dict=True: fields and attributes alike."""

    def __getattr__(self, name):
        return self[name]


def assemble(pipeline_class: str, networks: dict, others: dict, requires_safety_checker: bool = False):
    """The diffusers pipeline class built from engine-run networks and its other components."""
    from accelflow.formats.diffusers_pipeline import import_diffusers

    cls = getattr(import_diffusers(), pipeline_class)
    parts = {"safety_checker": None, "feature_extractor": None, **others}
    pipe = cls(vae=networks["vae_decoder"], text_encoder=networks["text_encoder"], unet=networks["unet"],
               requires_safety_checker=requires_safety_checker and parts["safety_checker"] is not None, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def networks_from(runners: dict, configs: dict, unet_batches: tuple[int, int]) -> dict:
    """The pipeline's network objects around loaded runners (keyed by component name)."""
    return {
        "text_encoder": TextEncoder(runners["text_encoder"], configs["text_encoder"]),
        "unet": UNet(runners["unet"], configs["unet"], unet_batches),
        "vae_decoder": VaeDecoder(runners["vae_decoder"], configs["vae_decoder"]),
    }


def unet_batches(lines: list[str]) -> tuple[int, int]:
    from accelflow.core import tensor_info

    shape = tensor_info.parse(lines).leaves[0].shape
    return shape.min[0], shape.max[0]


def load_component(folder: str, index_entry: list, name: str, trust_model_code: bool = False):
    """A small component (tokenizer, scheduler, safety checker ...) saved by diffusers.

    Its class comes from diffusers or transformers (or a diffusers pipeline submodule); a module
    the component's folder ships, or any other library the result's model_index.json names, is
    imported only with `trust_model_code`: importing a module runs it, and the result folder
    may have been edited since it was made."""
    from accelflow.formats.diffusers_pipeline import is_library

    library, class_name = index_entry
    shipped = os.path.isfile(os.path.join(folder, name, f"{library}.py"))
    if (shipped or not is_library(library)) and not trust_model_code:
        from accelflow.core.errors import untrusted_model

        module = f"{name}/{library}.py" if shipped else library
        raise untrusted_model(folder, "diffusers", [f"component {name}: {library}.{class_name} is a custom "
                                                    f"component; loading it would import {module}"])
    cls = _component_class(folder, library, class_name, name, shipped)
    return cls.from_pretrained(os.path.join(folder, name))


def _component_class(folder: str, library: str, class_name: str, name: str, shipped: bool):
    from accelflow.formats.diffusers_pipeline import LIBRARIES, is_library

    if shipped:  # a custom component, trusted: diffusers' own loader for it
        from diffusers.utils.dynamic_modules_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(os.path.join(folder, name), module_file=f"{library}.py",
                                             class_name=class_name, trust_remote_code=True)
    # A pipeline submodule is looked up inside diffusers, never as a top-level module of that name.
    first = library if library in LIBRARIES or not is_library(library) else f"diffusers.pipelines.{library}"
    for module in (first, "diffusers", "transformers"):
        try:
            return getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError):
            continue
    from accelflow.core.errors import EngineError

    raise EngineError(f"component {name} is a {library}.{class_name}, which cannot be imported here.")


def load_pipeline(folder: str, threads: int | None = None, trust_model_code: bool = False):
    """Load an optimized pipeline folder (the task's result folder or its model/ subfolder)."""
    from accelflow.engines.result import OptimizedModel, read_manifest
    from accelflow.formats.diffusers_pipeline import import_diffusers

    import_diffusers()
    manifest = read_manifest(folder)
    if manifest.get("format") != "diffusers":
        from accelflow.core.errors import EngineError

        raise EngineError(f"{folder} holds an optimized {manifest.get('format')} model, not a pipeline; "
                          "load it with accelflow.load.")
    root, threads = manifest["folder"], threads or thread_count()
    with open(os.path.join(root, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    _refuse_model_code(root, trust_model_code)
    runners, configs = {}, {}
    for name in OPTIMIZED:
        model = OptimizedModel(os.path.join(root, name), threads)  # checks the engine and its version
        runners[name] = model.runner
        with open(os.path.join(root, name, CONFIG), encoding="utf-8") as f:
            configs[name] = json.load(f)
    others = {name: load_component(root, index[name], name, trust_model_code) for name in manifest["carried"]}
    networks = networks_from(runners, configs, unet_batches(manifest["components"]["unet"]["tensor_info"]))
    return assemble(manifest["pipeline_class"], networks, others, bool(index.get("requires_safety_checker")))


def _refuse_model_code(root: str, trust_model_code: bool) -> None:
    """Before anything of the result is read: what of it would import its author's code (a
    component module, remote code a config names) is refused unless trusted."""
    from accelflow.core.errors import untrusted_model
    from accelflow.formats.diffusers_pipeline import code_risks

    risks = code_risks(root)
    if risks and not trust_model_code:
        raise untrusted_model(root, "diffusers", risks)
