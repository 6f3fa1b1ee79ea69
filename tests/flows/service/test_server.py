"""The task list against a real `accelflow server` (Prefect server + runner) started here.

Every verb goes through the real command line in a subprocess, as a user types it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests import modelzoo
from tests.conftest import S3_TEST_KEY, S3_TEST_SECRET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INFO = ["-t", "input_0:float(1*3*16*16,2*3*16*16)"]
FAST = ["--draws", "1", "--bench-seconds", "0.3"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`accelflow server` in a subprocess, and the environment to talk to it."""

    def __init__(self, home: str, s3_endpoint: str, results_root: str):
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = dict(
            os.environ, PREFECT_HOME=home, PREFECT_API_URL=self.api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
            AWS_ACCESS_KEY_ID=S3_TEST_KEY, AWS_SECRET_ACCESS_KEY=S3_TEST_SECRET, AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=s3_endpoint, AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
            ACCELFLOW_RESULT_ROOTS=results_root,  # the tests' outputs: where `tasks delete` may remove results
        )
        server_env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "accelflow", "server", "--port", str(self.port), "--limit", "2"],
            cwd=ROOT, env=server_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.banner = self._read_banner()

    def _read_banner(self, timeout: float = 180.0) -> str:
        lines, box = [], {}
        reader = threading.Thread(target=lambda: box.update(done=self._collect(lines)), daemon=True)
        reader.start()
        reader.join(timeout)
        text = "".join(lines)
        assert box.get("done"), f"accelflow server did not become ready:\n{text}"
        return text

    def _collect(self, lines: list) -> bool:
        for line in self.process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                return True
        return False

    def cli(self, *args: str, check: bool = True, timeout: float = 600, env: dict | None = None):
        proc = subprocess.run([sys.executable, "-m", "accelflow", *args], cwd=ROOT, env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"accelflow {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def tasks(self) -> dict:
        return {row["name"]: row for row in json.loads(self.cli("tasks", "list", "--json").stdout)}

    def wait_for(self, names, states=("accelerated", "failed", "stopped"), timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.tasks()
            if all(n in rows and rows[n]["state"] in states for n in names):
                return rows
            assert time.monotonic() < deadline, f"timed out waiting for {names}: {rows}"
            time.sleep(1.0)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=90)


@pytest.fixture(scope="module")
def service(tmp_path_factory, s3_server):
    svc = Service(str(tmp_path_factory.mktemp("prefect-home")), s3_server.endpoint_url,
                  str(tmp_path_factory.getbasetemp()))
    yield svc
    if svc.process.poll() is None:
        svc.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, service):
    """A local repository with cnn@v1, cnn@v2 and other@v3, and a slow model."""
    models = tmp_path_factory.mktemp("models")
    modelzoo.tiny_cnn_torchscript(str(models))
    modelzoo.slow_torchscript(str(models))
    root = str(tmp_path_factory.mktemp("repo"))
    for name, version in (("cnn", "v1"), ("cnn", "v2"), ("other", "v3")):
        service.cli("repo", "add", name, version, str(models / "cnn.pt"), "--source", "uploaded", "--repo", root)
    service.cli("repo", "add", "slow", "v1", str(models / "slow.pt"), "--source", "uploaded", "--repo", root)
    return root


def test_banner_names_the_ui_and_the_api_url(service):
    assert f"http://127.0.0.1:{service.port}" in service.banner
    assert f"export PREFECT_API_URL={service.api_url}" in service.banner


