"""What MMDetection and Detectron2 detectors share: their detections, and judging them.

A detector's accuracy is judged on its detections, not on raw tensors: per image the
original's and the optimized model's detections are matched one to one (same label, IoU at
least `min_iou`, greedily in descending score order), and three figures are kept, worst case
over all accuracy draws:

    matched share  2 * matched / (original count + optimized count)   (1.0 when both are empty)
    score diff     max |score_original - score_optimized| over matched pairs
    box diff       max |coordinate difference| over matched pairs, in pixels
    mask IoU       min IoU of the two masks of a matched pair (models with a mask head)

A detection whose score lies within `score_margin` of the detector's own score threshold, or
of the other side's lowest score where that side was cut at the detector's maximum number of
detections, may appear on one side only (near-ties at the cut, or a precision change moving
it across the threshold); such detections are left out of the share. Thresholds per level are in core/levels.py (docs/detectors.md).

The output of a detector, for every framework, is one dict per image: `bboxes` (N, 4) float
x1 y1 x2 y2 in input pixels, `scores` (N,), `labels` (N,) int64, and `masks` (N, H, W) bool
where the model has a mask head. Flat order: image by image, keys in that order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings

import numpy as np
from accelflow.core.accuracy import Accuracy, OutputAccuracy
from accelflow.core.levels import gate_named

KEYS = ("bboxes", "scores", "labels", "masks")

def tolerances(gate: str, overrides: dict | None = None) -> dict[str, float]:
    merged = dict(gate_named(gate).detections)
    merged.update({k: float(v) for k, v in (overrides or {}).items() if v is not None and k in merged})
    return merged


def output_structure(images: int, masks: bool) -> dict:
    """The ModelIO-style structure of `images` per-image detection dicts."""
    keys = KEYS if masks else KEYS[:3]
    items, index = [], 0
    for _ in range(images):
        entry = {}
        for key in keys:
            entry[key] = {"kind": "tensor", "index": index}
            index += 1
        items.append({"kind": "dict", "items": entry})
    return {"kind": "list", "items": items}


def flat(per_image: list[dict]) -> list[np.ndarray]:
    """Per-image detection dicts -> the flat list of arrays (image by image, KEYS order)."""
    arrays = []
    for det in per_image:
        arrays.extend(np.asarray(det[k]) for k in KEYS if k in det)
    return arrays


def per_image(arrays: list[np.ndarray], structure: dict) -> list[dict]:
    from accelflow.core.modelio import rebuild

    return rebuild(structure, list(arrays))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64).reshape(-1, 4), b.astype(np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(ref: dict, got: dict, min_iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (ref index, got index): same label, IoU >= min_iou, by score."""
    ious = iou_matrix(ref["bboxes"], got["bboxes"])
    if ious.size:
        ious[np.asarray(ref["labels"]).reshape(-1, 1) != np.asarray(got["labels"]).reshape(1, -1)] = 0.0
    pairs, taken = [], set()
    for i in np.argsort(-np.asarray(ref["scores"], dtype=np.float64), kind="stable"):
        if not ious.shape[1]:
            break
        row = ious[i].copy()
        row[list(taken)] = -1.0
        j = int(np.argmax(row))
        if row[j] >= min_iou:
            pairs.append((int(i), j))
            taken.add(j)
    return pairs


def _border(other_scores: np.ndarray, score_floor: float, max_detections: int | None) -> float:
    """The score at or below which a detection may be missing on the other side: the detector's
    threshold, or the other side's lowest score where it was cut at max_detections."""
    if max_detections and len(other_scores) >= max_detections:
        return max(score_floor, float(other_scores.min()))
    return score_floor


