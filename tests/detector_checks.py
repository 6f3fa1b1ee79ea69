"""The check both detector frameworks' tests make: exported features in ONNX Runtime plus the
framework's heads give the original's detections (formats/detections.py)."""

from __future__ import annotations

from accelflow.core.runner import run_arrays
from accelflow.formats import detections, onnx_model


def features_plus_heads_match(fmt, config: str, spec, tmp_path, example) -> tuple[list[dict], object]:
    """(the original's per-image detections on the test images, the lossless accuracy)."""
    onnx_path, io = fmt.to_onnx(config, spec, str(tmp_path), [example])
    base = fmt.baseline_runner(config, spec, io, 2)
    # the conversion names its own config/checkpoint copies relative to the ONNX model's folder
    located = detections.located(io.to_dict(), str(tmp_path))
    optimized = detections.candidate(fmt, onnx_model.OrtRunner(onnx_path, io, 2), located, 2)
    structure = io.source["detections_structure"]
    refs, gots = [], []
    for _, arrays in detections.image_draws(spec, 1):
        refs.append(run_arrays(base, arrays))
        gots.append(run_arrays(optimized, arrays))
    found = [detections.per_image(r, structure)[0] for r in refs]
    assert all(len(f["scores"]) > 0 for f in found), "the test detector finds nothing: nothing was compared"
    accuracy = detections.compare(refs, gots, structure, detections.tolerances("lossless"), io.source["score_thr"],
                                  io.source["max_detections"])
    assert [o.output for o in accuracy.outputs] == ["detections", "masks"][:1 + ("masks" in found[0])]
    return found, accuracy


def conversion_cache_holds_its_own_copies(fmt, config: str, spec, tmp_path, monkeypatch, weights_key: str) -> None:
    """Issue 17: a cache entry never points into a model's folder. Converted from folder A, A
    deleted, then from B with the same files: a hit, whose config and checkpoint are the entry's
    own copies, and the detector runs from them as the original; B with another checkpoint: no
    hit, and the conversion holds B's checkpoint."""
    import filecmp
    import os
    import shutil

    import torch
    from accelflow.core.modelio import ModelIO
    from accelflow.tasks.context import ModelContext
    from accelflow.tasks.convert import convert_to_onnx

    monkeypatch.setenv("ACCELFLOW_CACHE", "on")
    monkeypatch.setenv("ACCELFLOW_CACHE_DIR", str(tmp_path / "cache"))
    name = os.path.basename(config)

    def convert(folder):
        work = os.path.join(tmp_path, "work", os.path.basename(folder))
        return convert_to_onnx(ModelContext(os.path.join(folder, name), fmt.NAME, spec, work, threads=2))

    folder_a = shutil.copytree(os.path.dirname(config), tmp_path / "a")
    assert not convert(folder_a).cached
    shutil.rmtree(folder_a)  # a fetched model's scratch folder, gone with its task
    folder_b = shutil.copytree(os.path.dirname(config), tmp_path / "b")
    hit = convert(folder_b)
    entry = os.path.dirname(hit.onnx_path)
    source = hit.io["source"]
    assert hit.cached and entry.startswith(str(tmp_path / "cache"))
    assert os.path.dirname(source["config"]) == entry and os.path.dirname(source["checkpoint"]) == entry
    assert filecmp.cmp(source["checkpoint"], fmt.checkpoint_for(os.path.join(folder_b, name)), shallow=False)
    optimized = detections.candidate(fmt, onnx_model.OrtRunner(hit.onnx_path, ModelIO.from_dict(hit.io), 2), hit.io, 2)
    original = fmt.baseline_runner(os.path.join(folder_b, name), spec, None, 2)
    _, arrays = detections.image_draws(spec, 1)[0]
    accuracy = detections.compare([run_arrays(original, arrays)], [run_arrays(optimized, arrays)],
                                  source["detections_structure"], detections.tolerances("lossless"),
                                  source["score_thr"], source["max_detections"])
    assert accuracy.passed, accuracy.reason

    folder_c = shutil.copytree(folder_b, tmp_path / "c")  # the same config, other weights
    checkpoint_c = fmt.checkpoint_for(os.path.join(folder_c, name))
    state = torch.load(checkpoint_c, weights_only=True)
    first = next(k for k, v in state[weights_key].items() if v.is_floating_point())
    state[weights_key][first] = state[weights_key][first] + 0.5
    torch.save(state, checkpoint_c)
    miss = convert(folder_c)
    assert not miss.cached and os.path.dirname(miss.onnx_path) != entry
    assert filecmp.cmp(miss.io["source"]["checkpoint"], checkpoint_c, shallow=False)
    assert not filecmp.cmp(miss.io["source"]["checkpoint"], source["checkpoint"], shallow=False)


