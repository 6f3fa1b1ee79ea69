"""End to end: the optimized pipeline makes the original's image, faster (docs/diffusers.md).

Both pipelines run in this process with the same prompt, seed, step count and thread count.
The image check compares the two images by PSNR (the first call of each, which also warms
them up); the timing then alternates the two, one image call each per round, until both have
MIN_ROUNDS calls and the benchmark time has passed. While they run, every network call is
clocked, so the report also says where each image's seconds go.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
from accelflow.core import tensor_info
from accelflow.formats import diffusers_pipeline
from accelflow.reports.results import PipelinePoint, ShapeBenchmark
from accelflow.reports.stats import latency_stats, speedup
from accelflow.tasks.pipeline import original
from accelflow.tasks.runners import RunnerPool

PROMPT = "a photograph of an astronaut riding a horse on the moon"
STEPS = 20
GUIDANCE = 7.5
SEED = 0
# The lowest image PSNR per level is Level.min_psnr_db (core/levels.py); figures in docs/diffusers.md.
PSNR_CAP_DB = 100.0  # identical images: an infinite PSNR, reported as this
MIN_ROUNDS, MAX_ROUNDS = 5, 50
NETWORKS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class Settings:
    """What every end-to-end call uses; recorded in the report."""

    prompt: str = PROMPT
    steps: int = STEPS
    guidance_scale: float = GUIDANCE
    seed: int = SEED


@dataclass
class _Call:
    ms: float
    images: np.ndarray
    seconds: dict[str, float]  # per network, this call


@dataclass(frozen=True)
class Choice:
    """The networks chosen for the optimized pipeline: each one's built candidate, its converted
    ModelContext, and the UNet's tensor information."""

    chosen: dict
    contexts: dict
    unet_lines: list[str]

    def key(self) -> tuple:
        return ("optimized pipeline", *sorted((name, b.folder) for name, b in self.chosen.items()))


def optimized_pipeline(pool: RunnerPool, path: str, choice):
    """The original pipeline class around the chosen candidates, loaded once per choice (or
    `choice` itself when it is a pipeline already: the original, checked against itself)."""
    if not isinstance(choice, Choice):
        return choice
    return pool.load(choice.key(), lambda: _assembled(pool, path, choice.chosen, choice.contexts, choice.unet_lines))


def _assembled(pool: RunnerPool, path: str, chosen: dict, contexts: dict, unet_lines: list[str]):
    """A new pipeline of the original's class around the candidates, with fresh scheduler state."""
    from accelflow.engines.pipeline_result import assemble, networks_from, unet_batches

    base = original(pool, path)
    loaded = {name: pool.candidate(chosen[name], contexts[name].io, contexts[name].threads) for name in NETWORKS}
    sources = {"text_encoder": base.text_encoder, "unet": base.unet, "vae_decoder": base.vae}
    configs = {name: diffusers_pipeline.config_dict(net) for name, net in sources.items()}
    others = {name: part for name, part in base.components.items()
              if name not in ("text_encoder", "unet", "vae") and part is not None}
    others["scheduler"] = type(base.scheduler).from_config(base.scheduler.config)
    networks = networks_from(loaded, configs, unet_batches(unet_lines))
    return assemble(type(base).__name__, networks, others, bool(base.config.get("requires_safety_checker")))


def image_points(spec: tensor_info.TensorInfo) -> list[tuple[str, int, int, int]]:
    """(label, N, H, W) at each shape point of the image's tensor information."""
    leaf = spec.leaves[0]
    return [(p.label, p.shapes[leaf.name][0], p.shapes[leaf.name][2], p.shapes[leaf.name][3])
            for p in spec.shape_points()]