def compare_image(ref: dict, got: dict, tol: dict, score_floor: float,
                  max_detections: int | None = None) -> dict[str, float]:
    """Counts and worst differences for one image's detections."""
    pairs = match(ref, got, tol["min_iou"])
    ri = {i for i, _ in pairs}
    gi = {j for _, j in pairs}
    ref_scores, got_scores = np.asarray(ref["scores"]), np.asarray(got["scores"])
    ref_border = _border(got_scores, score_floor, max_detections) + tol["score_margin"]
    got_border = _border(ref_scores, score_floor, max_detections) + tol["score_margin"]
    lone = sum(1 for i in range(len(ref_scores)) if i not in ri and ref_scores[i] > ref_border)
    lone += sum(1 for j in range(len(got_scores)) if j not in gi and got_scores[j] > got_border)
    score_diff = max((abs(float(ref_scores[i]) - float(got_scores[j])) for i, j in pairs), default=0.0)
    box_diff = max((float(np.abs(np.asarray(ref["bboxes"][i], np.float64) - np.asarray(got["bboxes"][j], np.float64)).max())
                    for i, j in pairs), default=0.0)
    masks = "masks" in ref and "masks" in got
    mask_iou = min((_mask_iou(ref["masks"][i], got["masks"][j]) for i, j in pairs), default=1.0) if masks else 1.0
    return {"matched": 2 * len(pairs), "counted": 2 * len(pairs) + lone, "score_diff": score_diff,
            "box_diff": box_diff, "scale": float(np.abs(np.asarray(ref["bboxes"])).max(initial=0.0)),
            "masks": masks, "mask_iou": mask_iou}


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def compare(reference: list[list[np.ndarray]], optimized: list[list[np.ndarray]], structure: dict,
            tol: dict[str, float], score_floor: float = 0.0, max_detections: int | None = None) -> Accuracy:
    """Detections of every draw matched; one OutputAccuracy, named "detections", for them all
    (and one named "masks", the worst mask IoU in cosine_similarity, for a mask head).

    The report's generic fields carry the detection figures: max_abs_diff = box diff (px),
    max_rel_diff = score diff, cosine_similarity = matched share, mismatch_share = 1 - share.
    """
    figures = [compare_image(r, g, tol, score_floor, max_detections)
               for ref_arrays, got_arrays in zip(reference, optimized)
               for r, g in zip(per_image(ref_arrays, structure), per_image(got_arrays, structure))]
    matched = sum(f["matched"] for f in figures)
    counted = sum(f["counted"] for f in figures)
    share = matched / counted if counted else 1.0
    score_diff = max((f["score_diff"] for f in figures), default=0.0)
    box_diff = max((f["box_diff"] for f in figures), default=0.0)
    scale = max((f["scale"] for f in figures), default=0.0)
    reasons = []
    if share < tol["min_matched"]:
        reasons.append(f"detections: {share:.1%} matched (required >= {tol['min_matched']:.0%})")
    if score_diff > tol["max_score_diff"]:
        reasons.append(f"detections: score diff {score_diff:.3g} (allowed {tol['max_score_diff']:.3g})")
    if box_diff > tol["max_box_diff"]:
        reasons.append(f"detections: box diff {box_diff:.3g} px (allowed {tol['max_box_diff']:.3g})")
    outputs = [OutputAccuracy("detections", box_diff, score_diff, share, scale, dict(tol), not reasons, 1.0 - share)]
    if any(f["masks"] for f in figures):
        outputs.append(_masks_accuracy(min(f["mask_iou"] for f in figures), tol, reasons))
    return Accuracy(passed=not reasons, draws=len(reference), outputs=outputs, reason="; ".join(reasons))


def _masks_accuracy(mask_iou: float, tol: dict, reasons: list[str]) -> OutputAccuracy:
    """The masks' figure in the generic fields: cosine_similarity = worst mask IoU."""
    passed = mask_iou >= tol["min_mask_iou"]
    if not passed:
        reasons.append(f"masks: IoU {mask_iou:.3f} for a matched detection (required >= {tol['min_mask_iou']})")
    return OutputAccuracy("masks", 1.0 - mask_iou, 0.0, mask_iou, 1.0, dict(tol), passed, 1.0 - mask_iou)


class DetectionCandidate:
    """An engine's runner followed by the framework's post-processing: the optimized detector.

    The timed `run` is the whole inference (engine call + post-processing), as the baseline's.
    """

    def __init__(self, engine_runner, postprocess, label_suffix: str):
        self.engine = engine_runner
        self.postprocess = postprocess  # (raw engine outputs list, input arrays) -> per-image dicts
        self.label = f"{engine_runner.label} + {label_suffix}"

    def prepare(self, arrays):
        return self.engine.prepare(arrays), [np.asarray(a) for a in arrays]

    def run(self, feed):
        engine_feed, arrays = feed
        return self.postprocess(self.engine.outputs(self.engine.run(engine_feed)), arrays)

    def outputs(self, raw) -> list[np.ndarray]:
        return flat(raw)


