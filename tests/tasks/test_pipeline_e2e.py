"""tasks/pipeline_e2e.py: the whole pipeline's image check (PSNR against the original's image)
and its end-to-end timing, on the tiny pipeline of examples/make_sd.py. The optimized pipeline
itself is assembled and checked in tests/flows/test_diffusers_flow.py."""

from __future__ import annotations

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.tasks.pipeline import original
from accelflow.tasks.pipeline_e2e import PSNR_CAP_DB, Settings, check_images, image_points, psnr, time_pipelines
from accelflow.tasks.runners import RunnerPool

from tests.tasks.conftest import SD_IMAGE

FAST = Settings(steps=2)


def test_psnr_of_images_in_zero_to_one():
    image = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    assert psnr(image, image.copy()) == PSNR_CAP_DB == 100.0  # identical: capped, not infinite
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 1e-7)) == PSNR_CAP_DB  # 140 dB, capped
    assert psnr(np.zeros(4, np.uint8), np.ones(4, np.uint8)) == pytest.approx(0.0)  # no uint8 wrap-around


def test_image_points_are_the_images_shape_points():
    spec = tensor_info.parse(["image:float(1*3*32*32,4*3*64*96)"])
    assert image_points(spec) == [("min", 1, 32, 32), ("mid", 2, 48, 64), ("max", 4, 64, 96)]
    assert image_points(tensor_info.parse(["image:float(2*3*32*48)"])) == [("fixed", 2, 32, 48)]


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    with RunnerPool() as pool:
        yield pool, tiny_sd, original(pool, tiny_sd)


def test_the_image_check_compares_each_shape_point(pipe):
    pool, path, base = pipe
    spec = tensor_info.parse(SD_IMAGE)
    points = check_images(pool, path, base, spec, 30.0, FAST)  # the original against itself
    assert [(p.shape_point, p.shapes["image"]) for p in points] == [("min", [1, 3, 32, 32]), ("max", [2, 3, 32, 32])]
    assert all(p.psnr_db == PSNR_CAP_DB and p.max_abs_diff == 0.0 and p.passed for p in points)
    stricter = check_images(pool, path, base, spec, PSNR_CAP_DB + 1, FAST)
    assert not any(p.passed for p in stricter) and stricter[0].min_psnr_db == PSNR_CAP_DB + 1


def test_end_to_end_timing_fills_each_point_and_leaves_the_pipeline_as_it_was(pipe):
    pool, path, base = pipe
    points = check_images(pool, path, base, tensor_info.parse(["image:float(1*3*32*32)"]), 30.0, FAST)
    time_pipelines(pool, path, base, points, 0.0, FAST)
    (point,) = points
    bench = point.benchmark
    assert bench.shape_point == "fixed" and bench.baseline.iterations == bench.optimized.iterations >= 5
    assert bench.speedup.ci_low <= bench.speedup.ratio <= bench.speedup.ci_high
    assert set(point.baseline_seconds) == {"text_encoder", "unet", "vae_decoder", "other"}
    assert point.baseline_seconds["unet"] > 0 and point.baseline_seconds["vae_decoder"] > 0
    # the clocks were taken off again: no instance attribute shadows a network's methods
    assert "forward" not in vars(base.unet) and "forward" not in vars(base.text_encoder)
    assert "decode" not in vars(base.vae) and "forward" not in vars(base.vae)