def check_images(pool: RunnerPool, path: str, choice, spec: tensor_info.TensorInfo, min_psnr: float,
                 settings: Settings) -> list[PipelinePoint]:
    """One image call of each pipeline per shape point, compared by PSNR."""
    base, optimized, points = original(pool, path), optimized_pipeline(pool, path, choice), []
    for label, n, h, w in image_points(spec):
        ref = _call(base, False, n, h, w, settings).images
        got = _call(optimized, True, n, h, w, settings).images
        db, max_abs = psnr(ref, got), float(np.abs(ref - got).max())
        points.append(PipelinePoint(label, {"image": [n, 3, h, w]}, db, min_psnr, max_abs, db >= min_psnr))
    return points


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images with values in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(1.0 / mse))


def time_pipelines(pool: RunnerPool, path: str, choice, points: list[PipelinePoint], seconds: float,
                   settings: Settings) -> list[PipelinePoint]:
    """The points with their end-to-end benchmark and per-network seconds per image filled in."""
    base, optimized = original(pool, path), optimized_pipeline(pool, path, choice)
    for point in points:
        n, _, h, w = point.shapes["image"]
        calls: dict[str, list[_Call]] = {"baseline": [], "optimized": []}
        start, turn = time.perf_counter(), 0
        while not _done(calls, time.perf_counter() - start, seconds):
            order = ("baseline", "optimized") if turn % 2 == 0 else ("optimized", "baseline")
            for side in order:
                calls[side].append(_call(base if side == "baseline" else optimized, side == "optimized", n, h, w, settings))
            turn += 1
        point.benchmark = _benchmark(point, calls, n)
        point.baseline_seconds = _per_image(calls["baseline"], n)
        point.optimized_seconds = _per_image(calls["optimized"], n)
    return points


def _done(calls: dict, elapsed: float, seconds: float) -> bool:
    count = len(calls["baseline"])
    return count >= MAX_ROUNDS or (count >= MIN_ROUNDS and elapsed >= seconds)


def _benchmark(point: PipelinePoint, calls: dict, n: int) -> ShapeBenchmark:
    base, opt = [c.ms for c in calls["baseline"]], [c.ms for c in calls["optimized"]]
    return ShapeBenchmark(point.shape_point, point.shapes, latency_stats(base, n), latency_stats(opt, n),
                          speedup([[ms] for ms in base], [[ms] for ms in opt]))


def _per_image(calls: list[_Call], n: int) -> dict[str, float]:
    """Median seconds per image spent in each network, and in everything else ("other")."""
    rows = [dict(c.seconds, other=c.ms / 1000.0 - sum(c.seconds.values())) for c in calls]
    return {name: float(np.median([r[name] for r in rows])) / n for name in rows[0]}


def _call(pipe, optimized: bool, n: int, h: int, w: int, settings: Settings) -> _Call:
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    with _clocked(pipe, optimized) as seconds:
        start = time.perf_counter()
        images = pipe(settings.prompt, num_images_per_prompt=n, num_inference_steps=settings.steps,
                      height=h, width=w, guidance_scale=settings.guidance_scale, generator=generator,
                      output_type="np").images
        ms = (time.perf_counter() - start) * 1000.0
    return _Call(ms, np.asarray(images), dict(seconds))


@contextlib.contextmanager
def _clocked(pipe, optimized: bool):
    """Add each network call's wall time to a per-network total while the block runs.

    The original networks are torch modules (the VAE is called through `decode`); the
    optimized ones route both through `forward`. Either way an instance attribute shadows
    the method for the block's duration and is then removed or put back.
    """
    totals = dict.fromkeys(NETWORKS, 0.0)
    targets = {"text_encoder": (pipe.text_encoder, "forward"), "unet": (pipe.unet, "forward"),
               "vae_decoder": (pipe.vae, "forward" if optimized else "decode")}
    saved = []
    for name, (obj, attr) in targets.items():
        own = vars(obj).get(attr)
        saved.append((obj, attr, own))
        setattr(obj, attr, _timed(getattr(obj, attr), totals, name))
    try:
        yield totals
    finally:
        for obj, attr, own in saved:
            if own is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, own)


def _timed(fn, totals: dict, name: str):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return timed