def test_the_server_detects_lost_runs(service):
    """Prefect's zombie-flow automation is there (the runner creates it; tests/flows/service/test_fleet.py
    kills a worker and sees it fire)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        found = httpx.post(f"{service.api_url}/automations/filter", json={}).raise_for_status().json()
        names = [a["name"] for a in found]
        if "accelflow: crash runs without heartbeats" in names or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert names.count("accelflow: crash runs without heartbeats") == 1


def test_fan_out_names_states_and_parent_summary(service, repo, tmp_path):
    out = service.cli("optimize", "cnn@v1,v2", "other@v3", *INFO, *FAST, "--repo", repo, "--output", str(tmp_path),
                      "--name", "job", "--tag", "fanout", "--submit", "--json")
    names = [t["name"] for t in json.loads(out.stdout)]
    assert names == ["job-cnn-v1#1", "job-cnn-v2#2", "job-other-v3#3"]
    rows = service.wait_for(names)
    for name in names:
        row = rows[name]
        assert row["state"] == "accelerated" and row["progress"] == 100.0 and row["speedup"] > 0
        assert row["tags"] == ["fanout"] and row["level"] == "fp16" and row["device"] == "cpu"
    parent = json.loads(service.cli("tasks", "show", "job", "--json").stdout)
    assert sorted(c["name"] for c in parent["children"]) == names
    assert "job" not in rows  # the parent is not a task of its own
    filtered = json.loads(service.cli("tasks", "list", "--tag", "fanout", "--state", "accelerated", "--json").stdout)
    assert {"id", "name", "state", "progress", "speedup", "tags"} <= set(filtered[0])
    assert sorted(r["name"] for r in filtered) == names
    _check_parent_table_and_states(service, names)


def _check_parent_table_and_states(service, names):
    """The parent's table shows how its tasks ended (they wrote it as they ended), each task's
    final state is named with its speed-up and its message is the headline."""
    import httpx

    api = httpx.Client(base_url=service.api_url + "/")
    runs = {r["name"]: r for r in api.post("flow_runs/filter", json={"flow_runs": {"name": {"any_": names}}}).json()}
    for name in names:
        message = runs[name]["state"]["message"]
        assert re.fullmatch(r"\d+\.\d\dx faster · \S+ \S+ · accuracy passed", message), message
    parent_id = json.loads(service.cli("tasks", "show", "job", "--json").stdout)["id"]
    tables = api.post("artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [parent_id]}}}).json()
    table = next(a for a in tables if a["key"].startswith("job-tasks-"))
    rows = {r["name"]: r for r in json.loads(table["data"])}
    assert set(rows) == set(names)
    for name in names:
        assert rows[name]["state"] == runs[name]["state"]["name"] == f"Accelerated {rows[name]['speedup']:.2f}x"
        assert rows[name]["reason"] == "" and rows[name]["engine"] in runs[name]["state"]["message"]


def test_runner_runs_two_tasks_side_by_side_and_queues_the_third(service, repo, tmp_path):
    """Up to the runner's limit of 2 run at once. Long tasks, so the overlap does not hang on
    how fast a loaded machine starts processes (3-second tasks once ran one after another)."""
    names = ["side-1", "side-2", "side-3"]
    for name in names:
        service.cli("optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo, "--output", str(tmp_path),
                    "--bench-seconds", "120", "--name", name, "--submit")
    deadline = time.monotonic() + 240
    while True:
        states = {name: service.tasks()[name]["state"] for name in names}
        if list(states.values()).count("accelerating") == 2:
            break
        assert time.monotonic() < deadline, f"never two tasks at once: {states}"
        time.sleep(1)
    assert list(states.values()).count("starting") == 1, states  # the third waits for a free slot
    for name in names:
        service.cli("tasks", "stop", name, timeout=120)
    assert {service.tasks()[name]["state"] for name in names} == {"stopped"}


def test_show_has_settings_history_and_report(service, repo, tmp_path):
    service.cli("optimize", "cnn@v1", *INFO, *FAST, "--repo", repo, "--output", str(tmp_path), "--submit")
    service.wait_for(["cnn-v1-fp16"])
    details = json.loads(service.cli("tasks", "show", "cnn-v1-fp16", "--json").stdout)
    assert details["settings"]["model"] == "cnn@v1" and details["settings"]["repo"] == repo
    assert [h["state"] for h in details["history"]][-1] == "accelerated"
    assert details["history"][0]["state"] == "starting"
    assert details["report"]["engine"] and details["report"]["speedup"] > 0
    text = service.cli("tasks", "show", "cnn-v1-fp16").stdout
    assert "speed-up" in text and "history:" in text


def _run_pids(run_id: str) -> list[int]:
    """Processes whose environment names this flow run (the runner's child and its children)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if run_id.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_stop_a_running_task_within_ten_seconds(service, repo, tmp_path):
    out = tmp_path / "out"
    submitted = json.loads(service.cli("optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo,
                                       "--output", str(out), "--bench-seconds", "120", "--submit", "--json").stdout)
    run_id = submitted[0]["id"]
    deadline = time.monotonic() + 240
    while service.tasks()["slow-v1-fp16"]["progress"] < 60:  # benchmarking: the long step
        assert time.monotonic() < deadline, service.tasks()
        time.sleep(1)
    assert _run_pids(run_id), "the task's process should be running"
    stopped = service.cli("tasks", "stop", "slow-v1-fp16", timeout=120)  # a guard; bench/service_latency.py times it
    assert "stopped" in stopped.stdout
    assert service.tasks()["slow-v1-fp16"]["state"] == "stopped"
    time.sleep(2)
    assert _run_pids(run_id) == []
    assert not out.exists() or os.listdir(out) == []
    refused = service.cli("tasks", "stop", "slow-v1-fp16", check=False)
    assert refused.returncode == 2 and "only starting or accelerating tasks can be stopped" in refused.stderr


def test_stop_an_inline_run(service, repo, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "accelflow", "optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo,
            "--output", str(out), "--bench-seconds", "120", "--name", "inline-slow"]
    inline = subprocess.Popen(args, cwd=ROOT, env=service.env, stderr=subprocess.PIPE, text=True)
    for line in inline.stderr:
        if "[6/8] benchmark ..." in line:
            break
    service.cli("tasks", "stop", "inline-slow")
    inline.wait(timeout=120)  # a guard against a hang: it would otherwise benchmark for 120 s per point
    assert inline.returncode == 3  # stopped
    assert service.tasks()["inline-slow"]["state"] == "stopped"
    assert not out.exists() or os.listdir(out) == []


def test_failed_task_is_re_accelerated_with_corrected_tensor_information(service, repo, tmp_path):
    service.cli("optimize", "other@v3", "-t", "input_0:float(1*3*16)", *FAST, "--repo", repo,
                "--output", str(tmp_path), "--name", "wrong-rank", "--submit")
    rows = service.wait_for(["wrong-rank"])
    assert rows["wrong-rank"]["state"] == "failed"
    details = json.loads(service.cli("tasks", "show", "wrong-rank", "--json").stdout)
    assert details["reason"].startswith("the model fails on inputs made from the tensor information "
                                        "(input_0 (1, 3, 16)")  # the error's message, as the CLI prints it
    saved = service.cli("tasks", "save", "wrong-rank", check=False)
    assert saved.returncode == 2 and "only accelerated tasks can be saved" in saved.stderr
    retried = json.loads(service.cli("tasks", "retry", "wrong-rank", *INFO, "--json").stdout)
    assert retried[0]["name"] == "wrong-rank-retry1"
    rows = service.wait_for(["wrong-rank-retry1"])
    assert rows["wrong-rank-retry1"]["state"] == "accelerated"
    retry = json.loads(service.cli("tasks", "show", "wrong-rank-retry1", "--json").stdout)
    assert retry["retry_of"] == details["id"] and f"retry-of:{details['id']}" in retry["tags"]
    shown = service.cli("tasks", "show", "wrong-rank-retry1").stdout
    assert f"re-accelerates: {details['id']}" in shown
    assert retry["settings"]["tensor_info"] == ["input_0:float32(1*3*16*16,2*3*16*16)"]


def test_a_run_made_in_the_ui_run_form_is_named_like_the_cli_names_it(service, repo, tmp_path):
    """The UI's run form prefills a random run name and posts the form's values (flows/run_name.py):
    the run is renamed to the task's name, MODEL-LEVEL here, as the CLI names it."""
    import httpx

    deployment = httpx.get(f"{service.api_url}/deployments/name/optimize/cpu").json()
    form = {"model": "cnn@v2", "repo": repo, "tensor_info": [INFO[1]], "output": str(tmp_path), "level": "lossless",
            "device": "cpu", "engine": "auto", "qat": False, "trust_model_code": False, "steps": 20, "guidance": 7.5,
            "draws": 1, "bench_seconds": 0.3, "tags": [], "int_ranges": {}}
    created = httpx.post(f"{service.api_url}/deployments/{deployment['id']}/create_flow_run",
                         json={"name": "psi2-hara-n", "parameters": {"request": form},
                               "enforce_parameter_schema": True})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    row = service.wait_for(["cnn-v2-lossless"])["cnn-v2-lossless"]
    assert row["state"] == "accelerated" and row["id"] == run_id
    assert httpx.get(f"{service.api_url}/flow_runs/{run_id}").json()["name"] == "cnn-v2-lossless"
    assert os.listdir(tmp_path) == ["cnn-v2-lossless"]  # the result folder is named so too


def _accelerated(service, repo, out, name, model="cnn@v2", repo_args=None):
    service.cli("optimize", model, *INFO, *FAST, *(repo_args or ["--repo", repo]), "--output", str(out),
                "--name", name, "--submit")
    return service.wait_for([name])[name]


def test_save_to_a_local_repository_with_the_layout(service, repo, tmp_path):
    from accelflow.storage.repository import ModelRepository

    _accelerated(service, repo, tmp_path, "to-save")
    entry = json.loads(service.cli("tasks", "save", "to-save", "--json").stdout)
    assert entry["model"] == "cnn-optimized" and entry["version"] == "v2-to-save"
    assert entry["extra"]["original_model"] == "cnn" and entry["extra"]["original_version"] == "v2"
    assert entry["extra"]["task_name"] == "to-save"
    saved = tmp_path / f"m-{entry['model_id']}" / f"mv-{entry['id']}"
    assert sorted(os.listdir(saved)) == ["cnn.pt", "model", "report.html", "report.json", "report.md"]
    assert "manifest.json" in os.listdir(saved / "model")
    assert ModelRepository(repo).show("cnn-optimized").source == "optimized"
    again = service.cli("tasks", "save", "to-save", check=False)
    assert again.returncode == 2 and "already saved" in again.stderr


def test_two_saves_at_once_both_land(service, repo, tmp_path):
    from accelflow.storage.repository import ModelRepository

    for name in ("twin-a", "twin-b"):
        service.cli("optimize", "other@v3", *INFO, *FAST, "--repo", repo, "--output", str(tmp_path),
                    "--name", name, "--submit")
    service.wait_for(["twin-a", "twin-b"])
    procs = [subprocess.Popen([sys.executable, "-m", "accelflow", "tasks", "save", n, "--json"], cwd=ROOT,
                              env=service.env, stdout=subprocess.PIPE, text=True) for n in ("twin-a", "twin-b")]
    entries = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    versions = ModelRepository(repo).show("other-optimized").versions
    assert {"v3-twin-a", "v3-twin-b"} <= set(versions)
    for entry in entries:
        folder = tmp_path / f"m-{entry['model_id']}" / f"mv-{entry['id']}"
        assert {"cnn.pt", "model", "report.json"} <= set(os.listdir(folder))


def test_save_to_an_s3_repository(service, s3_repo_uri, tmp_path):
    from accelflow.storage.repository import ModelRepository

    models = tmp_path / "models"
    models.mkdir()
    ModelRepository(s3_repo_uri).add("s3cnn", "v1", modelzoo.tiny_cnn_torchscript(str(models)),
                                     source="uploaded", format="torchscript")
    out = tmp_path / "out"
    _accelerated(service, None, out, "s3-task", model="s3cnn@v1", repo_args=["--repo", s3_repo_uri])
    entry = json.loads(service.cli("tasks", "save", "s3-task", "--json").stdout)
    repository = ModelRepository(s3_repo_uri)
    version = repository.version("s3cnn-optimized", "v1-s3-task")
    assert version.home.startswith("s3://") and "model/manifest.json" in version.files
    assert sorted(os.listdir(out / f"m-{entry['model_id']}" / f"mv-{entry['id']}")) == [
        "cnn.pt", "model", "report.html", "report.json", "report.md"]
    for path in _all_files(str(out)):
        assert S3_TEST_SECRET.encode() not in open(path, "rb").read()


def _all_files(folder: str) -> list[str]:
    return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files]


