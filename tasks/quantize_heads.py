"""Step 4a for a detector (int8 level): its RoI head graphs (formats/roi_graphs.py) quantized
too, calibrated on what they read while the float detector runs on the calibration images.

The feature graph runs in ONNX Runtime f32 and the framework's post-processing calls the head
graphs, each of which keeps every feed it is given: the FPN levels and that image's RoIs
(proposals for a first stage, the previous stage's boxes in a cascade, the detections for a
mask head). Those feeds calibrate each graph's QDQ version (engines/int8.py), which keeps the
graph's file name in a folder of its own, and rank its operations for the gate's fallback
alongside the feature graph's, named "<graph file>:<operation>".
"""

from __future__ import annotations

import os
import shutil

import numpy as np
from accelflow.engines import int8
from accelflow.formats import detections, format_named

SEPARATOR = ":"  # a head graph's operation is "<graph file>:<node name>"
CALIBRATION_IMAGES = 8  # each image's FPN levels are kept for every graph: tens of MB each


def head_graphs(io: dict) -> list[dict]:
    """A detector conversion's RoI head graph entries (io.source's `roi_heads`), or []."""
    return (io["source"].get("roi_heads") or []) if detections.is_detector(io) else []


def split_excluded(excluded: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the feature graph's operations, graph file -> its operations) of an excluded list."""
    own, heads = [], {}
    for name in excluded:
        graph, sep, node = name.partition(SEPARATOR)
        if sep and graph.endswith(".onnx"):
            heads.setdefault(graph, []).append(node)
        else:
            own.append(name)
    return own, heads


def recorded_feeds(ctx, images: list[list[np.ndarray]]) -> dict[str, list[dict]]:
    """Graph file -> the feeds each head graph was given while the float detector (feature graph
    in ONNX Runtime f32, the conversion's head graphs) ran on `images` (flat input arrays)."""
    from accelflow.core.modelio import ModelIO
    from accelflow.formats.onnx_model import OrtRunner

    fmt = format_named(detections.format_name(ctx.io))
    runner = OrtRunner(ctx.onnx_path, ModelIO.from_dict(ctx.io), ctx.threads)
    detector = detections.candidate(fmt, runner, ctx.io, ctx.threads, trusted=ctx.trust_model_code)
    sessions = detector.postprocess.head_graphs
    for session in sessions.values():
        session.recorded = []
    for arrays in images[::max(1, len(images) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]:  # every shape point
        detector.run(detector.prepare(arrays))
    files = {(g["kind"], g["stage"]): g["file"] for g in head_graphs(ctx.io)}
    return {files[key]: session.recorded for key, session in sessions.items() if session.recorded}


def quantize(ctx, feeds: dict[str, list[dict]], folder: str, excluded: dict[str, list[str]]) -> tuple[list[dict], int]:
    """Each head graph's QDQ version written to `folder` under its own file name; `excluded`
    (graph file -> operations) stay float, and so does a graph no calibration image reached (no
    detection for a mask head to read). (The graph entries, quantized ones marked `int8`: the
    label says so; how many operations were quantized.)"""
    os.makedirs(folder, exist_ok=True)
    entries, count = [], 0
    for graph in head_graphs(ctx.io):
        name = graph["file"]
        if name not in feeds:
            shutil.copyfile(_original(ctx, name), os.path.join(folder, name))
            entries.append(graph)
            continue
        # "cpu": the head graphs run in ONNX Runtime on the CPU whatever the machine type (uint8 activations)
        count += int8.quantize(_prepared(ctx, name), os.path.join(folder, name), feeds[name], "cpu",
                               excluded.get(name, []))
        entries.append(dict(graph, int8=True))
    return entries, count


def sensitivity(ctx, graphs: list[dict], feeds: dict[str, list[dict]], folder: str) -> list[tuple[str, float]]:
    """(graph file:operation, SQNR dB) of the quantized head graphs' operations (engines/int8.py)."""
    ranked = []
    for name in [g["file"] for g in graphs if g.get("int8")]:
        scores = int8.sensitivity(_prepared(ctx, name), os.path.join(folder, name), feeds[name], ctx.threads)
        ranked.extend((f"{name}{SEPARATOR}{node}", score) for node, score in scores)
    return ranked


def _original(ctx, name: str) -> str:
    source = ctx.io["source"]
    return os.path.join(detections.head_graphs_folder(source, source["config"]), name)


def _prepared(ctx, name: str) -> str:
    folder = os.path.join(ctx.work_dir, "int8-heads", os.path.splitext(name)[0])
    os.makedirs(folder, exist_ok=True)
    return int8.prepare(_original(ctx, name), folder)  # written once per task
