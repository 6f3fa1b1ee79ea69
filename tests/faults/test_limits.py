"""Time and memory limits end a task with the reason; temporary files never outlive a task."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import modelzoo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--draws", "1", "--bench-seconds", "0.2"]


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def test_time_limit_stops_the_task_with_the_reason(prefect_server, models, tmp_path, capsys):
    slow = modelzoo.slow_torchscript(str(models))
    out = tmp_path / "out"
    started = time.monotonic()
    code = main(["optimize", slow, "-t", "input_0:float(256*512)", "--bench-seconds", "30", "--time-limit", "6",
                 "--output", str(out)])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "exceeded its time limit of 6 s (--time-limit)" in err and "Traceback" not in err
    assert took < 300  # a guard against a hang; the message above says the limit stopped it
    assert not out.exists()  # nothing half-written


def _cli(args, tmp_path, **env):
    full_env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), **env)
    from prefect.settings import PREFECT_API_URL

    full_env["PREFECT_API_URL"] = PREFECT_API_URL.value() or ""
    return subprocess.run([sys.executable, "-m", "accelflow", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=600)


def test_memory_limit_fails_the_task_with_the_reason(prefect_server, models, tmp_path):
    hog = modelzoo.memory_hog_torchscript(str(models))
    (tmp_path / "tmp").mkdir()
    proc = _cli(["optimize", hog, "-t", "input_0:float(1*4)", *FAST, "--memory-limit", "6",
                 "--output", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    assert "ran out of memory" in proc.stderr and "6 GiB (--memory-limit)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_temporary_files_are_removed_after_success_and_failure(prefect_server, models, tmp_path):
    cnn = modelzoo.tiny_cnn_torchscript(str(models))
    (tmp_path / "tmp").mkdir()
    ok = _cli(["optimize", cnn, "-t", "input_0:float(1*3*16*16)", *FAST, "--output", str(tmp_path / "out")], tmp_path)
    assert ok.returncode == 0, ok.stderr
    failed = _cli(["optimize", cnn, "-t", "input_0:float(1*3*16*16)", *FAST, "--min-cosine", "1.5",
                   "--output", str(tmp_path / "out2")], tmp_path)
    assert failed.returncode == EXIT_USER_ERROR, failed.stderr
    # The machine's timing lock (tasks/timing_lock.py) is a lasting file, not temporary data.
    assert [f for f in os.listdir(tmp_path / "tmp") if not f.startswith("accelflow-cpu.lock")] == []
    assert os.listdir(tmp_path / "out") == ["cnn-fp16"] and not (tmp_path / "out2").exists()


# -- the worker operator's caps on what a submitter may ask for (docs/limits.md) --------------------


def _refused(args, capsys, *needles) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


def test_ten_thousand_size_choices_are_refused_before_any_work(models, tmp_path, capsys):
    onnx = modelzoo.tiny_cnn_onnx(str(models))
    one_line = "input_0:float([" + ",".join(f"1*3*{k}*16" for k in range(1, 10001)) + "])"
    info = tmp_path / "info.txt"  # two lists of 100: 10**4 combinations
    info.write_text("".join(f"input_{i}:float([{','.join(f'1*{k}' for k in range(1, 101))}])\n" for i in range(2)))
    started = time.monotonic()
    _refused(["optimize", onnx, "-t", one_line, "--output", str(tmp_path / "out")], capsys,
             "10000 sizes", "at most 32 shape points per task (ACCELFLOW_MAX_SHAPE_POINTS)")
    _refused(["optimize", onnx, "--tensor-info-file", str(info), "--output", str(tmp_path / "out")], capsys,
             "line 1", "line 2", "100 sizes", "ACCELFLOW_MAX_SHAPE_POINTS")
    assert time.monotonic() - started < 120  # a hang guard; test_tensor_info bounds the memory of the count
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bomb", ["20 GiB of zeros", "a header claiming 4 TiB"])
def test_a_zip_bomb_samples_file_is_refused_unpacked(prefect_server, models, tmp_path, capsys, bomb):
    from tests import zipbomb

    cnn = modelzoo.tiny_cnn_torchscript(str(models))
    samples = str(tmp_path / "samples.npz")
    if bomb == "20 GiB of zeros":
        zipbomb.zip_bomb_npz(samples)
        what = "member 'input_0.npy' unpacks to 20.0 GiB"
    else:
        zipbomb.lying_header_npz(samples, shape=(2**40,))
        what = "member 'input_0.npy' claims an array of shape (1099511627776,)"
    _refused(["optimize", cnn, "-t", "input_0:float(1*3*16*16)", *FAST, "--samples", samples,
              "--output", str(tmp_path / "out")], capsys, what, "limit of 4.0 GiB (ACCELFLOW_MAX_SAMPLES_GB)")
    assert not (tmp_path / "out").exists()


def test_a_fetch_over_the_cap_is_refused_before_any_download(prefect_server, s3_repo_uri, models, tmp_path, capsys,
                                                             monkeypatch):
    from accelflow.storage.repository import ModelRepository

    onnx = modelzoo.tiny_cnn_onnx(str(models))
    size = os.path.getsize(onnx)
    version = ModelRepository(s3_repo_uri).add("cnn", "v1", onnx, source="uploaded", format="onnx")
    monkeypatch.setenv("ACCELFLOW_MAX_FETCH_GB", str(size / 2 / 2**30))  # half the model
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    common = ["-t", "input_0:float(1*3*16*16)", *FAST, "--output", str(tmp_path / "out")]
    _refused(["optimize", "cnn@v1", "--repo", s3_repo_uri, *common], capsys,
             f"cnn@v1 is {size / 1024:.1f} KiB ({size} bytes)", "(ACCELFLOW_MAX_FETCH_GB); nothing was downloaded")
    _refused(["optimize", f"{version.home}/cnn.onnx", *common], capsys,
             f"the model {version.home} is {size / 1024:.1f} KiB ({size} bytes)", "ACCELFLOW_MAX_FETCH_GB")
    assert not (tmp_path / "out").exists()
    leftovers = [os.path.join(d, n) for d, _, names in os.walk(scratch) for n in names]
    assert not any(n.endswith(".onnx") for n in leftovers), leftovers  # nothing of the model was downloaded
    monkeypatch.setenv("ACCELFLOW_MAX_FETCH_GB", str(2 * size / 2**30))
    assert main(["optimize", "cnn@v1", "--repo", s3_repo_uri, *common]) == 0  # under the cap: as before
