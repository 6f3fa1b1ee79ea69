"""Running requests: here, on Prefect's embedded default, or submitted to a server."""

from __future__ import annotations

import json


def submit_requests(requests, batch_name: str, as_json: bool, work_queue: str | None = None) -> int:
    """Check the requests (with the model, where it is on this machine), upload local inputs, and
    create one flow run each on the server (in `work_queue` of its pool, if given)."""
    from accelflow.flows.batch import check_server, submit
    from accelflow.flows.inputs import prepare_for_submit
    from accelflow.flows.presubmit import check_before_submit
    from prefect.settings import PREFECT_API_URL

    check_server(requests)
    requests = [check_before_submit(r) for r in requests]  # all checked before anything is uploaded or submitted
    requests = [prepare_for_submit(r, PREFECT_API_URL.value()) for r in requests]
    tasks = submit(requests, batch_name, work_queue)
    if as_json:
        print(json.dumps(tasks, indent=2))
    else:
        for task in tasks:
            print(f"submitted {task['name']}  ({task['id']})")
    return 0


def run_inline(requests, batch_name: str, as_json: bool) -> int:
    """Run in this process on Prefect's embedded default (or PREFECT_API_URL if set)."""
    from accelflow.flows.batch import optimize_batch
    from accelflow.flows.cli.console import live_steps
    from accelflow.flows.embedded import ensure_started
    from accelflow.flows.optimize import optimize, preflight
    from prefect import tags

    requests = [preflight(r)[0] for r in requests]  # every task checked before any starts
    ensure_started()
    with live_steps():  # on a terminal, the steps as a live display; elsewhere the plain lines
        if len(requests) == 1:
            with tags(*requests[0].tags):
                results = [optimize.with_options(flow_run_name=requests[0].name)(request=requests[0])]
        else:
            results = optimize_batch.with_options(flow_run_name=batch_name)(requests=requests)
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        for result in results:
            _print_summary(result)
    return 0 if all(r.get("result_uri") for r in results) else 1


def _print_summary(result: dict) -> None:
    from accelflow.reports.render import console_summary
    from accelflow.reports.results import TaskReport
    from accelflow.tasks.publish import read_report

    if not result.get("result_uri"):
        print(f"{result['name']}: {result.get('state', 'failed').lower()}: {result.get('reason', '')}")
        return
    report = TaskReport.from_dict(read_report(result["result_uri"]))
    print(console_summary(report, result["result_uri"]))
