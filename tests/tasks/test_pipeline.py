"""tasks/pipeline.py: a Stable Diffusion pipeline's networks planned from the image's tensor
information and each taken through export, accuracy and timing like a model (on the tiny
pipeline of examples/make_sd.py; the whole flow: tests/flows/test_diffusers_flow.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.accuracy import compare, tolerances
from accelflow.core.errors import AccuracyError, MissingDependencyError, SpecError, UnsupportedFormatError
from accelflow.formats.diffusers_pipeline import ComponentSpec
from accelflow.tasks.benchmark import TimingPlan
from accelflow.tasks.build import BuiltCandidate
from accelflow.tasks.context import AccuracyCheck, ModelContext
from accelflow.tasks.pipeline import (
    benchmark_component,
    component_context,
    original,
    plan_components,
    select_component,
    verify_component,
)
from accelflow.tasks.report import candidates_of

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
IMAGE = tensor_info.parse(["image:float(1*3*32*32,2*3*64*64)"])


def _pipeline_folder(tmp_path, class_name: str) -> str:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "unet": ["diffusers", "UNet"]}))
    return str(folder)


def test_a_pipeline_class_accelflow_does_not_optimize_is_refused(tmp_path):
    folder = _pipeline_folder(tmp_path, "StableDiffusionXLPipeline")
    with pytest.raises(UnsupportedFormatError, match="'StableDiffusionXLPipeline'; accelflow optimizes "
                                                     "StableDiffusionPipeline"):
        plan_components(folder, IMAGE)


def test_without_diffusers_the_plan_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed: its import fails
    with pytest.raises(MissingDependencyError, match=r"run `bash scripts/install.sh diffusers`"):
        plan_components(_pipeline_folder(tmp_path, "StableDiffusionPipeline"), IMAGE)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs the diffusers extra")
def test_an_incomplete_pipeline_folder_is_refused_before_any_model_loads(tiny_sd, tmp_path):
    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_sd, folder)
    os.remove(folder / "vae" / "config.json")
    with pytest.raises(UnsupportedFormatError, match=r"vae/config.json is missing or not JSON .* incomplete"):
        plan_components(str(folder), IMAGE)


def test_the_networks_tensor_information_follows_the_image(tiny_sd):
    text, unet, vae = plan_components(tiny_sd, IMAGE)
    assert [c.name for c in (text, unet, vae)] == ["text_encoder", "unet", "vae_decoder"]
    assert text.lines == ["input_ids:int64(1*77,2*77)"] and text.int_ranges["input_ids"][0] == 0
    # the UNet runs twice per image (classifier-free guidance); tiny_sd's VAE scales by 2
    assert unet.lines[0] == "sample:float(2*4*16*16,4*4*32*32)" and unet.output_names == ["noise_pred"]
    assert vae.lines == ["latent:float(1*4*16*16,2*4*32*32)"] and vae.output_names == ["image"]
    with pytest.raises(SpecError, match="multiples of 4"):
        plan_components(tiny_sd, tensor_info.parse(["image:float(1*3*30*30)"]))


def test_a_network_is_a_model_of_its_own(tmp_path):
    pipeline_ctx = ModelContext(str(tmp_path / "sd"), "diffusers", IMAGE, str(tmp_path / "work"), threads=2)
    text = ComponentSpec("text_encoder", ["input_ids:int64(1*77,2*77)"], ["last_hidden_state"],
                         {"input_ids": (0, 1000)})
    ctx = component_context(pipeline_ctx, text)
    assert ctx.spec.lines() == ["input_ids:int64(1*77,2*77)"] and ctx.int_ranges == {"input_ids": (0, 1000)}
    assert ctx.work_dir == os.path.join(str(tmp_path / "work"), "text_encoder")
    assert (ctx.model_file, ctx.format, ctx.threads) == (pipeline_ctx.model_file, "diffusers", 2)
    assert pipeline_ctx.spec is IMAGE  # the pipeline's own context is unchanged


def test_a_network_is_exported_verified_and_timed_against_pytorch(vae_decoder):
    pool, ctx, component, built = vae_decoder
    assert ctx.onnx_path == os.path.join(ctx.work_dir, "onnx", "model.onnx") and os.path.isfile(ctx.onnx_path)
    assert ctx.io["input_names"] == ["latent"] and ctx.io["output_names"] == ["image"]
    accuracy = verify_component(ctx, component, [built], AccuracyCheck("lossless", draws=1), pool)[built.key]
    assert accuracy.passed and accuracy.draws == len(ctx.spec.shape_points())
    rows = benchmark_component(ctx, component, [built], TimingPlan(seconds=0.0, min_samples=3, warmup_seconds=0.0),
                               pool)[built.key]
    assert [r.shape_point for r in rows] == ["min", "max"]
    assert [r.shapes["latent"] for r in rows] == [[1, 4, 16, 16], [2, 4, 16, 16]]


def test_the_original_pipeline_is_loaded_once_per_task(vae_decoder, tiny_sd):
    pool = vae_decoder[0]
    assert original(pool, tiny_sd) is original(pool, tiny_sd)  # the export above loaded it already
    assert type(original(pool, tiny_sd)).__name__ == "StableDiffusionPipeline"


def test_a_networks_selection_names_the_network():
    ref = np.ones((1, 4), np.float32)
    failed = compare([[ref]], [[ref * 2]], ["noise_pred"], tolerances("fp16"))
    built = [BuiltCandidate("openvino", "2026.4", "f32", "/w/unet/candidates/openvino-f32", 1.0)]
    with pytest.raises(AccuracyError, match=r"^pipeline component unet: no candidate passed the accuracy gate:"):
        select_component("unet", candidates_of(built, {"openvino-f32": failed}, {}))
