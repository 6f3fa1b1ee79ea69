"""`accelflow server`: a Prefect server (UI and API on SQLite) plus a runner serving the
accelflow deployments on this machine, with a limit on tasks run at once. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from accelflow.core.errors import AccelflowError

DEFAULT_PORT = 4200


def register(verbs) -> None:
    p = verbs.add_parser("server", help="run the Prefect server and a runner for accelflow tasks here")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--limit", type=int, default=2, help="tasks run at once (default 2)")
    p.set_defaults(func=run_server)


def run_server(args) -> int:
    _stop_on_signals()
    api_url = f"http://{args.host}:{args.port}/api"
    from accelflow.flows.service.fleet import heartbeat_env

    # Heartbeats from every task process: a runner that dies leaves no task "accelerating".
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false", **heartbeat_env())
    env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")  # a submitted task starts within ~2 s, not 10
    log_path = os.path.join(_prefect_home(), "accelflow-server.log")
    with open(log_path, "ab") as log:
        server = _start([_prefect(), "server", "start", "--host", args.host, "--port", str(args.port)], env, log)
        runner = None
        try:
            _wait_healthy(api_url, server, log_path)
            runner = _start([sys.executable, "-m", "accelflow.flows.service.serve", "--limit", str(args.limit)], env, log)
            _announce(args, api_url, log_path)
            return _supervise(server, runner)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
            return 0
        finally:
            for process in (runner, server):
                _stop(process)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop everything in order (runner first, then the server),
    also when started in the background, where SIGINT would otherwise be ignored."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _start(cmd: list[str], env: dict, log) -> subprocess.Popen:
    # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _prefect() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "prefect")
    return script if os.path.exists(script) else "prefect"


def _prefect_home() -> str:
    home = os.path.expanduser(os.environ.get("PREFECT_HOME", "~/.prefect"))
    os.makedirs(home, exist_ok=True)
    return home


def _wait_healthy(api_url: str, server: subprocess.Popen, log_path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AccelflowError(f"the Prefect server exited (is the port taken?); see {log_path}")
        try:
            urllib.request.urlopen(f"{api_url}/health", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AccelflowError(f"the Prefect server did not answer within {timeout:.0f} s; see {log_path}")


def _announce(args, api_url: str, log_path: str) -> None:
    print(f"accelflow server ready\n"
          f"  UI:      http://{args.host}:{args.port}\n"
          f"  API:     export PREFECT_API_URL={api_url}\n"
          f"  runner:  up to {args.limit} task(s) at once on this machine\n"
          f"  log:     {log_path}\n"
          f"Ctrl-C stops the server and the runner.", flush=True)


def _supervise(server: subprocess.Popen, runner: subprocess.Popen) -> int:
    while True:
        for name, process in (("server", server), ("runner", runner)):
            if process.poll() is not None:
                print(f"the {name} exited with code {process.returncode}; stopping.", file=sys.stderr)
                return 1
        time.sleep(0.5)


def _stop(process: subprocess.Popen | None, grace: float = 20.0) -> None:
    """Stop a child and everything it started: its process group (its own session), so that
    no task process outlives the runner, and no uvicorn worker outlives the server."""
    if process is None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _wait_group_gone(process.pid, grace)
    _signal_group(process, signal.SIGKILL)
    if process.poll() is None:
        process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Task processes get SIGTERM with their runner; give them time to clean up their output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