def test_tags_delete_and_refusals(service, repo, tmp_path):
    row = _accelerated(service, repo, tmp_path, "tagged")
    assert service.cli("tasks", "tag", "tagged", "--add", "keep", "--add", "x").stdout.strip() == "keep, x"
    assert service.cli("tasks", "tag", row["id"], "--remove", "x").stdout.strip() == "keep"
    assert [r["name"] for r in json.loads(service.cli("tasks", "list", "--tag", "keep", "--json").stdout)] == ["tagged"]
    folder = tmp_path / "tagged"
    assert folder.is_dir()
    service.cli("tasks", "delete", "tagged")
    assert not folder.exists() and "tagged" not in service.tasks()
    _accelerated(service, repo, tmp_path / "elsewhere", "untrusted")
    outside = service.cli("tasks", "delete", "untrusted", check=False, env={"ACCELFLOW_RESULT_ROOTS": "/srv/none"})
    assert outside.returncode == 2 and "not under a configured results location" in outside.stderr
    assert (tmp_path / "elsewhere" / "untrusted").is_dir() and "untrusted" in service.tasks()
    service.cli("tasks", "delete", "untrusted", "--keep-files", env={"ACCELFLOW_RESULT_ROOTS": "/srv/none"})
    assert (tmp_path / "elsewhere" / "untrusted").is_dir() and "untrusted" not in service.tasks()
    unknown = service.cli("tasks", "show", "no-such-task", check=False)
    assert unknown.returncode == 2 and "no task named 'no-such-task'" in unknown.stderr


