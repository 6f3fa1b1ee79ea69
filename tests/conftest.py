"""Shared pytest fixtures.

Prefect: a real Prefect API server (Prefect's test harness runs one in a subprocess on a
temporary SQLite database), so flows record runs, states and artifacts as in production.

S3: a real moto standalone server in a subprocess (not moto's in-process mocks), so the code
under test talks HTTP to an S3 endpoint exactly as it would to MinIO or AWS. A test may stop
and restart it to see how the code copes with storage that goes away; the endpoint URL stays
the same across restarts, but moto keeps its buckets in memory, so a restart empties it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

# Before Prefect is imported anywhere: a private home, and no telemetry (no network here).
os.environ.setdefault("PREFECT_HOME", os.path.join("/tmp", f"accelflow-tests-prefect-{os.getpid()}"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Conversions cached per test session, never in the developer's own cache.
os.environ.setdefault("ACCELFLOW_CACHE_DIR", os.path.join("/tmp", f"accelflow-tests-cache-{os.getpid()}"))

# Distinctive, so a test can assert that it never leaks into a message or a file.
S3_TEST_KEY = "testing"
S3_TEST_SECRET = "testing-secret-0f7c2a9e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """A moto standalone server on 127.0.0.1; ``endpoint_url`` survives stop() / start()."""

    def __init__(self, log_path):
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen | None = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running():
            return
        # `python -m moto.server` is the `moto_server` script, found without relying on PATH.
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_answering(timeout)

    def _wait_until_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited; see {self._log_path}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout} s; see {self._log_path}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted, nothing is answered."""
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


@contextlib.contextmanager
def running_moto(tmp_path_factory, name: str):
    """A moto server of its own (a module that freezes one must not freeze the others')."""
    server = MotoServer(tmp_path_factory.mktemp(name) / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The running moto S3 server: ``.endpoint_url``, ``.stop()``, ``.start()``, ``.running()``."""
    with running_moto(tmp_path_factory, "moto") as server:
        yield server


def set_s3_env(monkeypatch, endpoint_url: str) -> None:
    """Point boto/s3fs at the test endpoint with test credentials, and nowhere else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_TEST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_TEST_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint_url)
    # A developer's own AWS setup must not leak in (profiles, tokens, another endpoint).
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.fixture
def s3_repo_uri(s3_server, monkeypatch) -> str:
    """``s3://<fresh bucket>/repo`` on the moto server, with the AWS environment set for it."""
    s3_server.start()  # a no-op unless an earlier test left it stopped
    set_s3_env(monkeypatch, s3_server.endpoint_url)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    import boto3  # comes with moto; imported here so tests without S3 do not pay for it

    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/repo"


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server for the whole session; flows and the CLI report to it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
