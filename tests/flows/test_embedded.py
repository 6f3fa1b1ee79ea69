"""Prefect's embedded server as a newcomer meets it: a fresh home, no PREFECT_API_URL."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(args, home, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **env_extra)
    return subprocess.run([sys.executable, "-m", "accelflow", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def test_fresh_home_starts_the_embedded_server_and_migrates_its_database(tmp_path):
    proc = _cli(["tasks", "list", "--json"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert (tmp_path / "home" / "prefect.db").is_file()


def test_a_server_that_cannot_start_is_one_line_with_the_fix(tmp_path):
    # A database Prefect cannot create: the server never answers, on either try.
    proc = _cli(["tasks", "list"], tmp_path / "home",
                PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/prefect.db",
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="3")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "embedded server did not start within 3 s (2 tries)" in proc.stderr
    assert "prefect server database upgrade -y" in proc.stderr
