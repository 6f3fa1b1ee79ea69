"""S3 credentials never appear in anything accelflow writes or prints: logs, reports,
manifests, flow-run parameters and logs in Prefect's database, error messages."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import modelzoo
from tests.conftest import S3_TEST_SECRET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--draws", "1", "--bench-seconds", "0.2"]


def _cli(args, home: str):
    # Its own Prefect home, no server URL: the run's database and logs are written under `home`.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run([sys.executable, "-m", "accelflow", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def _files_holding(root, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(path)
    return found


def test_the_secret_key_is_nowhere(s3_repo_uri, tmp_path):
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == S3_TEST_SECRET  # set for this test by the fixture
    (tmp_path / "models").mkdir()
    model = modelzoo.tiny_cnn_torchscript(str(tmp_path / "models"))
    home, out = str(tmp_path / "prefect"), str(tmp_path / "out")
    bad_repo = s3_repo_uri.replace("s3://", "s3://missing-")
    runs = [
        _cli(["repo", "add", "cnn", "v1", model, "--source", "uploaded", "--repo", s3_repo_uri], home),
        _cli(["optimize", "cnn@v1", "-t", "input_0:float(1*3*16*16)", *FAST, "--repo", s3_repo_uri,
              "--output", out, "--json"], home),
        _cli(["optimize", "cnn@v1", "-t", "input_0:float(1*3*16*16)", *FAST, "--repo", bad_repo,
              "--output", out, "--debug"], home),
        _cli(["repo", "list", "--repo", s3_repo_uri], home),
        _cli(["repo", "show", "cnn", "--repo", bad_repo], home),
    ]
    assert [r.returncode for r in runs] == [0, 0, 2, 0, 2], [r.stderr[-2000:] for r in runs]
    assert os.path.isfile(os.path.join(out, "cnn-v1-fp16", "model", "manifest.json"))
    assert any(f.endswith(".db") for f in os.listdir(home))  # Prefect's database is among what is searched
    for run in runs:
        assert S3_TEST_SECRET not in run.stdout and S3_TEST_SECRET not in run.stderr
    assert _files_holding(tmp_path, S3_TEST_SECRET.encode()) == []