def packaged_result_runs_its_head_graphs(fmt, onnx_path: str, io, spec, tmp_path) -> None:
    """detections.package copies the RoI head graphs beside the result's config; the candidate
    built from the result folder runs them (its label says so) and gives the conversion's
    detections exactly."""
    import os

    located = detections.located(io.to_dict(), os.path.dirname(onnx_path))
    model_dir = str(tmp_path / "model")
    packaged = detections.package(fmt, model_dir, located)
    for graph in io.source["roi_heads"]:
        assert os.path.isfile(os.path.join(model_dir, detections.RESULT_DIR, graph["file"]))
    runner = onnx_model.OrtRunner(onnx_path, io, 2)
    from_result = detections.candidate(fmt, runner, packaged, 2, folder=model_dir)
    in_task = detections.candidate(fmt, runner, located, 2)
    assert "RoI heads (onnxruntime)" in from_result.label
    _, arrays = detections.image_draws(spec, 1)[0]
    accuracy = detections.compare([run_arrays(in_task, arrays)], [run_arrays(from_result, arrays)],
                                  io.source["detections_structure"], detections.tolerances("lossless"))
    assert accuracy.passed and accuracy.outputs[0].max_abs_diff == 0.0, accuracy.reason


def random_rois(h: int, w: int, count: int, small_only: bool = False):
    """Random boxes of many sizes (or only small ones: the coarser levels get no RoI)."""
    import torch

    g = torch.Generator().manual_seed(count)
    top = 40.0 if small_only else float(min(h, w))
    size = 4 + torch.rand(count, 2, generator=g) * (top - 4)
    x1 = torch.rand(count, generator=g) * (w - 4)
    y1 = torch.rand(count, generator=g) * (h - 4)
    boxes = torch.stack([x1, y1, (x1 + size[:, 0]).clamp(max=w), (y1 + size[:, 1]).clamp(max=h)], 1)
    return torch.cat([torch.zeros(count, 1), boxes], 1)


def int8_head_graphs_follow_the_float_ones(fmt, onnx_path: str, io, spec, tmp_path) -> None:
    """tasks/quantize_heads.py: each head graph records what it reads while the float detector
    runs on calibration images (a cascade's later stages read the earlier ones' boxes); each
    graph's INT8 version follows its float one on those feeds; its operations are ranked as
    "<graph file>:<operation>"; a result packaged from the INT8 heads carries and runs them."""
    import filecmp
    import os

    import numpy as np
    import onnx
    import onnxruntime as ort
    import pytest
    from accelflow.core.errors import EngineError
    from accelflow.tasks import quantize_heads
    from accelflow.tasks.context import ModelContext

    located = detections.located(io.to_dict(), os.path.dirname(onnx_path))
    ctx = ModelContext(located["source"]["config"], fmt.NAME, spec, str(tmp_path / "work"), 2, onnx_path=onnx_path,
                       io=located)
    feeds = quantize_heads.recorded_feeds(ctx, [arrays for _, arrays in detections.image_draws(spec, 1, seed=3)])
    graphs = io.source["roi_heads"]
    assert sorted(feeds) == sorted(g["file"] for g in graphs) and all(feeds.values())
    stages = sorted(g["file"] for g in graphs if g["kind"] == "bbox")
    for earlier, later in zip(stages, stages[1:]):
        assert not np.array_equal(feeds[earlier][0]["rois"], feeds[later][0]["rois"])
    folder = str(tmp_path / "int8-heads")
    entries, count = quantize_heads.quantize(ctx, feeds, folder, {})
    assert all(e.get("int8") for e in entries) and count >= len(entries)
    for graph in graphs:
        original, quantized = (os.path.join(f, graph["file"]) for f in (os.path.dirname(onnx_path), folder))
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(quantized).graph.node)
        sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (original, quantized)]
        for feed in feeds[graph["file"]]:
            for want, got in zip(*(s.run(None, feed) for s in sessions)):
                want, got = want.ravel().astype(np.float64), got.ravel().astype(np.float64)
                cosine = want @ got / (np.linalg.norm(want) * np.linalg.norm(got))
                assert cosine >= 0.99, (graph["file"], cosine)
    ranked = quantize_heads.sensitivity(ctx, entries, feeds, folder)
    assert {name.partition(":")[0] for name, _ in ranked} == {g["file"] for g in graphs}

    int8_io = detections.with_head_graphs(located, entries, folder)
    model_dir = str(tmp_path / "model")
    packaged = detections.package(fmt, model_dir, int8_io)
    assert detections.HEAD_GRAPHS_DIR not in packaged["source"]
    for graph in graphs:
        assert filecmp.cmp(os.path.join(model_dir, detections.RESULT_DIR, graph["file"]),
                           os.path.join(folder, graph["file"]), shallow=False)
    runner = onnx_model.OrtRunner(onnx_path, io, 2)
    from_result = detections.candidate(fmt, runner, packaged, 2, folder=model_dir)
    assert "RoI heads (onnxruntime int8)" in from_result.label
    _, arrays = detections.image_draws(spec, 1)[0]
    accuracy = detections.compare([run_arrays(detections.candidate(fmt, runner, int8_io, 2), arrays)],
                                  [run_arrays(from_result, arrays)], io.source["detections_structure"],
                                  detections.tolerances("lossless"))
    assert accuracy.passed and accuracy.outputs[0].max_abs_diff == 0.0, accuracy.reason
    elsewhere = dict(packaged, source=dict(packaged["source"], **{detections.HEAD_GRAPHS_DIR: folder}))
    with pytest.raises(EngineError, match="head graphs folder"):
        detections.candidate(fmt, runner, elsewhere, 2, folder=model_dir)
