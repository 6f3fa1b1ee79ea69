"""The accuracy gate's comparisons and its inputs."""

from __future__ import annotations

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.accuracy import check_samples, compare, random_draws, read_samples, sample_draws, tolerances
from accelflow.core.errors import SpecError

from tests import zipbomb

RNG = np.random.default_rng(0)
REF = RNG.standard_normal((4, 64)).astype(np.float32) * 3.0


def test_identical_outputs_pass_with_zero_diff():
    acc = compare([[REF]], [[REF.copy()]], ["out"], tolerances("lossless"))
    out = acc.outputs[0]
    assert acc.passed and out.passed
    assert out.max_abs_diff == 0.0 and out.cosine_similarity == pytest.approx(1.0)
    assert out.scale == pytest.approx(float(np.abs(REF).max()))


def test_bf16_sized_error_passes_fp16_and_fails_lossless():
    noisy = REF * (1 + RNG.uniform(-4e-3, 4e-3, REF.shape)).astype(np.float32)
    assert compare([[REF]], [[noisy]], ["out"], tolerances("fp16")).passed
    lossless = compare([[REF]], [[noisy]], ["out"], tolerances("lossless"))
    assert not lossless.passed
    assert "out: max abs diff" in lossless.reason and "allowed" in lossless.reason


def test_worst_draw_decides():
    bad = REF.copy()
    bad[0, 0] += 1.0
    acc = compare([[REF], [REF]], [[REF], [bad]], ["out"], tolerances("fp16"))
    assert not acc.passed and acc.draws == 2
    assert acc.outputs[0].max_abs_diff == pytest.approx(1.0, rel=1e-6)


def test_relative_diff_ignores_near_zero_references():
    ref = np.array([1e-9, 2.0, -4.0], dtype=np.float32)
    got = np.array([1e-6, 2.002, -4.0], dtype=np.float32)
    out = compare([[ref]], [[got]], ["out"], tolerances("fp16")).outputs[0]
    assert out.max_rel_diff == pytest.approx(1e-3, rel=1e-3)


def test_nan_must_match_in_place():
    ref = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    assert compare([[ref]], [[ref.copy()]], ["o"], tolerances("lossless")).passed
    moved = np.array([np.nan, 2.0, 3.0], dtype=np.float32)
    assert not compare([[ref]], [[moved]], ["o"], tolerances("fp16")).passed


def test_integer_outputs_count_mismatches():
    ref = np.arange(200, dtype=np.int64)
    got = ref.copy()
    got[0] = 7
    fp16 = compare([[ref]], [[got]], ["labels"], tolerances("fp16")).outputs[0]
    assert fp16.mismatch_share == pytest.approx(0.005) and fp16.passed
    assert not compare([[ref]], [[got]], ["labels"], tolerances("lossless")).passed


def test_shape_mismatch_fails():
    acc = compare([[REF]], [[REF[:2]]], ["out"], tolerances("fp16"))
    assert not acc.passed and acc.outputs[0].mismatch_share == 1.0


def test_overrides_replace_defaults():
    tol = tolerances("fp16", {"rtol": 0.5, "min_cosine": None})
    assert tol["rtol"] == 0.5 and tol["min_cosine"] == 0.999


def test_random_draws_cover_every_shape_point():
    spec = tensor_info.parse(["input_ids:int64(1*4,2*16)", "attention_mask:int64(1*4,2*16)"])
    draws = random_draws(spec, per_shape=2)
    assert [d.label for d in draws] == ["min", "min", "mid", "mid", "max", "max"]
    ids, mask = draws[-1].arrays
    assert ids.shape == mask.shape == (2, 16)
    assert set(np.unique(mask)) <= {0, 1} and ids.max() < 100


def test_sample_draws_from_npz(tmp_path):
    spec = tensor_info.parse(["input_0:float(1*3,4*3)"])
    path = tmp_path / "samples.npz"
    np.savez(path, **{"0/input_0": np.ones((2, 3), np.float32), "1/input_0": np.zeros((4, 3), np.float32)})
    draws = sample_draws(spec, str(path))
    assert [d.label for d in draws] == ["sample 0", "sample 1"]
    assert draws[1].arrays[0].shape == (4, 3)


@pytest.mark.parametrize("content,match", [
    ({"other": np.ones((1, 3), np.float32)}, "no array for input_0"),
    ({"input_0": np.ones((9, 3), np.float32)}, "outside"),
])
def test_bad_samples_are_refused(tmp_path, content, match):
    spec = tensor_info.parse(["input_0:float(1*3,4*3)"])
    path = tmp_path / "samples.npz"
    np.savez(path, **content)
    with pytest.raises(SpecError, match=match):
        sample_draws(spec, str(path))


