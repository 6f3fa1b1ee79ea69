"""accelflow on a fleet, the Prefect way (docs/scale-out.md).

    accelflow deploy                  # once, from a checkout: work pools, deployments, lost-run detection
    accelflow worker --pool a10       # on each serving machine: one task at a time per GPU

Lost runs: a flow run sends a heartbeat event every HEARTBEAT_SECONDS (Prefect's flow-run
heartbeats, switched on in every deployment's environment), and Prefect's documented
zombie-flow automation marks a Running run Crashed when none came for MISSING_AFTER_SECONDS.
A worker or machine that dies therefore leaves a failed task within about two minutes,
which `accelflow tasks retry` sends to another worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from accelflow.core.errors import AccelflowError
from accelflow.flows.prefect_yaml import ROOT, machine_types

HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
HEARTBEAT_SECONDS = 30  # Prefect's minimum
MISSING_AFTER_SECONDS = 90  # three missed heartbeats
ZOMBIE_AUTOMATION = "accelflow: crash runs without heartbeats"
POOL_PREFIX = "accelflow-"
GIT_URL_ENV = "ACCELFLOW_GIT_URL"
GIT_BRANCH_ENV = "ACCELFLOW_GIT_BRANCH"


class FleetError(AccelflowError):
    """A fleet command that cannot do its work (no server, no code URL, a failed Prefect command)."""


def register(verbs) -> None:
    p = verbs.add_parser("deploy", help="create the work pools, deployments and lost-run detection on the server")
    p.add_argument("--git-url", help=f"repository the workers clone the code from (default ${GIT_URL_ENV}, "
                                     "else this checkout's origin)")
    p.add_argument("--branch", help=f"branch or tag to clone (default ${GIT_BRANCH_ENV}, else the current one)")
    p.set_defaults(func=run_deploy)
    w = verbs.add_parser("worker", help="run tasks of one machine type's work pool on this machine")
    w.add_argument("--pool", required=True, help="machine type (cpu, cpu-<class>, t4, a10, ...) or its pool name")
    w.add_argument("--limit", type=int, default=1,
                   help="tasks at once (default 1: one GPU, or a CPU the benchmarks must have to themselves)")
    w.add_argument("--name", help="worker name shown in the UI (default: host and pool)")
    w.set_defaults(func=run_worker)


def pool_name(machine_type: str) -> str:
    return machine_type if machine_type.startswith(POOL_PREFIX) else f"{POOL_PREFIX}{machine_type}"


def heartbeat_env() -> dict[str, str]:
    """What a flow run's environment needs for Prefect to see it die."""
    return {HEARTBEAT_ENV: str(HEARTBEAT_SECONDS)}


def ensure_zombie_automation(client) -> bool:
    """Create Prefect's zombie-flow automation once per server; True when it was created now."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if client.read_automations_by_name(ZOMBIE_AUTOMATION):
        return False
    ended = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    client.create_automation(AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="A Running flow run whose heartbeats stopped (its worker or machine died) is marked Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *ended},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=MISSING_AFTER_SECONDS)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=(
            f"the task's worker stopped answering (no heartbeat for {MISSING_AFTER_SECONDS} s: the worker or "
            "its machine died); re-accelerate it with `accelflow tasks retry`"))],
    ))
    return True


def run_deploy(args) -> int:
    from accelflow.flows.runs import client

    _require_server()
    env = dict(os.environ, **_code_location(args.git_url, args.branch))
    with client() as c:
        created = [t for t in machine_types() if _ensure_pool(c, pool_name(t))]
        automation = ensure_zombie_automation(c)
    _prefect(["--no-prompt", "deploy", "--all"], env)
    print(f"deployed optimize/{{{','.join(machine_types())}}} from {env[GIT_URL_ENV]} ({env[GIT_BRANCH_ENV]})")
    print(f"work pools created: {', '.join(created) or 'none (all existed)'}; lost-run detection: "
          f"{'created' if automation else 'already there'}")
    return 0


def _require_server() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise FleetError("a fleet needs a Prefect server: start one (prefect server start, or accelflow server) "
                         "and export PREFECT_API_URL=http://HOST:4200/api on every machine.")


def _code_location(url: str | None, branch: str | None) -> dict[str, str]:
    url = url or os.environ.get(GIT_URL_ENV) or _git("remote", "get-url", "origin")
    branch = branch or os.environ.get(GIT_BRANCH_ENV) or _git("rev-parse", "--abbrev-ref", "HEAD")
    if not url or not branch:
        raise FleetError(f"workers clone accelflow's code from git: give --git-url URL (or set {GIT_URL_ENV}); "
                         "this checkout has no origin remote.")
    return {GIT_URL_ENV: url, GIT_BRANCH_ENV: branch}


def _git(*args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _ensure_pool(c, name: str) -> bool:
    from prefect.client.schemas.actions import WorkPoolCreate

    try:
        c.read_work_pool(name)
        return False
    except Exception:  # noqa: BLE001 - ObjectNotFound: create it below
        c.create_work_pool(WorkPoolCreate(name=name, type="process"))
        return True


def run_worker(args) -> int:
    """Start a Prefect process worker for the pool (created if missing), with heartbeats on."""
    import platform

    from accelflow.flows.runs import client

    _require_server()
    pool = pool_name(args.pool)
    with client() as c:
        _ensure_pool(c, pool)
    name = args.name or f"{platform.node()}-{pool}"
    env = dict(os.environ, **heartbeat_env())
    cmd = ["worker", "start", "--pool", pool, "--type", "process", "--limit", str(args.limit), "--name", name]
    print(f"worker {name}: pool {pool}, up to {args.limit} task(s) at once; Ctrl-C stops it", flush=True)
    os.execve(_prefect_script(), [_prefect_script(), *cmd], env)
    return 0  # not reached


def _prefect(args: list[str], env: dict) -> None:
    proc = subprocess.run([_prefect_script(), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FleetError(f"`prefect {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")


def _prefect_script() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "prefect")
    return script if os.path.exists(script) else "prefect"
