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
    assert os.listdir(tmp_path / "tmp") == []
    assert os.listdir(tmp_path / "out") == ["cnn-fp16"] and not (tmp_path / "out2").exists()
