"""A pretrained model and real images that registry packages ship, so that the INT8 gate is
judged on meaningful activations and not only on random weights.

PaddleOCR's PP-OCRv4 text detector (DBNet on PPLCNetV3, pretrained) as the rapidocr-onnxruntime
wheel ships it (ONNX), on scikit-image's sample photographs (a printed page, text, everyday
scenes). Both wheels are fetched with `pip download --no-deps` into ~/.cache/accelflow/bench
and read as zip files: nothing is installed and nothing else is downloaded.
"""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass

import numpy as np

WHEELS = {"rapidocr_onnxruntime": "rapidocr-onnxruntime==1.4.4", "scikit_image": "scikit-image==0.26.0"}
OCR_DETECTOR = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
# Calibration and accuracy images differ, as a user's calibration set and traffic would.
CALIBRATION_IMAGES = ("page", "coffee", "astronaut", "motorcycle_left")
ACCURACY_IMAGES = ("text", "chelsea", "motorcycle_right")
HEIGHT, WIDTH = 480, 640  # multiples of 32, as the detector needs


@dataclass(frozen=True)
class Pretrained:
    name: str
    onnx_path: str
    tensor_info: list[str]
    samples: str  # .npz of the accuracy images
    calibration: str  # .npz of the calibration images


def cache_dir() -> str:
    root = os.environ.get("ACCELFLOW_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "accelflow"))
    folder = os.path.join(root, "bench")
    os.makedirs(folder, exist_ok=True)
    return folder


def ocr_detector() -> Pretrained:
    """PP-OCRv4's detector with its images as .npz (input `x`: RGB, normalised as PaddleOCR does)."""
    folder = cache_dir()
    path = os.path.join(folder, "ppocrv4_det.onnx")
    if not os.path.exists(path):
        with zipfile.ZipFile(_wheel("rapidocr_onnxruntime")) as wheel, open(path + ".part", "wb") as out:
            out.write(wheel.read(OCR_DETECTOR))
        os.replace(path + ".part", path)
    with zipfile.ZipFile(_wheel("scikit_image")) as wheel:
        samples = _save_images(wheel, ACCURACY_IMAGES, os.path.join(folder, "ocr_samples.npz"))
        calibration = _save_images(wheel, CALIBRATION_IMAGES, os.path.join(folder, "ocr_calibration.npz"))
    return Pretrained("ppocrv4-det", path, [f"x:float(1*3*{HEIGHT}*{WIDTH})"], samples, calibration)


def _wheel(package: str) -> str:
    folder = cache_dir()
    found = glob.glob(os.path.join(folder, f"{package}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
                        WHEELS[package]], check=True)
        found = glob.glob(os.path.join(folder, f"{package}-*.whl"))
    return found[0]


def _save_images(wheel: zipfile.ZipFile, names: tuple[str, ...], path: str) -> str:
    from PIL import Image

    arrays = {}
    for k, name in enumerate(names):
        image = Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}.png"))).convert("RGB")
        pixels = np.asarray(image.resize((WIDTH, HEIGHT)), dtype=np.float32) / 255.0
        arrays[f"{k}/x"] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()  # PaddleOCR's mean/std 0.5
    np.savez(path, **arrays)
    return path


def measure(plan, bench_seconds: float, work: str) -> list[dict]:
    """PP-OCRv4's detector: ONNX Runtime and OpenVINO with default settings against accelflow's
    lossless and int8 results, each runner timed in its own block; each row says how the int8
    gate went (the images are real, so the gate is judged on meaningful activations)."""
    from accelflow.tasks.benchmark import time_separately

    from bench import alternatives

    model = ocr_detector()
    folders, outcomes = {}, {}
    for level in ("lossless", "int8"):
        folders[level], outcomes[level] = _optimize(model, level, bench_seconds, work)
    arrays = [np.load(model.samples)["0/x"]]
    feeds = {"x": arrays[0]}
    ov_call, ov_precision = alternatives.openvino_call(model.onnx_path, feeds)
    runners = {"onnxruntime default": alternatives.CallRunner("onnxruntime default",
                                                              alternatives.ort_call(model.onnx_path, feeds), "f32"),
               "openvino default": alternatives.CallRunner("openvino default", ov_call, ov_precision)}
    runners.update({f"accelflow {level}": alternatives.AccelflowRunner(f"accelflow {level}", folder)
                    for level, folder in folders.items()})
    samples = time_separately(runners, arrays, plan)
    rows = []
    for label, runner in runners.items():
        p50 = float(np.median([ms for block in samples[label] for ms in block]))
        rows.append({"model": model.name, "runner": label, "engine": getattr(runner, "engine", runner.precision),
                     "p50_ms": p50, "int8_gate": outcomes.get(label.removeprefix("accelflow "), "")})
    alternatives.release(runners)
    return rows


def _optimize(model: Pretrained, level: str, bench_seconds: float, work: str) -> tuple[str, str]:
    from bench.optimized import int8_outcome, optimize

    folder, report = optimize(model.onnx_path, model.tensor_info, level, f"{model.name}-{level}", work, bench_seconds,
                              samples=model.samples, calibration=model.calibration if level == "int8" else None)
    return folder, int8_outcome(report)


def markdown(rows: list[dict]) -> str:
    """The pretrained model's table: speed against ONNX Runtime's defaults, and the int8 gate."""
    if not rows:
        return ""
    base = next(r["p50_ms"] for r in rows if r["runner"] == "onnxruntime default")
    lines = ["## Pretrained model, real images (bench/pretrained.py)", "",
             "| model | runner | engine | p50 ms | x onnxruntime default | int8 gate |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['runner']} | {r['engine']} | {r['p50_ms']:.2f} | {base / r['p50_ms']:.2f}x | "
              f"{r['int8_gate']} |" for r in rows]
    return "\n".join(lines) + "\n"
