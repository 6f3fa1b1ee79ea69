"""tasks/pipeline_report.py: a pipeline task's report over its networks and its image check, and
the result folder that loads back as a pipeline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from accelflow.core.accuracy import compare, tolerances
from accelflow.engines.pipeline_result import CONFIG
from accelflow.engines.result import read_manifest
from accelflow.flows.request import OptimizeRequest
from accelflow.formats.diffusers_pipeline import ComponentSpec
from accelflow.reports.results import PipelinePoint, PipelineReport, ShapeBenchmark, Speedup
from accelflow.reports.stats import latency_stats
from accelflow.tasks.build import BuiltCandidate
from accelflow.tasks.convert import ConvertedModel
from accelflow.tasks.fetch import FetchedModel
from accelflow.tasks.pipeline_report import assemble, component_report, manifest_for, pipeline_folder
from accelflow.tasks.report import candidates_of, select

from tests.tasks.conftest import SD_IMAGE

REF = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)


def _row(label: str, ratio: float) -> ShapeBenchmark:
    return ShapeBenchmark(label, {"image": [1, 3, 32, 32]}, latency_stats([3.0] * 3), latency_stats([3.0 / ratio] * 3),
                          Speedup(ratio, ratio * 0.9, ratio * 1.1))


def _network(name: str, engine: str, version: str, precision: str, output: str):
    """One network's report, as the pipeline flow makes it: its candidate selected."""
    spec = ComponentSpec(name, [f"{name}_in:float(1*4)"], [output])
    key = f"{engine}-{precision}"
    accuracy = compare([[REF]], [[REF]], [output], tolerances("fp16"))
    built = BuiltCandidate(engine, version, precision, f"/w/{name}/{key}", 2.0)
    candidates = candidates_of([built], {key: accuracy}, {key: [_row("fixed", 1.5)]})
    best = select(candidates)
    return component_report(spec, ConvertedModel("/w/model.onnx", {}, 1.23456), candidates, best)


def _pipeline(*psnrs: float) -> PipelineReport:
    points = [PipelinePoint(label, {"image": [1, 3, 32, 32]}, db, 30.0, 0.01, db >= 30.0, _row(label, ratio))
              for label, db, ratio in zip(("min", "max"), psnrs, (2.0, 8.0))]
    return PipelineReport("StableDiffusionPipeline", "a prompt", 2, 7.5, 0, points)


REQUEST = OptimizeRequest(model="/models/sd", tensor_info=SD_IMAGE, output="/out", level="fp16", name="sd-fp16")
FETCHED = FetchedModel("sd", "local", "/models/sd", "/models/sd", "diffusers")


def test_the_report_joins_the_networks_and_judges_the_images():
    text = _network("text_encoder", "onnxruntime", "1.32.0", "f32", "last_hidden_state")
    unet = _network("unet", "openvino", "2026.4", "bf16", "noise_pred")
    vae = _network("vae_decoder", "openvino", "2026.4", "bf16", "image")
    report = assemble("sd-fp16", REQUEST, FETCHED, [text, unet, vae], _pipeline(35.0, 40.0), {"export": 1.0},
                      ["from the flow"])
    assert report.engine == "onnxruntime+openvino" and report.precision == "f32+bf16"
    assert report.engine_version == "onnxruntime 1.32.0+openvino 2026.4"
    assert report.speedup == pytest.approx(4.0)  # geometric mean of the image points' 2x and 8x
    assert list(report.baseline) == ["min", "max"] and report.candidates == []
    assert report.accuracy.passed and report.accuracy.reason == ""
    assert [o.output for o in report.accuracy.outputs] == ["text_encoder/last_hidden_state", "unet/noise_pred",
                                                          "vae_decoder/image"]
    assert report.accuracy.draws == 3 and report.build_seconds == pytest.approx(6.0)
    assert report.notes[0] == "from the flow"
    assert any(n.startswith("text_encoder: ONNX Runtime's offline-optimized graph") for n in report.notes)
    assert text.export_seconds == 1.235 and report.components == [text, unet, vae]
    assert report.settings["model_file"] == "/models/sd" and "submitted_at" not in report.settings


def test_one_engine_for_every_network_is_named_once():
    nets = [_network(n, "openvino", "2026.4", "f32", "out") for n in ("text_encoder", "unet", "vae_decoder")]
    report = assemble("sd", REQUEST, FETCHED, nets, _pipeline(35.0, 40.0), {}, [])
    assert (report.engine, report.engine_version, report.precision) == ("openvino", "2026.4", "f32")


def test_a_drifting_image_fails_the_task_saying_where():
    nets = [_network("text_encoder", "openvino", "2026.4", "f32", "out"),
            _network("unet", "openvino", "2026.4", "bf16", "noise_pred")]
    accuracy = assemble("sd", REQUEST, FETCHED, nets, _pipeline(25.04, 40.0), {}, []).accuracy
    assert not accuracy.passed and accuracy.reason == "image at min: PSNR 25.0 dB (required >= 30 dB)"
    assert len(accuracy.outputs) == 2  # the networks' own checks are kept beside it


def test_the_result_folder_holds_each_network_and_the_pipelines_own_files(vae_decoder, tiny_sd, tmp_path):
    pool, ctx, component, built = vae_decoder
    converted = ConvertedModel(ctx.onnx_path, ctx.io, 0.5)
    candidate_folder = built.folder
    folder, carried = pipeline_folder(pool, tiny_sd, str(tmp_path), [component], {"vae_decoder": built},
                                      {"vae_decoder": converted})
    assert folder == str(tmp_path / "pipeline") and sorted(carried) == ["scheduler", "tokenizer"]
    assert sorted(os.listdir(folder)) == ["model_index.json", "scheduler", "tokenizer", "vae_decoder"]
    assert not os.path.exists(candidate_folder)  # moved, not copied
    manifest = read_manifest(os.path.join(folder, "vae_decoder"))
    assert (manifest["component"], manifest["format"], manifest["engine"]) == (
        "vae_decoder", "diffusers-component", "onnxruntime")
    assert manifest["io"] == ctx.io and manifest["tensor_info"] == component.lines
    with open(os.path.join(folder, "vae_decoder", CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(tiny_sd, "vae", "config.json"), encoding="utf-8") as f:
        assert config["block_out_channels"] == json.load(f)["block_out_channels"]

    nets = [_network("vae_decoder", "onnxruntime", built.engine_version, "f32", "image")]
    report = assemble("sd", REQUEST, FETCHED, nets, _pipeline(35.0, 40.0), {}, [])
    result = manifest_for("sd", REQUEST, FETCHED, report, carried)
    assert result["pipeline_class"] == "StableDiffusionPipeline" and result["carried"] == carried
    assert result["components"] == {"vae_decoder": {"engine": "onnxruntime", "engine_version": built.engine_version,
                                                    "precision": "f32", "tensor_info": ["vae_decoder_in:float(1*4)"]}}
    assert result["load"].startswith("import accelflow; pipe = accelflow.load_pipeline(")
