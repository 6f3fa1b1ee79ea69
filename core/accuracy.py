"""The accuracy comparison: original vs optimized outputs on the same inputs.

Per output, over every draw, the worst case is kept: max abs diff, max rel diff (over
elements whose reference magnitude is at least 1e-3 of the output's scale, since relative
error means nothing near zero), cosine similarity, and for integer/bool outputs the share
of differing elements. An output passes when

    max_abs_diff <= atol + rtol * scale   and   cosine >= min_cosine   (floating point)
    mismatch_share <= max_mismatch                                    (integer / bool)

with scale = max |reference| of that output. A level may also bound the relative L2 error
(||optimized - reference|| / ||reference||, `max_rel_l2`) and, for a classifier's scores (a
floating output of shape (batch, classes), 10 classes or more), require the top class to stay
the same (`min_top1`: share of rows whose top-1 agrees; `min_top5`: share whose reference top-1
is among the optimized top 5). Rows whose two best reference scores are nearly tied (within
2% of the row's range) are not counted: there any rounding may swap them. The defaults per
level are in core/levels.py.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
from dataclasses import dataclass

import numpy as np
from accelflow.core import quotas
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
    rel_l2: float = 0.0  # ||optimized - reference|| / ||reference|| over all draws
    top1_agreement: float | None = None  # classifier scores: share of rows with the same top class
    top5_agreement: float | None = None  # classifier scores: share with the reference's top-1 in the top 5


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
    """User samples from an .npz: keys `<element>` (one draw) or `<k>/<element>` (draw k)."""
    arrays = read_samples(path)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        draw, _, element = key.rpartition("/")
        groups.setdefault(draw or "0", {})[element] = value
    return [_sample_draw(spec, name, values, path) for name, values in sorted(groups.items())]


def read_samples(path: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of a --samples .npz by key, as np.load gives them, read so that the file's
    author can neither run code nor exhaust memory: `check_samples` first, then each array
    with allow_pickle=False, streamed into an array of its checked size."""
    with _samples_archive(path) as archive:
        members = _checked_members(archive, path, limit)
        try:
            return {info.filename[: -len(".npy")]: _read_member(archive, info) for info in members}
        except _UNREADABLE as exc:
            raise _not_plain_arrays(path, exc) from exc


def check_samples(path: str, limit: int | None = None) -> None:
    """Refuse a --samples .npz whose arrays would take more than `limit` bytes
    (ACCELFLOW_MAX_SAMPLES_GB by default), hold Python objects or are not arrays at all.

    Sizes come from the zip's central directory and from the first bytes of each .npy header;
    no array data is decompressed (a few MB of zip can otherwise unpack to many GB). Cheap
    enough for a preflight check, before any work.
    """
    with _samples_archive(path) as archive:
        _checked_members(archive, path, limit)


_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError)


@contextlib.contextmanager
def _samples_archive(path: str):
    try:
        archive = zipfile.ZipFile(path)
    except _UNREADABLE as exc:
        raise _not_plain_arrays(path, exc) from exc
    with archive:
        yield archive


def _not_plain_arrays(path: str, exc: BaseException) -> SpecError:
    return SpecError(f"--samples {path} is not an .npz of plain arrays ({first_line(exc)}). Save it with "
                     "np.savez(path, element_name=array, ...); arrays of Python objects are never loaded.")


def _checked_members(archive: zipfile.ZipFile, path: str, limit: int | None) -> list[zipfile.ZipInfo]:
    members = [info for info in archive.infolist() if not info.is_dir()]
    try:
        _check_sample_sizes(archive, members, path, quotas.max_samples_bytes() if limit is None else limit)
    except _UNREADABLE as exc:
        raise _not_plain_arrays(path, exc) from exc
    return members