# ------------------------------------------------------------ detectors in the flow and in results

RESULT_DIR = "detector"  # in a result's model folder: the config and checkpoint the heads need


def is_detector(io: dict | None) -> bool:
    """Whether a conversion's io (ModelIO.to_dict()) is a detector's backbone features."""
    return bool(((io or {}).get("source") or {}).get("detector"))


def format_name(io: dict) -> str:
    """The detector format (formats/mmdet_model.py, formats/detectron2_model.py) of a conversion."""
    return io["source"]["detector"]


def candidate(fmt, engine_runner, io: dict, threads: int, folder: str | None = None,
              postprocessors: dict | None = None, trusted: bool = False) -> DetectionCandidate:
    """The engine's runner followed by the framework's heads, box decoding and NMS.

    `fmt` is the detector's format module. The config and checkpoint are io.source's: absolute
    paths during a task (the conversion's own copies, see `own_copies`), paths relative to the
    result's model folder `folder` once packaged. A result's config is checked like a model's
    before it is read (`trusted`: accelflow.load(..., trust_model_code=True)).
    `postprocessors` ((config path, head graphs folder) -> heads) lets candidates of one task
    share the loaded heads.
    """
    import torch

    config = io["source"]["config"] if folder is None else os.path.join(folder, io["source"]["config"])
    if folder is not None:
        _inside(config, folder)
        check_result_config(fmt, config, trusted)
        _no_head_graphs_dir(io, folder)
    torch.set_num_threads(threads)
    postprocessors = {} if postprocessors is None else postprocessors
    key = (config, io["source"].get(HEAD_GRAPHS_DIR))  # an INT8 candidate's heads are other graphs
    if key not in postprocessors:
        postprocessors[key] = fmt.postprocessor(config, io, trusted=trusted)
    postprocess = postprocessors[key]
    label = getattr(postprocess, "label", f"{fmt.NAME} heads/NMS (torch)")  # what runs where
    return DetectionCandidate(engine_runner, postprocess, label)


def _inside(path: str, folder: str) -> None:
    from accelflow.core.errors import EngineError

    real, home = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, home]) != home:
        raise EngineError(f"{folder}: the manifest's detector config {path} is outside the result folder.")


def _no_head_graphs_dir(io: dict, folder: str) -> None:
    from accelflow.core.errors import EngineError

    if io["source"].get(HEAD_GRAPHS_DIR):  # a result's graphs lie beside its config, nowhere else
        raise EngineError(f"{folder}: the manifest's detector io names a head graphs folder; a result's "
                          "head graphs lie beside its config.")


# During a task, an INT8 candidate's quantized head graphs lie in its own folder, named by
# io.source[HEAD_GRAPHS_DIR]; a conversion's (and a result's) lie beside the config.
HEAD_GRAPHS_DIR = "head_graphs_dir"


def head_graphs_folder(source: dict, config: str) -> str:
    """Where the files of io.source's `roi_heads` are."""
    return source.get(HEAD_GRAPHS_DIR) or os.path.dirname(config)


def with_head_graphs(io: dict, graphs: list[dict], folder: str) -> dict:
    """A conversion's io whose RoI heads are `graphs` (entries like `roi_heads`'), files in `folder`."""
    return dict(io, source=dict(io["source"], roi_heads=graphs, **{HEAD_GRAPHS_DIR: folder}))


def own_copies(fmt, config: str, out_dir: str, trusted: bool = False) -> dict:
    """The config (merged with its bases) and its checkpoint, copied beside the ONNX model in
    `out_dir`; their names, relative to it. A conversion, and so its cache entry, holds its own
    copies: never a path into a model folder that a later task may have deleted (a fetched
    model's scratch folder) or that holds other files by then (issue 17)."""
    merged = fmt.save_config(config, out_dir, trusted=trusted)
    checkpoint = os.path.splitext(merged)[0] + ".pth"  # named like the config: found beside it
    shutil.copyfile(fmt.checkpoint_for(config), checkpoint)
    return {"config": os.path.basename(merged), "checkpoint": os.path.basename(checkpoint)}


