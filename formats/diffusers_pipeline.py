"""Hugging Face Stable Diffusion pipelines (diffusers folders): detection, loading, and the
tensor information of a pipeline (docs/diffusers.md).

A pipeline is several networks run many times per image. accelflow optimizes each heavy
network (text encoder, UNet, VAE decoder) as a model of its own; this module says which
ones, with what tensor information, derived from the one line that describes the image.
Detection reads JSON only; diffusers, transformers and torch are imported inside functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from accelflow.core import tensor_info
from accelflow.core.errors import SpecError, UnsupportedFormatError, first_line, missing_dependency, untrusted_model

NAME = "diffusers"
EXTRA = "diffusers"
INDEX = "model_index.json"
REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SUPPORTED = ("StableDiffusionPipeline",)
IMAGE_ELEMENTS = ("image", "input_0")


def detect(path: str) -> bool:
    """A folder whose model_index.json names a diffusers pipeline with the SD components."""
    index = _index_or_none(path)
    if not index or "_class_name" not in index or "_diffusers_version" not in index:
        return False
    return all(isinstance(index.get(c), list) and os.path.isdir(os.path.join(path, c)) for c in REQUIRED)


# Libraries whose classes diffusers loads components from without importing anything the
# pipeline folder ships; a diffusers pipeline submodule (["stable_diffusion",
# "StableDiffusionSafetyChecker"]) is diffusers' own code too.
LIBRARIES = ("diffusers", "transformers")


def code_risks(path: str) -> list[str]:
    """What of the pipeline folder at `path` would run its author's code when loaded.

    - a component whose library is not diffusers or transformers: diffusers then imports
      `<component>/<library>.py` from the folder (a custom component), or a module of that name;
    - a custom pipeline: `_class_name` given as [module, class] (diffusers imports
      `<module>.py` from the folder), or a `None.py` beside model_index.json, which diffusers
      takes for a custom pipeline file when none is named;
    - a component configuration naming `auto_map`: transformers' remote code.

    A plain `_class_name` string is looked up in diffusers itself, never imported; one
    accelflow does not optimize is refused when loading (read_index). Reads JSON only.
    """
    index = _index_or_none(path)
    if index is None:
        return []
    risks = _pipeline_risks(path, index)
    for name, entry in _components(path, index):
        risks += _component_risks(path, name, entry)
    return risks


def _components(path: str, index: dict) -> list[tuple[str, list]]:
    """(name, [library, class]) of each component model_index.json names (None entries: absent)."""
    found = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        if not (isinstance(name, str) and name.isidentifier()):
            # diffusers loads a component from the folder of that name: never from outside this one
            raise UnsupportedFormatError(f"{os.path.join(path, INDEX)} names a component {name!r}, which is not a "
                                         "folder name inside the pipeline; name components by plain names.")
        found.append((name, entry))
    return found


def _pipeline_risks(path: str, index: dict) -> list[str]:
    risks = []
    cls = index.get("_class_name")
    if isinstance(cls, (list, tuple)):
        module = cls[0] if cls else None
        risks.append(f"model_index.json: _class_name {list(cls)!r} is a custom pipeline; diffusers would import "
                     f"{module}.py from the pipeline folder")
    if os.path.isfile(os.path.join(path, "None.py")):
        risks.append("None.py beside model_index.json: diffusers would import it as a custom pipeline")
    return risks


def _component_risks(path: str, name: str, entry: list) -> list[str]:
    library, class_name = entry
    risks = []
    custom = os.path.join(name, f"{library}.py")
    shipped = isinstance(library, str) and os.path.isfile(os.path.join(path, custom))
    if shipped and is_library(library):  # diffusers prefers the folder's file to the library it names
        risks.append(f"component {name}: its folder ships {custom}, which diffusers would import in place of "
                     f"the {library} library")
    elif not is_library(library):
        module = custom if shipped else f"the module {library!r}"
        risks.append(f"component {name}: {library}.{class_name} is a custom component (its library is not "
                     f"diffusers or transformers); loading it would import {module}")
    folder = os.path.join(path, name)
    for config in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        modules = _auto_map_modules(os.path.join(folder, config)) if config.endswith(".json") else []
        if modules:
            risks.append(f"component {name}: {name}/{config} names remote code (auto_map) in "
                         f"{', '.join(f'{m}.py' for m in modules)}; loading it would import that")
    return risks


def is_library(library) -> bool:
    """diffusers, transformers, or a pipeline submodule of the installed diffusers (found on disk,
    without importing it: detection and checks stay light)."""
    if library in LIBRARIES:
        return True
    if not (isinstance(library, str) and library.isidentifier()):
        return False
    import importlib.util

    try:
        spec = importlib.util.find_spec("diffusers")
    except (ImportError, ValueError):
        return False
    roots = list(spec.submodule_search_locations or []) if spec else []
    return any(os.path.isfile(os.path.join(root, "pipelines", library, "__init__.py")) for root in roots)


def _auto_map_modules(config: str) -> list[str]:
    """The modules a transformers/diffusers configuration's auto_map points at ("mod.Class",
    ["mod.Class", None], "repo--mod.Class"), or [] when it has none."""
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if not auto_map:
        return []
    refs = []
    for value in (auto_map.values() if isinstance(auto_map, dict) else [auto_map]):
        refs += value if isinstance(value, (list, tuple)) else [value]
    modules = {str(r).split("--")[-1].rsplit(".", 1)[0] for r in refs if r}
    return sorted(modules) or ["(unnamed)"]


def _index_or_none(path: str) -> dict | None:
    index_path = os.path.join(path, INDEX)
    if not os.path.isfile(index_path):
        return None
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def read_index(path: str) -> dict:
    """model_index.json, refusing pipeline classes accelflow does not optimize."""
    index = _index_or_none(path) or {}
    if index.get("_class_name") not in SUPPORTED:
        raise UnsupportedFormatError(
            f"{path} is a diffusers {index.get('_class_name')!r}; accelflow optimizes "
            f"{', '.join(SUPPORTED)} (text to image). Save the pipeline as one of those."
        )
    return index


def import_diffusers():
    """diffusers (and transformers, which the text encoder and tokenizer need), or the extra to install."""
    try:
        import diffusers
        import transformers  # noqa: F401
    except ImportError as exc:
        raise missing_dependency(exc.name or "diffusers", EXTRA) from exc
    return diffusers


def load(path: str, trust_model_code: bool = False):
    """The pipeline in float32 on the CPU, from local files only, without a progress bar.

    A pipeline whose loading imports its author's code (code_risks) is refused unless
    `trust_model_code`, whoever calls this: the check runs here, before diffusers reads a file."""
    index = read_index(path)
    risks = code_risks(path)
    if risks and not trust_model_code:
        raise untrusted_model(path, NAME, risks)
    diffusers = import_diffusers()
    import torch

    _quiet_loading(diffusers)
    try:
        pipe = getattr(diffusers, index["_class_name"]).from_pretrained(
            path, local_files_only=True, dtype=torch.float32, trust_remote_code=bool(risks))
    except Exception as exc:  # diffusers raises OSError, ValueError, safetensors errors...
        raise UnsupportedFormatError(
            f"{path} looks like a diffusers pipeline but failed to load: {first_line(exc)}. "
            "Check that every component folder is complete (config and weights)."
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _quiet_loading(diffusers) -> None:
    """Loading bars and advice (install accelerate) would interleave with accelflow's progress lines."""
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def config_dict(network) -> dict:
    """A network's configuration as plain JSON data (diffusers FrozenDict or transformers config)."""
    config = network.config
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(data, default=str))


