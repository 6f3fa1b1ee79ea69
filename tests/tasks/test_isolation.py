"""tasks/isolation.py: the model process. Each test runs real functions in a real child process;
the functions below are imported there by name (PYTHONPATH points at this checkout)."""

from __future__ import annotations

import os
import pickle
import socket
import time

import numpy as np
import pytest
from accelflow.core.errors import ModelProcessError, SpecError
from accelflow.flows.stopping import StopWatcher, TimeLimitReached
from accelflow.tasks.isolation import ModelProcess, child_environment, is_secret_name, no_network_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def process(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT)  # so that the child can import this module's functions
    with ModelProcess(str(tmp_path / "work")) as p:
        yield p


# --- run in the child ---

def environment() -> dict:
    return dict(os.environ)


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def report_progress(say) -> str:
    say(1, 2, "min")
    say(2, 2, "max")
    return "done"


def allocate(gib: float) -> int:
    return np.ones(int(gib * (1 << 30)), dtype=np.uint8).nbytes


class _Touches:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_result(marker: str):
    return {"looks": "harmless", "but": _Touches(marker)}


def a_function():
    return os.system


def pool_device(pool) -> str:
    return pool.device


# --- the tests ---

def test_secrets_never_reach_the_model_process(process, monkeypatch):
    secrets = {"AWS_SECRET_ACCESS_KEY": "s1", "AWS_ACCESS_KEY_ID": "s2", "PREFECT_API_KEY": "s3",
               "PREFECT_API_URL": "http://server", "HF_TOKEN": "s4", "ACCELFLOW_DB_PASSWORD": "s5",
               "FSSPEC_S3_SECRET": "s6", "SERVICE_KEY": "s7", "SSH_AUTH_SOCK": "/tmp/agent"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen = process.call(environment)
    assert not set(secrets) & set(seen), set(secrets) & set(seen)
    assert seen["OMP_NUM_THREADS"] == "2" and seen["PATH"] == os.environ["PATH"]


def test_what_counts_as_a_secret():
    assert all(map(is_secret_name, ["AWS_REGION", "aws_secret_access_key", "GITHUB_TOKEN", "DB_PASSWORD",
                                    "GOOGLE_APPLICATION_CREDENTIALS", "OPENAI_API_KEY", "S3_ENDPOINT"]))
    assert not any(map(is_secret_name, ["PATH", "HOME", "LANG", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                                        "ACCELFLOW_CACHE_ROOT", "TMPDIR", "KEYBOARD"]))
    assert child_environment({"PATH": "/bin", "AWS_PROFILE": "x"}) == {"PATH": "/bin"}


def test_the_model_process_works_in_the_scratch_folder(process, tmp_path):
    assert process.call(os.getcwd) == str(tmp_path / "work")
    assert process.call(os.getpid) != os.getpid()


def test_the_model_process_has_no_network(process):
    if not no_network_prefix():
        pytest.skip("this user may not create a network namespace (unshare --net)")
    assert process.network_isolated and process.call(interfaces) == ["lo"]
    with pytest.raises(OSError):
        process.call(socket.create_connection, ("10.255.255.1", 80), 2)


def test_errors_keep_their_class_when_they_are_accelflows(process):
    from accelflow.core import tensor_info

    with pytest.raises(SpecError, match="bad"):
        process.call(tensor_info.parse, ["bad"])
    with pytest.raises(ZeroDivisionError, match="(?s)by zero.*in the model process"):
        process.call(divmod, 1, 0)
    assert process.call(divmod, 7, 2) == (3, 1)  # the process lives on after a failed step


def test_progress_callbacks_are_called_in_the_flows_process(process):
    seen = []
    assert process.call(report_progress, lambda i, n, label: seen.append((i, n, label))) == "done"
    assert seen == [(1, 2, "min"), (2, 2, "max")]


def test_the_process_stands_for_the_childs_runner_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT)
    with ModelProcess(str(tmp_path / "work"), device="cuda") as process:
        assert process.call(pool_device, process) == "cuda"


def test_only_plain_data_comes_back(process, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="not plain data"):
        process.call(hostile_result, str(marker))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        process.call(a_function)
    arrays = process.call(np.arange, 4)  # numpy arrays are data
    assert arrays.tolist() == [0, 1, 2, 3]


def test_a_time_limit_kills_native_code(process):
    started = time.monotonic()
    with pytest.raises(TimeLimitReached), StopWatcher(None, interval=0.2, time_limit=1):
        process.call(time.sleep, 600)  # C code: only killing the process ends it
    assert time.monotonic() - started < 30
    assert process.call(os.getcwd)  # a fresh process serves the next step


def test_the_memory_limit_caps_the_model_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT)
    with ModelProcess(str(tmp_path / "work"), memory_gib=1) as process:
        with pytest.raises(MemoryError):
            process.call(allocate, 2)
        assert process.call(allocate, 0.1) == int(0.1 * (1 << 30))


def test_a_crash_is_an_error_naming_the_step(process):
    with pytest.raises(ModelProcessError, match="killed by SIGABRT during 'abort'"):
        process.call(os.abort)


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_nothing_in_the_scratch_folder_is_importable(process, tmp_path):
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "work" / "planted_module.py").write_text("open('pwned', 'w')\n")
    assert process.call(importable, "planted_module") is False
    assert process.call(importable, "json") is True
