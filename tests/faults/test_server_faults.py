"""A real `accelflow server` under faults and load: a task process killed with SIGKILL in the
middle of an engine build, and eight tasks submitted at once to a concurrency limit of two."""

from __future__ import annotations

import glob
import json
import os
import signal
import time

import pytest

from tests import modelzoo
from tests.flows.service.test_server import service  # noqa: F401 - this module's own `accelflow server`

FAST = ["--draws", "1", "--bench-seconds", "0.3"]
CNN_INFO = ["-t", "input_0:float(1*3*16*16,2*3*16*16)"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, service):
    models = tmp_path_factory.mktemp("models")
    cnn = modelzoo.tiny_cnn_torchscript(str(models))
    deep = modelzoo.deep_mlp_torchscript(str(models))
    root = str(tmp_path_factory.mktemp("repo"))
    service.cli("repo", "add", "deep", "v1", deep, "--source", "uploaded", "--repo", root)
    for n in range(1, 9):
        service.cli("repo", "add", "cnn", f"v{n}", cnn, "--source", "uploaded", "--repo", root)
    return root


def _building_task_pid(out: str, timeout: float = 240) -> tuple[int, str]:
    """The pid holding a staging folder's lock once an engine build has started in it, and
    that folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for candidates in glob.glob(os.path.join(out, ".partial-*", "work", "candidates", "*")):
            staging = candidates.split(os.sep + "work" + os.sep)[0]
            return _lock_holder(staging + ".lock"), staging
        time.sleep(0.01)
    raise AssertionError(f"no engine build started under {out}")


def _lock_holder(lock_path: str) -> int:
    """The process with `lock_path` open (the task holds its staging lock while it lives)."""
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == lock_path:
                return int(fd.split("/")[2])
        except OSError:
            continue
    raise AssertionError(f"no process holds {lock_path}")


def test_task_killed_mid_build_ends_failed_and_retries_clean(service, repo, tmp_path):
    out = str(tmp_path / "out")
    service.cli("optimize", "deep@v1", "-t", "input_0:float(1*384,8*384)", *FAST, "--repo", repo,
                "--output", out, "--name", "killed", "--submit")
    pid, staging = _building_task_pid(out)
    os.kill(pid, signal.SIGKILL)
    rows = service.wait_for(["killed"], timeout=120)
    assert rows["killed"]["state"] == "failed"  # crashed, not left "accelerating"
    show = json.loads(service.cli("tasks", "show", "killed", "--json").stdout)
    assert show["state"] == "failed"
    leftover = os.path.basename(staging)
    assert sorted(os.listdir(out)) == [leftover, leftover + ".lock"]  # the dead task's staging, no result

    retried = json.loads(service.cli("tasks", "retry", "killed", "--json").stdout)[0]["name"]
    rows = service.wait_for([retried], timeout=300)
    assert rows[retried]["state"] == "accelerated"
    assert sorted(os.listdir(out)) == [retried.replace("#", "-")]  # the leftover went with the retry
    report = json.load(open(os.path.join(out, retried, "report.json")))
    assert report["accuracy"]["passed"] and report["speedup"] > 0


def test_eight_tasks_at_once_under_a_limit_of_two(service, repo, tmp_path):
    out = str(tmp_path / "out")
    refs = "cnn@" + ",".join(f"v{n}" for n in range(1, 9))
    submitted = json.loads(service.cli("optimize", refs, *CNN_INFO, *FAST, "--repo", repo, "--output", out,
                                       "--name", "load", "--submit", "--json").stdout)
    names = [t["name"] for t in submitted]
    assert len(names) == 8
    list_seconds, running_counts = [], []
    deadline = time.monotonic() + 900
    while True:
        started = time.monotonic()
        rows = service.tasks()  # `accelflow tasks list --json`, a new CLI process each time
        list_seconds.append(time.monotonic() - started)
        running_counts.append(sum(rows[n]["state"] == "accelerating" for n in names if n in rows))
        if all(rows[n]["state"] in ("accelerated", "failed", "stopped") for n in names):
            break
        assert time.monotonic() < deadline, rows
    assert all(rows[n]["state"] == "accelerated" for n in names), rows
    assert max(running_counts) <= 2 and max(running_counts) == 2
    for name in names:
        report = json.load(open(os.path.join(out, name.replace("#", "-"), "report.json")))
        assert report["task_name"] == name and report["accuracy"]["passed"]
        assert report["version"] == f"v{name.split('-v')[1].split('#')[0]}"
    print(f"tasks list: {len(list_seconds)} calls, max {max(list_seconds):.2f} s, "
          f"median {sorted(list_seconds)[len(list_seconds) // 2]:.2f} s")