def test_ambiguous_name_lists_the_candidates(service, repo, tmp_path):
    for _ in range(2):
        service.cli("optimize", "cnn@v1", *INFO, *FAST, "--repo", repo, "--output", str(tmp_path),
                    "--name", "twice", "--submit")
    proc = service.cli("tasks", "show", "twice", check=False)
    assert proc.returncode == 2 and "2 tasks are named 'twice'" in proc.stderr
    ids = [r["id"] for r in json.loads(service.cli("tasks", "list", "--json").stdout) if r["name"] == "twice"]
    assert len(ids) == 2 and all(i in proc.stderr for i in ids)


def test_delete_of_a_running_task_needs_force(service, repo, tmp_path):
    service.cli("optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo, "--output", str(tmp_path),
                "--bench-seconds", "120", "--name", "busy", "--submit")
    deadline = time.monotonic() + 240
    while service.tasks()["busy"]["state"] != "accelerating":
        assert time.monotonic() < deadline
        time.sleep(1)
    refused = service.cli("tasks", "delete", "busy", check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    service.cli("tasks", "delete", "busy", "--force")
    assert "busy" not in service.tasks()
    assert not (tmp_path / "busy").exists()


def test_submit_without_a_deployment_for_the_machine_type(service, repo, tmp_path):
    proc = service.cli("optimize", "cnn@v1", *INFO, "--repo", repo, "--output", str(tmp_path), "--device", "t4",
                       "--submit", check=False)
    assert proc.returncode == 2 and "no deployment for machine type 't4'" in proc.stderr


def test_ctrl_c_stops_server_runner_and_running_tasks(service, repo, tmp_path):
    out = tmp_path / "out"
    submitted = json.loads(service.cli("optimize", "slow@v1", "-t", "input_0:float(256*512)", "--repo", repo,
                                       "--output", str(out), "--bench-seconds", "120", "--name", "at-shutdown",
                                       "--submit", "--json").stdout)
    deadline = time.monotonic() + 240
    while service.tasks()["at-shutdown"]["state"] != "accelerating":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert service.stop() == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", service.port)) != 0  # nothing listens any more
    assert _run_pids(submitted[0]["id"]) == []  # no task process outlives the runner
    assert not out.exists() or [p for p in os.listdir(out) if not p.startswith(".partial-")] == []
