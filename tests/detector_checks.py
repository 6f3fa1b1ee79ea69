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
