"""What the step tests share: the tiny ONNX CNN (tests/modelzoo.py) as a task's ModelContext."""

from __future__ import annotations

import os

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.tasks.context import ModelContext
from accelflow.tasks.convert import convert_to_onnx

from tests import modelzoo

CNN_INFO = ["image:float(1*3*16*16,2*3*16*16)"]  # tiny_cnn_onnx's input, with a dynamic batch


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory) -> str:
    """The ONNX CNN, exported once per session; tests that change it work on a copy."""
    return modelzoo.tiny_cnn_onnx(str(tmp_path_factory.mktemp("cnn-onnx")))


@pytest.fixture
def onnx_ctx(cnn_onnx, tmp_path) -> ModelContext:
    """The context the flow makes for the ONNX CNN, after its (in-place) conversion."""
    ctx = ModelContext(cnn_onnx, "onnx", tensor_info.parse(CNN_INFO), os.path.join(tmp_path, "work"), threads=1)
    return ctx.converted(convert_to_onnx(ctx))


def images(batch: int, seed: int = 0) -> list[np.ndarray]:
    return [np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)]


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> str:
    """A few-kilobyte Stable Diffusion pipeline with random weights (examples/make_sd.py)."""
    pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra: "
                                            "pip install -e .[diffusers]")
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("models") / "tiny-sd"), "tiny")


SD_IMAGE = ["image:float(1*3*32*32,2*3*32*32)"]  # tiny_sd's images: one or two per call


@pytest.fixture
def vae_decoder(tiny_sd, tmp_path):
    """The tiny pipeline's VAE decoder through the pipeline steps: (pool, its converted context,
    its ComponentSpec, its ONNX Runtime f32 candidate)."""
    from accelflow.tasks import pipeline
    from accelflow.tasks.build import build_candidate
    from accelflow.tasks.runners import RunnerPool

    spec = tensor_info.parse(SD_IMAGE)
    pipeline_ctx = ModelContext(tiny_sd, "diffusers", spec, str(tmp_path / "work"), threads=1)
    component = next(c for c in pipeline.plan_components(tiny_sd, spec) if c.name == "vae_decoder")
    with RunnerPool() as pool:
        ctx = pipeline.component_context(pipeline_ctx, component)
        ctx = ctx.converted(pipeline.export_component(ctx, component, pool))
        built = build_candidate(ctx, "onnxruntime", "f32", pool)
        assert not built.error, built.error
        yield pool, ctx, component, built
