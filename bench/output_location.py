"""What publishing to object storage costs a task: BERT-base optimized with its result written to
a local folder and to S3 (a moto server on 127.0.0.1), the runs alternating.

    python -m bench.output_location [--rounds 2] [--level fp16]

Each task is the real `accelflow optimize` command in its own process (Prefect's embedded
server, conversion cache on, so only the first, untimed run exports). Printed per run: the
task's wall time and the result's size.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT_INFO = ["-t", "input_ids:int64(1*16,1*128)", "-t", "attention_mask:int64(1*16,1*128)"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto(env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL_S3=endpoint)
    import boto3

    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="x",
                         region_name="us-east-1").create_bucket(Bucket="bench-results")
            return server, "s3://bench-results/results"
        except Exception:  # noqa: BLE001 - not answering yet
            time.sleep(0.2)
    raise RuntimeError("moto server did not start")


def _run(model: str, output: str, level: str, env: dict) -> dict:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "accelflow", "optimize", model, *BERT_INFO, "--level", level,
                           "--output", output, "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(proc.stdout)
    from accelflow.tasks.publish import read_manifest

    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    size = sum(read_manifest(result["result_uri"])["files"].values())
    return {"wall": wall, "mb": size / 2**20, "speedup": result["speedup"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--level", default="fp16")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="accelflow-bench-output-")
    env = dict(os.environ, PREFECT_HOME=os.path.join(work, "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               ACCELFLOW_CACHE_DIR=os.path.join(work, "cache"))
    models = os.path.join(work, "models")
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", "make_models.py"), "bert", "--out", models],
                   check=True, capture_output=True)
    model = os.path.join(models, "bert.pt")
    moto, s3_output = _moto(env)
    try:
        _run(model, os.path.join(work, "warm"), args.level, env)  # the export, cached for the timed runs
        rows = []
        for n in range(args.rounds):
            for where, output in (("local", os.path.join(work, "out")), ("s3", s3_output)):
                row = dict(_run(model, output, args.level, env), where=where, round=n + 1)
                rows.append(row)
                print(f"round {row['round']} {where:5}: task {row['wall']:6.1f} s, result {row['mb']:.0f} MB, "
                      f"speed-up {row['speedup']:.2f}x", flush=True)
    finally:
        moto.terminate()
    for where in ("local", "s3"):
        walls = [r["wall"] for r in rows if r["where"] == where]
        print(f"{where:5}: task mean {sum(walls) / len(walls):.1f} s over {len(walls)} runs")


if __name__ == "__main__":
    main()