def _check_sample_sizes(archive: zipfile.ZipFile, members: list, path: str, limit: int) -> None:
    total = 0
    for info in members:
        if not info.filename.endswith(".npy"):
            raise SpecError(f"--samples {path}: member {info.filename!r} is not an array (.npy); a samples "
                            "file holds arrays only, as np.savez writes them.")
        total += info.file_size  # the zip's own record: nothing is decompressed yet
        _refuse_over(total, limit, path, info.filename, f"unpacks to {quotas.size_text(info.file_size)}")
        shape, dtype = _npy_header(archive, info)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects, which are never unpickled "
                             "(allow_pickle=False)")
        data_bytes = math.prod(shape) * dtype.itemsize
        total += max(0, data_bytes - info.file_size)
        _refuse_over(total, limit, path, info.filename,
                     f"claims an array of shape {shape} and dtype {dtype} ({quotas.size_text(data_bytes)})")
        if data_bytes > info.file_size:  # the reader would fail later anyway; say why now
            raise SpecError(f"--samples {path}: member {info.filename!r} claims an array of shape {shape} "
                            f"and dtype {dtype} ({data_bytes} bytes) but holds only {info.file_size} bytes.")


def _refuse_over(total: int, limit: int, path: str, member: str, what: str) -> None:
    if total > limit:
        raise SpecError(
            f"--samples {path}: member {member!r} {what}; the samples would take {quotas.size_text(total)} "
            f"or more, more than this worker's limit of {quotas.size_text(limit)} ({quotas.SAMPLES_GB_ENV}). "
            "Give fewer or smaller samples.")


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the first bytes of a member: the .npy magic and header only."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 only serves structured dtypes with non-Latin-1 field names: no input array
            raise ValueError(f"member {info.filename!r} has .npy format version {version}; save it with np.savez")
    return tuple(int(d) for d in shape), dtype


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    # read_array reads a stream in small chunks into an array of the header's (checked) size.
    with archive.open(info) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


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
    rel_l2 = float(np.linalg.norm(ref - got) / np.linalg.norm(ref)) if np.any(ref) else float(np.any(got))
    passed = same_nonfinite and max_abs <= tol["atol"] + tol["rtol"] * scale and cosine >= tol["min_cosine"]
    passed = passed and rel_l2 <= tol.get("max_rel_l2", np.inf)
    top1, top5 = _top_agreement(refs, gots) if "min_top1" in tol else (None, None)
    if top1 is not None:
        passed = passed and top1 >= tol["min_top1"] and top5 >= tol.get("min_top5", 0.0)
    return OutputAccuracy(name, max_abs, max_rel, cosine, scale, tol, bool(passed), 0.0, rel_l2, top1, top5)


def _top_agreement(refs: list, gots: list) -> tuple[float | None, float | None]:
    """Top-1 / top-5 agreement over the rows of a classifier's scores (None for other outputs)."""
    if not all(r.ndim == 2 and r.shape[1] >= 10 for r in refs):
        return None, None
    ref = np.concatenate([r.astype(np.float64) for r in refs])
    got = np.concatenate([g.astype(np.float64) for g in gots])
    ordered = np.sort(ref, axis=1)
    decided = (ordered[:, -1] - ordered[:, -2]) > 0.02 * (ordered[:, -1] - ordered[:, 0])
    if not decided.any():
        return None, None
    ref, got = ref[decided], got[decided]
    best = ref.argmax(axis=1)
    top1 = float(np.mean(got.argmax(axis=1) == best))
    top5 = float(np.mean([b in row for b, row in zip(best, np.argsort(-got, axis=1)[:, :5])]))
    return top1, top5


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
                f"cosine {o.cosine_similarity:.6f} (required >= {o.tolerance['min_cosine']})" + _int8_figures(o)
            )
    return "; ".join(parts)


def _int8_figures(o: OutputAccuracy) -> str:
    """The relative L2 error and top-k agreement, where the gate judges them."""
    text = ""
    if "max_rel_l2" in o.tolerance:
        text += f", relative L2 error {o.rel_l2:.3g} (allowed {o.tolerance['max_rel_l2']})"
    if o.top1_agreement is not None:
        text += (f", top-1 agreement {o.top1_agreement:.1%} (required >= {o.tolerance['min_top1']:.0%}), "
                 f"top-5 {o.top5_agreement:.1%} (required >= {o.tolerance.get('min_top5', 0):.0%})")
    return text