def located(io: dict, folder: str) -> dict:
    """A conversion's io with its detector files (named relative to the ONNX model, see
    `own_copies`) as paths in `folder`, the folder the ONNX model is in now (its cache entry)."""
    if not is_detector(io):
        return io
    source = io["source"]
    return dict(io, source=dict(source, config=os.path.join(folder, source["config"]),
                                checkpoint=os.path.join(folder, source["checkpoint"])))


def package(fmt, model_dir: str, io: dict, trusted: bool = False) -> dict:
    """Copy what the heads need (config, merged into one file, and checkpoint) into
    <model_dir>/detector/, so the result folder stands alone; the io with those paths.
    (Merging reads the config with its framework: run where the model's code may run.)"""
    target = os.path.join(model_dir, RESULT_DIR)
    os.makedirs(target, exist_ok=True)
    config = fmt.save_config(io["source"]["config"], target, trusted)
    checkpoint = os.path.splitext(config)[0] + ".pth"  # named like the config: found beside it
    shutil.copyfile(io["source"]["checkpoint"], checkpoint)
    source = dict(io["source"])
    graphs = head_graphs_folder(source, source["config"])
    for name in beside_config(fmt, source):  # the heads' graphs: beside the config in a result
        shutil.copyfile(os.path.join(graphs, name), os.path.join(target, name))
    source.pop(HEAD_GRAPHS_DIR, None)
    relative = {"config": os.path.relpath(config, model_dir), "checkpoint": os.path.relpath(checkpoint, model_dir)}
    return dict(io, source=dict(source, **relative))


def beside_config(fmt, source: dict) -> list[str]:
    """The format's other files of a conversion (plain file names, kept beside the config:
    its heads' ONNX graphs), which a result carries too."""
    from accelflow.core.errors import EngineError

    names = fmt.files_beside_config(source) if hasattr(fmt, "files_beside_config") else []
    odd = [n for n in names if not isinstance(n, str) or os.path.basename(n) != n or n in ("", ".", "..")]
    if odd:
        raise EngineError(f"the detector's file names {odd} are not plain file names beside its config.")
    return names


# ------------------------------------------------------------ what the framework modules share

DEFAULT_OPSET = 17


class DetectorBaseline:
    """The original detector in its framework's own PyTorch inference, on the CPU. A format's
    subclass says how to feed it (`prepare`), call it (`infer`) and read one image's result
    (`instances`, a per-image detection dict)."""

    def __init__(self, model, label: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.model = torch, model
        self.label = f"{label} (torch {torch.__version__})"

    def run(self, feed):
        with self.torch.no_grad(), quiet():
            return self.infer(feed)

    def outputs(self, raw) -> list[np.ndarray]:
        return flat([self.instances(r) for r in raw])


def export_features(graph, image, spec, out_dir: str, output_names: list[str], what: str) -> tuple[str, list[str]]:
    """Trace the feature graph (one CHW image -> feature maps) and export it to ONNX with the
    image's height and width dynamic where the tensor information lets them vary;
    (ONNX path, input names)."""
    import torch
    from accelflow.core.errors import ConversionError, first_line
    from accelflow.core.modelio import unique_onnx_names

    leaf = spec.leaves[0]
    input_names = unique_onnx_names([leaf.name])
    axes = {input_names[0]: {a: f"{input_names[0]}_dim{a}" for a in leaf.shape.dynamic_axes}}
    onnx_path = os.path.join(out_dir, "model.onnx")
    try:
        with torch.no_grad(), quiet():
            traced = torch.jit.trace(graph, (image,), check_trace=False, strict=False)
            torch.onnx.export(traced, (image,), onnx_path, input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False)
    except Exception as exc:
        raise ConversionError(f"exporting the {what} to ONNX failed: {first_line(exc)}") from exc
    return onnx_path, input_names


_MAX_CONFIG_BYTES = 2_000_000


def config_text(path: str) -> str | None:
    """A small text file's content (a detector config candidate), or None."""
    if not os.path.isfile(path) or os.path.getsize(path) > _MAX_CONFIG_BYTES:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, OSError):
        return None


