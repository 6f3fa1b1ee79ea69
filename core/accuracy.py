"""The accuracy comparison: original vs optimized outputs on the same inputs.

Per output, over every draw, the worst case is kept: max abs diff, max rel diff (over
elements whose reference magnitude is at least 1e-3 of the output's scale, since relative
error means nothing near zero), cosine similarity, and for integer/bool outputs the share
of differing elements. An output passes when

    max_abs_diff <= atol + rtol * scale   and   cosine >= min_cosine   (floating point)
    mismatch_share <= max_mismatch                                    (integer / bool)

with scale = max |reference| of that output. The defaults per level are in core/levels.py.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np
from accelflow.core.errors import SpecError, first_line
from accelflow.core.levels import gate_named


@dataclass
class OutputAccuracy:
    """Original vs optimized on one output over all accuracy draws (worst case kept)."""

    output: str
    max_abs_diff: float
    max_rel_diff: float
    cosine_similarity: float
    scale: float  # max |reference|, which the absolute tolerance is scaled by
    tolerance: dict[str, float]  # e.g. {"rtol": 1e-4, "atol": 1e-5, "min_cosine": 0.99999}
    passed: bool
    mismatch_share: float = 0.0  # integer/bool outputs: share of differing elements


@dataclass
class Accuracy:
    passed: bool
    draws: int
    outputs: list[OutputAccuracy]
    reason: str = ""  # why it failed, in words, when it did


DRAWS_PER_SHAPE = 3


@dataclass
class Draw:
    label: str  # shape point label, or "sample k"
    arrays: list[np.ndarray]


def tolerances(gate: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The tensor tolerances of a level ("lossless", "fp16") or of "qat", with overrides."""
    merged = dict(gate_named(gate).tensors)
    merged.update({k: float(v) for k, v in (overrides or {}).items() if v is not None})
    return merged


def random_draws(spec, int_ranges=None, per_shape: int = DRAWS_PER_SHAPE, seed: int = 0) -> list[Draw]:
    """`per_shape` random inputs at every shape point (min/mid/max of ranges, each choice)."""
    rng = np.random.default_rng(seed)
    draws = []
    for point in spec.shape_points():
        for _ in range(per_shape):
            args, kwargs = spec.example_inputs(point, rng, int_ranges)
            draws.append(Draw(point.label, spec.flatten(args, kwargs)))
    return draws


def sample_draws(spec, path: str) -> list[Draw]:
    """User samples from an .npz: keys `<element>` (one draw) or `<k>/<element>` (draw k).

    np.load with allow_pickle=False: a sample file can never run code.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SpecError(
            f"--samples {path} is not an .npz of plain arrays ({first_line(exc)}). Save it with "
            "np.savez(path, element_name=array, ...); arrays of Python objects are never loaded."
        ) from exc
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        draw, _, element = key.rpartition("/")
        groups.setdefault(draw or "0", {})[element] = value
    return [_sample_draw(spec, name, values, path) for name, values in sorted(groups.items())]


def _sample_draw(spec, name: str, values: dict, path: str) -> Draw:
    missing = [leaf.name for leaf in spec.leaves if leaf.name not in values]
    if missing:
        raise SpecError(f"{path}: sample {name} has no array for {', '.join(missing)}; keys must be element names.")
    arrays = [values[leaf.name] for leaf in spec.leaves]
    for leaf, array in zip(spec.leaves, arrays):
        if not _fits(leaf.shape, array.shape):
            raise SpecError(f"{path}: sample {name}, {leaf.name} has shape {array.shape}, outside {leaf.shape.text()}.")
    return Draw(f"sample {name}", arrays)


def _fits(shape, actual: tuple[int, ...]) -> bool:
    if len(actual) != shape.rank:
        return False
    if shape.kind == "range":
        return all(lo <= a <= hi for lo, a, hi in zip(shape.min, actual, shape.max))
    return tuple(actual) in [tuple(s) for s in shape.sizes]


def compare(reference: list[list[np.ndarray]], optimized: list[list[np.ndarray]],
            names: list[str], tolerance: dict[str, float]) -> Accuracy:
    """Worst case per output over all draws; `reference[d][o]` is draw d, output o."""
    outputs = [_compare_output(name, [r[i] for r in reference], [o[i] for o in optimized], tolerance)
               for i, name in enumerate(names)]
    failed = [o for o in outputs if not o.passed]
    return Accuracy(passed=not failed, draws=len(reference), outputs=outputs, reason=_reason(failed))


def _compare_output(name: str, refs: list, gots: list, tol: dict[str, float]) -> OutputAccuracy:
    refs = [np.asarray(r) for r in refs]
    gots = [np.asarray(g) for g in gots]
    if any(r.shape != g.shape for r, g in zip(refs, gots)):  # every element counts as differing
        return OutputAccuracy(name, float("inf"), float("inf"), 0.0, 0.0, tol, False, 1.0)
    if all(r.dtype.kind in "biu" for r in refs):
        return _compare_exact(name, refs, gots, tol)
    return _compare_float(name, refs, gots, tol)


def _compare_exact(name, refs, gots, tol) -> OutputAccuracy:
    total = sum(r.size for r in refs)
    differing = sum(int(np.count_nonzero(r != g)) for r, g in zip(refs, gots))
    share = differing / total if total else 0.0
    ref = np.concatenate([r.astype(np.float64).ravel() for r in refs])
    got = np.concatenate([g.astype(np.float64).ravel() for g in gots])
    max_abs = float(np.abs(ref - got).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return OutputAccuracy(name, max_abs, max_abs / scale if scale else 0.0, _cosine(ref, got), scale,
                          tol, share <= tol["max_mismatch"], share)


def _compare_float(name, refs, gots, tol) -> OutputAccuracy:
    ref = np.concatenate([r.astype(np.float64).ravel() for r in refs])
    got = np.concatenate([g.astype(np.float64).ravel() for g in gots])
    same_nonfinite = _nonfinite_match(ref, got)
    finite = np.isfinite(ref) & np.isfinite(got)
    ref, got = ref[finite], got[finite]
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = np.abs(ref - got)
    max_abs = float(diff.max()) if diff.size else 0.0
    significant = np.abs(ref) >= 1e-3 * scale
    max_rel = float((diff[significant] / np.abs(ref[significant])).max()) if significant.any() else 0.0
    cosine = _cosine(ref, got)
    passed = same_nonfinite and max_abs <= tol["atol"] + tol["rtol"] * scale and cosine >= tol["min_cosine"]
    return OutputAccuracy(name, max_abs, max_rel, cosine, scale, tol, bool(passed))


def _nonfinite_match(ref: np.ndarray, got: np.ndarray) -> bool:
    """NaN/inf must appear at the same places with the same value in both."""
    bad_ref, bad_got = ~np.isfinite(ref), ~np.isfinite(got)
    if not np.array_equal(bad_ref, bad_got):
        return False
    return bool(np.array_equal(np.nan_to_num(ref[bad_ref]), np.nan_to_num(got[bad_got])))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _reason(failed: list[OutputAccuracy]) -> str:
    parts = []
    for o in failed:
        if o.mismatch_share:
            parts.append(f"{o.output}: {o.mismatch_share:.2%} of elements differ (allowed {o.tolerance['max_mismatch']:.2%})")
        else:
            limit = o.tolerance["atol"] + o.tolerance["rtol"] * o.scale
            parts.append(
                f"{o.output}: max abs diff {o.max_abs_diff:.3g} (allowed {limit:.3g}), "
                f"cosine {o.cosine_similarity:.6f} (required >= {o.tolerance['min_cosine']})"
            )
    return "; ".join(parts)