# ---------------------------------------------------------------- tensor information


@dataclass(frozen=True)
class Architecture:
    """The sizes of a pipeline that tensor information depends on, read from its configs."""

    vae_factor: int  # pixels per latent pixel
    unet_factor: int  # how much the UNet downsamples the latents
    latent_channels: int
    prompt_length: int  # the tokenizer pads every prompt to this
    text_hidden: int
    vocab_size: int

    @property
    def size_step(self) -> int:
        """Image heights and widths must be multiples of this."""
        return self.vae_factor * self.unet_factor


def architecture(path: str) -> Architecture:
    vae, unet = _config(path, "vae", "config.json"), _config(path, "unet", "config.json")
    text = _config(path, "text_encoder", "config.json")
    tokenizer = _config(path, "tokenizer", "tokenizer_config.json")
    return Architecture(
        vae_factor=2 ** (len(vae["block_out_channels"]) - 1),
        unet_factor=2 ** (len(unet["block_out_channels"]) - 1),
        latent_channels=int(unet["in_channels"]),
        prompt_length=int(tokenizer.get("model_max_length") or text["max_position_embeddings"]),
        text_hidden=int(text["hidden_size"]),
        vocab_size=int(text["vocab_size"]),
    )


def _config(path: str, component: str, name: str) -> dict:
    file = os.path.join(path, component, name)
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise UnsupportedFormatError(f"{file} is missing or not JSON ({exc}); the pipeline folder is incomplete.") from exc


