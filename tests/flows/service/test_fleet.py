"""accelflow as a fleet on one box: machines that share no disk, only a Prefect server and S3.

- a real `prefect server start` in a subprocess (its own home);
- workers started with `accelflow worker --pool cpu`, each with its own HOME, working
  directory and TMPDIR; their code comes from prefect.yaml's git_clone pull step, cloned
  from a snapshot repository of this working tree;
- a moto S3 server as the only shared storage: the model repository and the results;
- the client (its own HOME and working directory) deploys, submits, reads, saves and deletes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest

from tests import modelzoo
from tests.conftest import S3_TEST_KEY, S3_TEST_SECRET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INFO = ["-t", "input_0:float(1*3*16*16,2*3*16*16)"]
FAST = ["--draws", "1", "--bench-seconds", "0.3"]
LOST_RUN_GUARD = 300.0  # against a hang; the measured time is printed (lost-run detection: ~90 s)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_environment() -> dict:
    """This process's environment without anything that would point at a shared path or server."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "AWS_", "ACCELFLOW_")) and k not in ("HOME", "TMPDIR")}


class Machine:
    """A process environment of its own: HOME, working directory and TMPDIR, nothing shared."""

    def __init__(self, base, name: str, shared: dict):
        self.name = name
        self.home, self.cwd, self.tmp = (str(base / name / d) for d in ("home", "work", "tmp"))
        for folder in (self.home, self.cwd, self.tmp):
            os.makedirs(folder)
        self.env = dict(_clean_environment(), HOME=self.home, TMPDIR=self.tmp,
                        PREFECT_HOME=os.path.join(self.home, ".prefect"), **shared)

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "accelflow", *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"[{self.name}] accelflow {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen:
        log = open(os.path.join(self.home, "process.log"), "ab")
        return subprocess.Popen([sys.executable, "-m", "accelflow", *args], cwd=self.cwd, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        with open(os.path.join(self.home, "process.log"), errors="replace") as f:
            return f.read()[-4000:]


def _code_snapshot(dest) -> str:
    """A git repository holding this working tree (committed or not): what workers clone."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel))
    git = ["git", "-c", "user.name=accelflow-tests", "-c", "user.email=tests@accelflow"]
    subprocess.run(["git", "init", "-q", "-b", "snapshot"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
    return f"file://{dest}"


def _start_prefect_server(home: str, port: int) -> subprocess.Popen:
    env = dict(_clean_environment(), PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=open(os.path.join(home, "server.log"), "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, open(os.path.join(home, "server.log")).read()[-3000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2).close()
            return server
        except OSError:
            time.sleep(0.5)
    raise AssertionError("prefect server start did not answer")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once: the machine is gone."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, ValueError, IndexError):
            continue
    doomed, queue = [], [pid]
    while queue:
        current = queue.pop()
        doomed.append(current)
        queue.extend(children.get(current, []))
    for victim in doomed:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Fleet:
    def __init__(self, base, s3_endpoint: str):
        import boto3

        self.base = base
        self.bucket = f"fleet-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_TEST_KEY,
                     aws_secret_access_key=S3_TEST_SECRET, region_name="us-east-1").create_bucket(Bucket=self.bucket)
        self.repo, self.results = f"s3://{self.bucket}/repo", f"s3://{self.bucket}/results"
        port = _free_port()
        os.makedirs(base / "server")
        self.server = _start_prefect_server(str(base / "server"), port)
        self.shared = {
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "AWS_ACCESS_KEY_ID": S3_TEST_KEY, "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "PREFECT_WORKER_QUERY_SECONDS": "2",  # a submitted task starts within seconds
        }
        self.client = Machine(base, "client", self.shared)
        self.code_url = _code_snapshot(str(base / "code"))
        self.workers: list[tuple[Machine, subprocess.Popen]] = []

    def start_worker(self, name: str) -> Machine:
        machine = Machine(self.base, name, self.shared)
        self.workers.append((machine, machine.start("worker", "--pool", "cpu")))
        return machine

    def tasks(self) -> dict:
        return {r["name"]: r for r in json.loads(self.client.cli("tasks", "list", "--json").stdout)}

    def wait_for(self, names, states=("accelerated", "failed", "stopped"), timeout: float = 600.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.tasks()
            if all(n in rows and rows[n]["state"] in states for n in names):
                return rows
            logs = "\n".join(f"--- {m.name}:\n{m.log()}" for m, _ in self.workers)
            assert time.monotonic() < deadline, f"timed out waiting for {names}: {rows}\n{logs}"
            time.sleep(2.0)

    def assert_accelerated(self, rows: dict, names) -> None:
        failed = {n: json.loads(self.client.cli("tasks", "show", n, "--json").stdout).get("reason")
                  for n in names if rows[n]["state"] != "accelerated"}
        assert not failed, failed

    def result_folders(self) -> dict[str, set[str]]:
        """Each folder under the results location, with the names of its files."""
        from accelflow.storage.store import Store

        store = Store(self.results, storage_options={"key": S3_TEST_KEY, "secret": S3_TEST_SECRET, "client_kwargs": {
            "endpoint_url": self.shared["AWS_ENDPOINT_URL_S3"], "region_name": "us-east-1"}})
        return {name: set(store.files(store.path(name))) for name in store.children(store.root)}

    def close(self) -> None:
        for _, process in self.workers:
            _kill_tree(process.pid)
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_tree(self.server.pid)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, s3_server):
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), s3_server.endpoint_url)
    client = fleet.client
    deployed = client.cli("deploy", "--git-url", fleet.code_url, "--branch", "snapshot")
    assert "lost-run detection: created" in deployed.stdout
    client.cli("--debug", "repo", "add", "cnn", "v1", _client_model(client), "--source", "uploaded", "--repo", fleet.repo)
    client.cli("repo", "add", "deep", "v1", modelzoo.deep_mlp_torchscript(os.path.join(client.cwd, "models")),
               "--source", "uploaded", "--repo", fleet.repo)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "prefect"), "variable", "set",
                    "accelflow-results", fleet.results], env=client.env, cwd=client.cwd, check=True,
                   capture_output=True)
    fleet.start_worker("worker-1")
    yield fleet
    fleet.close()


def _client_model(client: Machine) -> str:
    folder = os.path.join(client.cwd, "models")
    os.makedirs(folder, exist_ok=True)
    return modelzoo.tiny_cnn_torchscript(folder)


def test_a_request_for_two_models_runs_on_a_worker_elsewhere_and_lands_in_s3(fleet):
    client = fleet.client
    local_model = os.path.join(client.cwd, "models", "cnn.pt")  # only on the client: uploaded on submit
    samples = os.path.join(client.cwd, "samples.npz")
    np.savez(samples, input_0=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    submitted = json.loads(client.cli("optimize", "cnn@v1", local_model, *INFO, *FAST, "--repo", fleet.repo,
                                      "--samples", samples, "--name", "fleet", "--submit", "--json").stdout)
    names = [t["name"] for t in submitted]
    assert names == ["fleet-cnn-v1#1", "fleet-cnn-local#2"]
    fleet.assert_accelerated(fleet.wait_for(names), names)
    folders = fleet.result_folders()
    for name in names:  # published in S3, manifest included
        assert {"accelflow-result.json", "report.json", "model/manifest.json"} <= folders[name.replace("#", "-")]

    shown = client.cli("tasks", "show", names[0])
    assert "speed-up" in shown.stdout and f"{fleet.results}/fleet-cnn-v1-1" in shown.stdout
    details = json.loads(client.cli("tasks", "show", names[1], "--json").stdout)
    assert details["settings"]["model"].startswith(f"{fleet.results}/.inputs/")  # the upload, not a client path
    assert details["settings"]["samples"].startswith(f"{fleet.results}/.inputs/")
    assert details["report"]["accuracy"]["passed"]

    saved = json.loads(client.cli("tasks", "save", names[0], "--json").stdout)
    assert saved["home"].startswith(f"{fleet.repo}/models/cnn-optimized/")
    assert f"m-{saved['model_id']}" in fleet.result_folders()  # the saved copy under the output too

    client.cli("tasks", "delete", names[1])
    assert names[1].replace("#", "-") not in fleet.result_folders() and names[1] not in fleet.tasks()


def test_a_result_in_s3_loads_on_the_client(fleet, monkeypatch):
    import accelflow

    for key, value in fleet.shared.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ACCELFLOW_RESULT_CACHE", os.path.join(fleet.client.home, "cache"))
    model = accelflow.load(f"{fleet.results}/fleet-cnn-v1-1")
    out = model(np.zeros((2, 3, 16, 16), np.float32))
    assert np.asarray(out).shape[0] == 2


def test_a_dead_worker_leaves_a_failed_task_that_another_worker_retries(fleet):
    client = fleet.client
    worker = fleet.workers[0][0]
    client.cli("optimize", "deep@v1", "-t", "input_0:float(1*384,8*384)", *FAST, "--repo", fleet.repo,
               "--name", "orphan", "--submit")
    _wait_for_a_build(worker)
    killed_at = time.monotonic()
    _kill_tree(fleet.workers[0][1].pid)  # the worker, its flow-run process and all: a lost machine
    rows = fleet.wait_for(["orphan"], timeout=LOST_RUN_GUARD)
    print(f"\nworker SIGKILL -> task failed: {time.monotonic() - killed_at:.0f} s")
    assert rows["orphan"]["state"] == "failed" and rows["orphan"]["prefect_state"] == "Crashed"
    reason = json.loads(client.cli("tasks", "show", "orphan", "--json").stdout)["reason"]
    assert "no heartbeat" in reason and "accelflow tasks retry" in reason

    fleet.start_worker("worker-2")
    retried = json.loads(client.cli("tasks", "retry", "orphan", "--json").stdout)[0]["name"]
    fleet.assert_accelerated(fleet.wait_for([retried]), [retried])
    results = {name: files for name, files in fleet.result_folders().items()  # not uploads or saved copies
               if name != ".inputs" and not name.startswith("m-")}
    unfinished = {name: files for name, files in results.items() if "accelflow-result.json" not in files}
    assert unfinished == {}  # nothing half-written in S3


def _wait_for_a_build(worker: Machine, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pattern = os.path.join(worker.tmp, "accelflow-scratch", ".partial-*", "work", "candidates", "*")
    while not glob.glob(pattern):
        assert time.monotonic() < deadline, f"no engine build started on {worker.name}:\n{worker.log()}"
        time.sleep(0.05)
