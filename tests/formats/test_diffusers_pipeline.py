"""Stable Diffusion pipeline folders: detection by content, and a pipeline's tensor information."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from accelflow.core.errors import MissingDependencyError, SpecError, UnsupportedFormatError
from accelflow.formats import diffusers_pipeline as dp

from accelflow import formats

pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra: pip install -e .[diffusers]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("sd") / "tiny-sd"), "tiny")


def test_a_pipeline_folder_is_detected_as_itself(tiny):
    assert dp.detect(tiny)
    assert formats.find_model_file(tiny) == tiny  # the folder, not one of its component files
    assert formats.detect_format_name(tiny) == "diffusers"
    assert not dp.detect(os.path.join(tiny, "unet"))
    assert not dp.detect(os.path.join(tiny, "model_index.json"))


def test_a_folder_missing_a_component_is_not_a_pipeline(tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(open(os.path.join(tiny, "model_index.json")).read())
    for part in ("unet", "vae", "text_encoder", "tokenizer"):  # no scheduler/
        (broken / part).mkdir()
    assert not dp.detect(str(broken))


def test_detection_imports_neither_diffusers_nor_torch(tiny):
    code = ("import sys; sys.modules['diffusers'] = sys.modules['torch'] = sys.modules['transformers'] = None\n"
            f"from accelflow import formats; print(formats.detect_format_name({tiny!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "diffusers"


def test_without_diffusers_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingDependencyError, match=r"Stable Diffusion \(diffusers\) support is not installed .*bash scripts/install.sh diffusers"):
        dp.import_diffusers()


def test_other_pipeline_classes_are_refused_by_name(tiny, tmp_path):
    index = json.load(open(os.path.join(tiny, "model_index.json")))
    index["_class_name"] = "StableDiffusionXLPipeline"
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedFormatError, match="StableDiffusionXLPipeline.*StableDiffusionPipeline"):
        dp.read_index(str(tmp_path))


def test_networks_take_tensor_information_derived_from_the_image(tiny):
    # tiny: VAE scales by 2, UNet downsamples by 2, 4 latent channels, CLIP 77 tokens of width 32.
    specs = {s.name: s for s in dp.components(tiny, ["image:float(1*3*32*48)"])}
    assert specs["text_encoder"].lines == ["input_ids:int64(1*77)"]
    assert specs["unet"].lines == ["sample:float(2*4*16*24)", "timestep:float(1)",
                                   "encoder_hidden_states:float(2*77*32)"]
    assert specs["vae_decoder"].lines == ["latent:float(1*4*16*24)"]
    assert specs["text_encoder"].int_ranges == {"input_ids": (0, dp.architecture(tiny).vocab_size)}


def test_dynamic_batch_and_sizes_carry_over_to_every_network(tiny):
    ranged = {s.name: s.lines for s in dp.components(tiny, ["input_0:float(1*3*32*32,2*3*64*64)"])}
    assert ranged["unet"][0] == "sample:float(2*4*16*16,4*4*32*32)"
    assert ranged["text_encoder"] == ["input_ids:int64(1*77,2*77)"]  # one row per prompt, up to N
    chosen = {s.name: s.lines for s in dp.components(tiny, ["image:float([1*3*32*32,1*3*64*32])"])}
    assert chosen["vae_decoder"] == ["latent:float([1*4*16*16,1*4*32*16])"]


@pytest.mark.parametrize("lines, message", [
    (["image:float(1*3*32*32)", "input_ids:int64(1*77)"], "one line of tensor information, for the image"),
    (["prompt:float(1*3*32*32)"], "image:float\\(N\\*3\\*H\\*W\\)"),
    (["image:float16(1*3*32*32)"], "chosen by --level"),
    (["image:float(1*3*32)"], "rank 4"),
    (["image:float(1*4*32*32)"], "3 colour channels"),
    (["image:float(1*3*32*30)"], r"multiples of 4 .*; 30 is not\. For example use 28"),
    (["image:float(1*3*32*32,1*3*40*42)"], r"multiples of 4 .*; 42 is not"),
])
def test_what_does_not_fit_a_pipeline_is_refused_clearly(tiny, lines, message):
    with pytest.raises(SpecError, match=message):
        dp.components(tiny, lines)