@dataclass(frozen=True)
class ComponentSpec:
    """One network of the pipeline, optimized as a model: its name and tensor information."""

    name: str  # text_encoder | unet | vae_decoder
    lines: list[str]
    output_names: list[str]
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [line.split(":", 1)[0] for line in self.lines]


def image_shape(lines: list[str]) -> tensor_info.ShapeSpec:
    """The image's shape (N*3*H*W) from a pipeline's tensor information; SpecError otherwise."""
    spec = tensor_info.parse(lines)
    if len(spec.leaves) != 1 or spec.leaves[0].name not in IMAGE_ELEMENTS:
        raise SpecError(
            f"a Stable Diffusion pipeline takes one line of tensor information, for the image it makes: "
            f"image:float(N*3*H*W) (N images per call, H and W in pixels); got {', '.join(spec.names)}. "
            "See docs/diffusers.md."
        )
    leaf = spec.leaves[0]
    if leaf.dtype != "float32" or leaf.shape.rank != 4:
        raise SpecError(
            f"{leaf.text()}: the image is float (float32) of rank 4, N*3*H*W; the precision the "
            "pipeline runs in is chosen by --level, not here."
        )
    if {s[1] for s in leaf.shape.sizes} != {3}:
        raise SpecError(f"{leaf.text()}: axis 1 is the image's 3 colour channels (RGB); make it 3.")
    return leaf.shape


def check_sizes(shape: tensor_info.ShapeSpec, arch: Architecture, text: str) -> None:
    step = arch.size_step
    bad = sorted({d for s in shape.sizes for d in s[2:] if d % step})
    if bad:
        raise SpecError(
            f"image:float({text}): height and width must be multiples of {step} for this pipeline "
            f"(the VAE scales by {arch.vae_factor}, the UNet downsamples by {arch.unet_factor}); "
            f"{', '.join(map(str, bad))} {'is' if len(bad) == 1 else 'are'} not. "
            f"For example use {max(step, bad[0] // step * step)}."
        )


def components(path: str, lines: list[str]) -> list[ComponentSpec]:
    """Each heavy network with tensor information derived from the image's (docs/diffusers.md)."""
    arch = architecture(path)
    shape = image_shape(lines)
    check_sizes(shape, arch, shape.text())
    return [
        ComponentSpec("text_encoder", [f"input_ids:int64({_text_shape(shape, arch)})"], ["last_hidden_state"],
                      {"input_ids": (0, arch.vocab_size)}),
        ComponentSpec("unet", [
            f"sample:float({_mapped(shape, lambda n, h, w: (2 * n, arch.latent_channels, h // arch.vae_factor, w // arch.vae_factor))})",
            "timestep:float(1)",
            f"encoder_hidden_states:float({_mapped(shape, lambda n, h, w: (2 * n, arch.prompt_length, arch.text_hidden))})",
        ], ["noise_pred"]),
        ComponentSpec("vae_decoder", [
            f"latent:float({_mapped(shape, lambda n, h, w: (n, arch.latent_channels, h // arch.vae_factor, w // arch.vae_factor))})",
        ], ["image"]),
    ]


def _mapped(shape: tensor_info.ShapeSpec, size_of) -> str:
    """The image shape's kind (fixed, range, choices) with each of its sizes mapped."""
    sizes = tuple(size_of(s[0], s[2], s[3]) for s in shape.sizes)
    return tensor_info.ShapeSpec(shape.kind, sizes).text()


def _text_shape(shape: tensor_info.ShapeSpec, arch: Architecture) -> str:
    # The text encoder sees one row per prompt, which is fewer than N images when a prompt
    # makes several (num_images_per_prompt), so its batch is 1 up to the largest N.
    most = max(s[0] for s in shape.sizes)
    sizes = ((1, arch.prompt_length),) if most == 1 else ((1, arch.prompt_length), (most, arch.prompt_length))
    return tensor_info.ShapeSpec("fixed" if most == 1 else "range", sizes).text()