def test_pickled_samples_are_never_unpickled(tmp_path):
    spec = tensor_info.parse(["input_0:float(1*3)"])
    path = tmp_path / "samples.npz"
    np.savez(path, input_0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(SpecError, match="not an .npz of plain arrays.*allow_pickle"):
        sample_draws(spec, str(path))


# ---------------------------------------------------------------- the samples cap (docs/limits.md)


def test_a_zip_bomb_is_refused_from_the_zip_headers_alone(tmp_path):
    import resource
    import time

    path = tmp_path / "bomb.npz"
    size = zipbomb.zip_bomb_npz(str(path))  # 20 GiB of zeros in a 20 MB file
    assert size > 20 * 2**30 and path.stat().st_size < 25 * 2**20
    spec = tensor_info.parse(["input_0:uint8(1)"])
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    with pytest.raises(SpecError) as caught:
        sample_draws(spec, str(path))
    took, grew_kib = time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert all(part in str(caught.value) for part in (
        "member 'input_0.npy' unpacks to 20.0 GiB", "limit of 4.0 GiB", "ACCELFLOW_MAX_SAMPLES_GB"))
    assert grew_kib < 64 * 1024, grew_kib  # nothing was decompressed (memory tells; the time is only a hang guard)
    assert took < 60, took


def test_the_zip_bomb_is_a_real_zip(tmp_path):
    """The bomb's construction (repeated deflate blocks, hand-made CRC and zip64 records) checked
    at a small size: numpy reads it whole, and zipfile's CRC check passes."""
    path = tmp_path / "small.npz"
    zipbomb.zip_bomb_npz(str(path), total=48 * 2**20)
    with np.load(path) as data:
        array = data["input_0"]
    assert array.shape == (48 * 2**20,) and not array.any()
    assert read_samples(str(path))["input_0"].shape == (48 * 2**20,)


def test_an_npy_header_claiming_a_huge_array_is_refused_unread(tmp_path):
    path = tmp_path / "lying.npz"
    zipbomb.lying_header_npz(str(path), "0/input_0.npy", shape=(2**40,))
    with pytest.raises(SpecError) as caught:
        read_samples(str(path))
    assert all(part in str(caught.value) for part in (
        "member '0/input_0.npy' claims an array of shape (1099511627776,) and dtype float32 (4.0 TiB)",
        "limit of 4.0 GiB", "ACCELFLOW_MAX_SAMPLES_GB"))


def test_an_npy_header_claiming_more_than_its_member_holds_is_refused(tmp_path):
    path = tmp_path / "short.npz"
    zipbomb.lying_header_npz(str(path), shape=(1000, 1000))
    with pytest.raises(SpecError, match=r"claims an array of shape \(1000, 1000\) .* holds only 1152 bytes"):
        read_samples(str(path))


def test_the_samples_cap_counts_all_members_and_is_the_operators_setting(tmp_path, monkeypatch):
    path = tmp_path / "samples.npz"
    np.savez_compressed(path, **{f"{k}/input_0": np.zeros((1, 3, 256, 256), np.float32) for k in range(3)})
    spec = tensor_info.parse(["input_0:float(1*3*256*256)"])
    assert len(sample_draws(spec, str(path))) == 3  # 2.25 MiB in all: far under the default
    monkeypatch.setenv("ACCELFLOW_MAX_SAMPLES_GB", str(1.5 / 1024))  # 1.5 MiB: the second member passes it
    with pytest.raises(SpecError, match="member '1/input_0.npy' unpacks to 768.1 KiB; the samples would take 1.5 MiB"):
        sample_draws(spec, str(path))


@pytest.mark.parametrize("name", ["notes.txt", "input_0"])
def test_a_samples_file_holds_arrays_only(tmp_path, name):
    import zipfile

    path = tmp_path / "samples.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, b"x" * 100)
    with pytest.raises(SpecError, match=f"member '{name}' is not an array"):
        read_samples(str(path))


def test_a_plain_npy_is_not_an_npz(tmp_path):
    path = tmp_path / "samples.npy"
    np.save(path, np.ones(3))
    with pytest.raises(SpecError, match="is not an .npz of plain arrays"):
        read_samples(str(path))


def test_check_samples_is_the_preflight_of_the_same_checks(tmp_path):
    good, bomb = tmp_path / "good.npz", tmp_path / "bomb.npz"
    np.savez(good, input_0=np.ones((1, 3), np.float32))
    assert check_samples(str(good)) is None
    zipbomb.zip_bomb_npz(str(bomb))
    with pytest.raises(SpecError, match="member 'input_0.npy' unpacks to 20.0 GiB"):
        check_samples(str(bomb))
    with pytest.raises(SpecError, match="limit of 12 bytes"):
        check_samples(str(good), limit=12)
