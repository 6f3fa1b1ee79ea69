"""How fast the service answers a person: figures the tests no longer assert (timings flake
in tests; they belong here).

    python -m bench.service_latency [--tasks 8]

On a fresh `accelflow server` (limit 2) it prints:
- `accelflow tasks list` latency (a new CLI process each call) while TASKS small tasks run;
- `accelflow tasks stop` latency of a task in its benchmark step;
- how long `accelflow optimize` takes to refuse tensor information of absurd size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tests import modelzoo
from tests.flows.service.test_server import Service

INFO = ["-t", "input_0:float(1*3*16*16,2*3*16*16)"]
FAST = ["--draws", "1", "--bench-seconds", "0.3"]


def _repo(service: Service, work: str, versions: int) -> str:
    models, root = os.path.join(work, "models"), os.path.join(work, "repo")
    os.makedirs(models)
    cnn, slow = modelzoo.tiny_cnn_torchscript(models), modelzoo.slow_torchscript(models)
    for n in range(1, versions + 1):
        service.cli("repo", "add", "cnn", f"v{n}", cnn, "--source", "uploaded", "--repo", root)
    service.cli("repo", "add", "slow", "v1", slow, "--source", "uploaded", "--repo", root)
    return root


def list_latency_under_load(service: Service, repo: str, out: str, tasks: int) -> list[float]:
    refs = "cnn@" + ",".join(f"v{n}" for n in range(1, tasks + 1))
    service.cli("optimize", refs, *INFO, *FAST, "--repo", repo, "--output", out, "--name", "load", "--submit")
    seconds = []
    while True:
        started = time.monotonic()
        rows = service.tasks()
        seconds.append(time.monotonic() - started)
        mine = [r for n, r in rows.items() if n.startswith("load-")]
        if len(mine) == tasks and all(r["state"] in ("accelerated", "failed", "stopped") for r in mine):
            return seconds


def stop_latency(service: Service, repo: str, out: str) -> float:
    service.cli("optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo, "--output", out,
                "--bench-seconds", "120", "--name", "to-stop", "--submit")
    while service.tasks()["to-stop"]["progress"] < 60:  # in its benchmark step
        time.sleep(0.5)
    started = time.monotonic()
    service.cli("tasks", "stop", "to-stop")
    return time.monotonic() - started


def refusal_seconds(work: str) -> float:
    model = modelzoo.tiny_cnn_torchscript(os.path.join(work, "models"))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "accelflow", "optimize", model, "-t",
                           "input_0:float(100000*100000*100000)", "--output", os.path.join(work, "refused")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="accelflow-bench-service-")
    os.makedirs(os.path.join(work, "home"))
    service = Service(os.path.join(work, "home"), "http://127.0.0.1:9", work)
    try:
        repo = _repo(service, work, args.tasks)
        seconds = list_latency_under_load(service, repo, os.path.join(work, "out"), args.tasks)
        print(f"tasks list under load ({args.tasks} tasks, limit 2): {len(seconds)} calls, median "
              f"{statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
        print(f"tasks stop of a benchmarking task: {stop_latency(service, repo, os.path.join(work, 'out')):.2f} s")
    finally:
        service.stop()
    print(f"refusal of tensor information of 10^15 elements: {refusal_seconds(work):.2f} s (whole CLI call)")


if __name__ == "__main__":
    main()
