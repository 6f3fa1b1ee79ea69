"""A whole Stable Diffusion pipeline through the optimize flow, on a real Prefect server.

The pipeline is tiny and randomly initialised (examples/make_sd.py: diffusers UNet and VAE,
a transformers CLIP text encoder, a CLIP tokenizer from a vocab.json/merges.txt written
there), so the flow runs in seconds; the checks are the product's: the result loads back as
a pipeline, makes the original's image, and the report says so with figures.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra: pip install -e .[diffusers]")

from accelflow.core.levels import FP16, LOSSLESS  # noqa: E402
from accelflow.flows.optimize import optimize  # noqa: E402
from accelflow.flows.request import OptimizeRequest  # noqa: E402
from accelflow.tasks.pipeline_e2e import psnr  # noqa: E402

import accelflow  # noqa: E402

NETWORKS = ["text_encoder", "unet", "vae_decoder"]
FAST = {"draws": 1, "bench_seconds": 0.2}


def _run(**fields):
    return optimize.with_options(flow_run_name=fields["name"])(request=OptimizeRequest(**{**FAST, **fields}))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("models") / "tiny-sd"), "tiny")


@pytest.fixture(scope="module")
def fp16_result(prefect_server, tiny_sd, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = _run(model=tiny_sd, tensor_info=["image:float(1*3*32*32)"], output=str(out), name="sd-fp16")
    return out, result, json.load(open(result["report_json"]))


def _image(pipe, prompt="a red apple on a table", steps=4, size=32, seed=7, **kwargs):
    import torch

    return pipe(prompt, num_inference_steps=steps, height=size, width=size, output_type="np",
                generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_the_result_loads_as_a_pipeline_that_makes_the_original_image(tiny_sd, fp16_result):
    from accelflow.formats.diffusers_pipeline import load
    from diffusers import StableDiffusionPipeline

    _, result, _ = fp16_result
    pipe = accelflow.load(result["result_folder"])
    assert isinstance(pipe, StableDiffusionPipeline)
    assert type(accelflow.load_pipeline(result["model_folder"])) is StableDiffusionPipeline
    original = load(tiny_sd)
    got, expected = _image(pipe), _image(original)  # another prompt, seed and step count than the flow's
    assert got.shape == expected.shape == (1, 32, 32, 3)
    assert expected.std() > 0.05  # a real picture to compare, not a flat one
    assert psnr(expected, got) >= FP16.min_psnr_db
    # Without classifier-free guidance the UNet gets half the batch it was built for.
    assert psnr(_image(original, guidance_scale=1.0), _image(pipe, guidance_scale=1.0)) >= FP16.min_psnr_db
    assert pipe("a cat", num_inference_steps=2, height=32, width=32).images[0].size == (32, 32)


def test_the_report_covers_each_network_and_the_whole_pipeline(fp16_result):
    _, result, report = fp16_result
    assert report["format"] == "diffusers" and report["level"] == "fp16"
    assert report["accuracy"]["passed"] and report["speedup"] > 0 and result["speedup"] == report["speedup"]
    assert [c["name"] for c in report["components"]] == NETWORKS
    for component in report["components"]:
        assert component["accuracy"]["passed"] and component["speedup"] > 0
        assert sum(c["selected"] for c in component["candidates"]) == 1
        assert len(component["candidates"]) >= 3  # onnxruntime f32, openvino f32 and reduced precisions
    pipeline = report["pipeline"]
    assert pipeline["steps"] == 20 and pipeline["pipeline_class"] == "StableDiffusionPipeline"
    (point,) = pipeline["points"]
    assert point["shapes"] == {"image": [1, 3, 32, 32]} and point["passed"]
    assert point["psnr_db"] >= point["min_psnr_db"] == FP16.min_psnr_db
    assert point["benchmark"]["baseline"]["p50"] > 0 and point["benchmark"]["optimized"]["p50"] > 0
    for side in ("baseline_seconds", "optimized_seconds"):
        assert set(point[side]) == {*NETWORKS, "other"} and point[side]["unet"] > 0
    assert set(report["baseline"]) == set(report["optimized"]) == {"fixed"}
    markdown = open(result["report_markdown"]).read()
    assert "Pipeline: same image" in markdown and "seconds per image, by network" in markdown
    assert "Candidates, per network" in open(result["report_html"]).read()


def test_the_result_folder_is_a_pipeline_folder_with_one_model_per_network(fp16_result):
    out, result, _ = fp16_result
    assert sorted(os.listdir(out)) == ["sd-fp16"]  # no staging or work folder left
    model = result["model_folder"]
    assert {"manifest.json", "model_index.json", "tokenizer", "scheduler", *NETWORKS} <= set(os.listdir(model))
    manifest = json.load(open(os.path.join(model, "manifest.json")))
    assert manifest["format"] == "diffusers" and sorted(manifest["carried"]) == ["scheduler", "tokenizer"]
    for name in NETWORKS:
        network = json.load(open(os.path.join(model, name, "manifest.json")))
        assert network["engine"] == manifest["components"][name]["engine"]


def test_lossless_with_a_dynamic_batch(prefect_server, tiny_sd, tmp_path):
    result = _run(model=tiny_sd, tensor_info=["image:float(1*3*32*32,2*3*32*32)"], output=str(tmp_path),
                  name="sd-lossless", level="lossless", steps=6, prompt="a blue cube", guidance=5.0)
    report = json.load(open(result["report_json"]))
    settings = {k: report["pipeline"][k] for k in ("steps", "prompt", "guidance_scale")}
    assert settings == {"steps": 6, "prompt": "a blue cube", "guidance_scale": 5.0}
    points = report["pipeline"]["points"]
    assert [p["shapes"]["image"][0] for p in points] == [1, 2]  # min and max (mid is min again)
    assert all(p["psnr_db"] >= LOSSLESS.min_psnr_db for p in points)
    assert {c["precision"] for c in report["components"]} == {"f32"}
    unet = next(c for c in report["components"] if c["name"] == "unet")
    assert unet["tensor_info"][0] == "sample:float(2*4*16*16,4*4*16*16)"
    images = _image(accelflow.load(result["result_folder"]), num_images_per_prompt=2)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


def test_a_drifting_image_falls_back_to_f32_for_the_reduced_precision_networks():
    from accelflow.flows.optimize_pipeline import _full_precision, _reselect
    from accelflow.formats.diffusers_pipeline import ComponentSpec
    from accelflow.reports.results import Accuracy, Candidate
    from accelflow.tasks.build import BuiltCandidate

    def candidates(*picks):  # (engine, precision, speed-up, passed)
        return [Candidate(e, "1", p, 1.0, Accuracy(ok, 1, []), speedup=s) for e, p, s, ok in picks]

    specs = [ComponentSpec(n, [], []) for n in ("unet", "vae_decoder")]
    found = {"unet": candidates(("openvino", "bf16", 2.0, True), ("openvino", "f32", 1.2, True),
                                ("onnxruntime", "f32", 1.4, True)),
             "vae_decoder": candidates(("onnxruntime", "f32", 1.1, True), ("openvino", "f32", 1.5, False))}
    built = {n: [BuiltCandidate(c.engine, "1", c.precision, f"/{n}/{c.engine}-{c.precision}", 1.0) for c in cs]
             for n, cs in found.items()}
    chosen = {"unet": built["unet"][0], "vae_decoder": built["vae_decoder"][0]}
    swaps = _full_precision(chosen, found, specs)
    assert {n: (c.engine, c.precision) for n, c in swaps.items()} == {"unet": ("onnxruntime", "f32")}
    _reselect(found["unet"], built["unet"], chosen, "unet", swaps["unet"])
    assert chosen["unet"].key == "onnxruntime-f32"
    assert [c.selected for c in found["unet"]] == [False, False, True]


def test_int8_builds_int8_candidates_for_every_network_and_keeps_the_image(prefect_server, tiny_sd, tmp_path):
    from accelflow.core.levels import INT8

    result = _run(model=tiny_sd, tensor_info=["image:float(1*3*32*32)"], output=str(tmp_path), name="sd-int8",
                  level="int8")
    report = json.load(open(result["report_json"]))
    for component in report["components"]:
        int8 = [c for c in component["candidates"] if c["precision"] == "int8"]
        assert int8 and all(not c["error"] for c in int8), component["name"]
        summary = component["int8"]
        assert summary["attempts"] and summary["calibration"].startswith("drawn"), component["name"]
        assert any(n.startswith(f"{component['name']}: INT8: ") for n in report["notes"])
    assert all(p["psnr_db"] >= INT8.min_psnr_db for p in report["pipeline"]["points"])


def test_a_network_whose_int8_fails_gets_the_fallback_with_operations_kept_in_float(prefect_server, tiny_sd,
                                                                                  tmp_path):
    """A cosine no INT8 graph reaches (float32 engines do): every network's INT8 fails, is
    rebuilt with its most sensitive operations kept in float, and a float candidate is kept."""
    result = _run(model=tiny_sd, tensor_info=["image:float(1*3*32*32)"], output=str(tmp_path), name="sd-int8-strict",
                  level="int8", min_cosine=0.99999)
    report = json.load(open(result["report_json"]))
    for component in report["components"]:
        attempts = component["int8"]["attempts"]
        assert not attempts[0]["passed"] and attempts[1]["kept_in_float"], component["name"]
        assert component["precision"] != "int8" or attempts[-1]["passed"], component["name"]
        if not any(a["passed"] for a in attempts):
            assert component["int8"]["outcome"].startswith("no INT8 candidate passed the gate"), component["name"]
