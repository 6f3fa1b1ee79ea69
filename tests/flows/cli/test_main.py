"""`accelflow optimize` and `accelflow tensor-info` as a user runs them, good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import modelzoo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CNN_INFO = ["-t", "input_0:float(1*3*16*16,2*3*16*16)"]
FAST = ["--draws", "1", "--bench-seconds", "0.2"]


@pytest.fixture
def cnn(tmp_path):
    (tmp_path / "models").mkdir()
    return modelzoo.tiny_cnn_torchscript(str(tmp_path / "models"))


def _fails(args, capsys, match: str) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "error: " in err and match in err
    assert "Traceback" not in err
    return err


def _cli(args, env_extra=None):
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value() or "", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "accelflow", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)


def test_optimize_json_prints_paths_and_figures(prefect_server, cnn, tmp_path):
    out = tmp_path / "out"
    proc = _cli(["optimize", cnn, *CNN_INFO, *FAST, "--output", str(out), "--json", "--name", "cli-json"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert os.path.isfile(result["report_json"]) and result["result_folder"] == str(out / "cli-json")
    assert result["speedup"] > 0 and result["accuracy_passed"] is True
    assert "[3/8] convert to ONNX" in proc.stderr  # progress is shown while it works


def test_summary_names_speedup_accuracy_and_files(prefect_server, cnn, tmp_path, capsys):
    assert main(["optimize", cnn, *CNN_INFO, *FAST, "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "accuracy: passed" in out and str(tmp_path / "out" / "cnn-fp16") in out


def test_truncated_onnx_fails_cleanly_through_the_flow(prefect_server, tmp_path):
    (tmp_path / "models").mkdir()
    path = modelzoo.tiny_cnn_onnx(str(tmp_path / "models"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = _cli(["optimize", path, "-t", "image:float(1*3*16*16)", "--output", str(out)])
    assert proc.returncode == EXIT_USER_ERROR
    assert "not a valid ONNX model" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_unknown_file_type(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(os.urandom(1000))
    _fails(["optimize", str(tmp_path / "m" / "model.bin"), *CNN_INFO, "--output", str(tmp_path / "out")],
           capsys, "not a supported model")
    assert not (tmp_path / "out").exists()


def test_checkpoint_is_refused_with_how_to_export(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    path = modelzoo.checkpoint(str(tmp_path / "m"))
    _fails(["optimize", path, *CNN_INFO, "--output", str(tmp_path / "out")], capsys, "torch.jit.trace")


def test_torchscript_that_fails_to_load(prefect_server, capsys, tmp_path):
    import zipfile

    (tmp_path / "m").mkdir()
    good = modelzoo.tiny_cnn_torchscript(str(tmp_path / "m"))
    bad = tmp_path / "m" / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            keep = not item.filename.endswith("constants.pkl")
            dst.writestr(item, src.read(item.filename) if keep else b"\x80\x02garbage")
    os.remove(good)
    _fails(["optimize", str(bad), *CNN_INFO, "--output", str(tmp_path / "out")], capsys, "failed to load")
    assert not (tmp_path / "out").exists()


def test_tensor_information_that_does_not_match_the_onnx_model(prefect_server, capsys, tmp_path):
    (tmp_path / "m").mkdir()
    path = modelzoo.tiny_cnn_onnx(str(tmp_path / "m"))
    err = _fails(["optimize", path, "-t", "image:int32(1*3*16*16)", "--output", str(tmp_path / "out")],
                 capsys, "does not match the ONNX model's inputs")
    assert "image: the model takes float32, tensor information says int32" in err
    assert not (tmp_path / "out").exists()


def test_output_overlapping_the_model_home(capsys, cnn):
    home = os.path.dirname(cnn)
    _fails(["optimize", cnn, *CNN_INFO, "--output", os.path.join(home, "out")], capsys, "overlaps the model's home")
    assert sorted(os.listdir(home)) == ["cnn.pt"]


def test_missing_repository_entry(capsys, tmp_path):
    _fails(["optimize", "bert@v9", *CNN_INFO, "--repo", str(tmp_path / "repo"), "--output", str(tmp_path / "out")],
           capsys, "bert")


@pytest.mark.parametrize("option,value,match", [
    ("--device", "tpu9", "unknown device"),
    ("--level", "int3", "fp16, lossless or int8"),
    ("--engine", "tvm", "unknown engine"),
    ("--engine-version", "0.0.1", "needs --engine"),
])
def test_bad_settings_are_refused_before_any_work(capsys, cnn, tmp_path, option, value, match):
    _fails(["optimize", cnn, *CNN_INFO, option, value, "--output", str(tmp_path / "out")], capsys, match)
    assert not (tmp_path / "out").exists()


def test_bad_tensor_information_points_at_the_column(capsys, cnn, tmp_path):
    err = _fails(["optimize", cnn, "-t", "input_0:float(1*3,1*3*4)", "--output", str(tmp_path / "out")],
                 capsys, "different rank")
    assert "input_0:float(1*3,1*3*4)" in err and "^" in err


def test_debug_shows_the_traceback(cnn, tmp_path):
    with pytest.raises(Exception, match="unknown device"):
        main(["--debug", "optimize", cnn, *CNN_INFO, "--device", "tpu9", "--output", str(tmp_path / "out")])


def test_tensor_info_prints_structure_as_json(capsys, tmp_path):
    assert main(["tensor-info", "input_0[0][image]：float（3*32*32，3*64*64）"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["root"] == "args"
    leaf = parsed["items"][0]["items"][0]["items"]["image"]
    assert leaf["dtype"] == "float32" and leaf["shape"]["kind"] == "range"
    info = tmp_path / "info.txt"
    info.write_text("input_ids:int32(1*128,8*128)\ninput_mask:int32(1*128,8*128)\n")
    assert main(["tensor-info", "-f", str(info)]) == 0
    assert set(json.loads(capsys.readouterr().out)["items"]) == {"input_ids", "input_mask"}
    _fails(["tensor-info", "input_0:float(0*3)"], capsys, "line 1")


@pytest.mark.parametrize("step", ["[6/8] benchmark ...", "[8/8] package ..."])
def test_interrupt_leaves_no_result_and_no_staging(prefect_server, cnn, tmp_path, step):
    """Ctrl-C in the longest step, and in the last one (where freeing the engines' sessions
    early once made the interrupted process crash with SIGSEGV, leaving its staging folder)."""
    import signal
    import time

    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    for attempt in range(3):  # packaging takes about a second: on a busy machine the run may end first
        out = tmp_path / f"out{attempt}"
        args = [sys.executable, "-m", "accelflow", "optimize", cnn, *CNN_INFO, "--bench-seconds", "3",
                "--draws", "1", "--output", str(out)]
        # SIGINT back to its default in the child: a test run started as a background job of a
        # non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if step in line:
                break
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
        if proc.returncode != 0:
            break
    # 130 from the CLI's handler; once in CI (not reproduced in 26 tries here since) the process instead
    # ended killed by SIGINT after printing its message: a shell shows both as status 130.
    assert proc.returncode in (130, -signal.SIGINT), "".join(lines) + rest
    assert "Traceback" not in rest and "nothing was kept" in rest, rest
    assert not out.exists() or os.listdir(out) == [], (os.listdir(out), rest)