def yaml_risks(path: str, label: str) -> tuple[object, list[str]]:
    """(the YAML file's data read with the safe loader, what in it would construct Python
    objects): a python tag (`!!python/object/apply:os.system [...]`) runs code in an unsafe
    loader (fvcore falls back to one; MMEngine's loader is one). Unreadable YAML: (None, [])."""
    import yaml

    text = config_text(path)
    if text is None:
        return None, []
    try:
        return yaml.safe_load(text), []
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        tag = (exc.problem or "").split("tag", 1)[-1].strip(" '")
        return None, [f"{label} line {line}: a YAML tag that constructs Python objects ({tag})"]
    except yaml.YAMLError:  # the framework reports it when loading; nothing runs
        return None, []


def check_result_config(fmt, config: str, trusted: bool) -> None:
    """A saved result's config is read like the original's: refused where reading it would run
    code, unless trusted (accelflow.load(..., trust_model_code=True))."""
    from accelflow.core.errors import untrusted_model

    risks = [] if trusted else fmt.code_risks(config)
    if risks:
        raise untrusted_model(config, fmt.NAME, risks)


def load_weights(model, checkpoint: str, config: str, key: str):
    """Plain weights into `model` (torch.load weights_only=True; `{key: state_dict}` or a
    bare state dict), with errors that say what to fix."""
    import torch
    from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsupportedFormatError(
            f"{checkpoint} could not be read as plain weights ({first_line(exc)}); accelflow loads "
            f"checkpoints with weights_only=True: save {{'{key}': model.state_dict()}} only."
        ) from exc
    state = state.get(key, state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelMismatchError(f"{checkpoint} does not fit the model of {config}: {first_line(exc)}") from exc
    return model


@contextlib.contextmanager
def quiet():
    """The frameworks warn at every call about things the user cannot change here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def synthetic_image(shape, rng: np.random.Generator) -> np.ndarray:
    """A CHW image of pixel values 0..255: a smooth background with filled rectangles and
    ellipses of random colours, and a little noise (something for a detector to respond to)."""
    c, h, w = (int(s) for s in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.empty((c, h, w), np.float32)
    for ch in range(c):
        a, b = rng.uniform(-0.3, 0.3, 2)
        image[ch] = 128 + 60 * np.sin(a * yy / 8 + b * xx / 8 + rng.uniform(0, 6.28))
    for _ in range(int(rng.integers(3, 9))):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        bh, bw = rng.integers(h // 10 + 1, h // 2 + 2), rng.integers(w // 10 + 1, w // 2 + 2)
        colour = rng.uniform(0, 255, (c, 1))
        if rng.random() < 0.5:
            inside = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
        else:
            inside = ((yy - y0) / (bh / 2)) ** 2 + ((xx - x0) / (bw / 2)) ** 2 <= 1.0
        image[:, inside] = colour
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255)


def image_draws(spec, per_shape: int, seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """(shape point label, flat inputs) draws of synthetic images at every declared shape point."""
    rng = np.random.default_rng(seed)
    return [(point.label, point_images(spec, point, rng)) for point in spec.shape_points() for _ in range(per_shape)]


def point_images(spec, point, rng: np.random.Generator) -> list[np.ndarray]:
    """Flat inputs of synthetic images at one shape point."""
    return [synthetic_image(point.shapes[leaf.name], rng).astype(leaf.dtype if leaf.dtype != "bfloat16" else np.float32)
            for leaf in spec.leaves]


_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


def checkpoint_for(config: str, framework: str) -> str:
    """The checkpoint of a detector config: the one PyTorch checkpoint beside it, or the one
    named like it (`faster_rcnn.py` + `faster_rcnn.pth`) when there are several."""
    from accelflow.core.errors import UnsupportedFormatError
    from accelflow.formats import pytorch_checkpoint

    folder = os.path.dirname(os.path.abspath(config))
    found = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                   if n.endswith(_CHECKPOINT_SUFFIXES) and pytorch_checkpoint.detect(os.path.join(folder, n)))
    stem = os.path.splitext(os.path.basename(config))[0]
    named = [p for p in found if os.path.splitext(os.path.basename(p))[0] == stem]
    if len(named) == 1 or len(found) == 1:
        return (named or found)[0]
    what = "no checkpoint" if not found else f"several checkpoints ({', '.join(map(os.path.basename, found))})"
    raise UnsupportedFormatError(
        f"the {framework} config {config} has {what} beside it. Put its checkpoint (.pth) in the "
        f"same folder, named like the config ({stem}.pth) when there are several."
    )
