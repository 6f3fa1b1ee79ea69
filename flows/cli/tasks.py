"""`accelflow tasks list|show|stop|save|retry|delete|tag`: the task list from the command line."""

from __future__ import annotations

import json

from accelflow.flows.service import task_actions
from accelflow.flows.service.tasklist import USER_STATES, list_tasks

STATES = sorted(set(USER_STATES.values()))


def register(verbs) -> None:
    p = verbs.add_parser("tasks", help="the optimization task list on the Prefect server")
    sub = p.add_subparsers(dest="task_verb", required=True, metavar="ACTION")
    _verb(sub, "list", cmd_list, "list tasks", [
        (("--state",), {"choices": STATES}), (("--tag",), {}), (("--json",), {"action": "store_true"})])
    _verb(sub, "show", cmd_show, "a task's settings, state history and report", [
        (("task",), {"metavar": "TASK"}), (("--json",), {"action": "store_true"})])
    _verb(sub, "stop", cmd_stop, "stop a starting or accelerating task", [(("task",), {"metavar": "TASK"})])
    _verb(sub, "save", cmd_save, "save an accelerated task to the model repository", [
        (("task",), {"metavar": "TASK"}), (("--json",), {"action": "store_true"})])
    _verb(sub, "delete", cmd_delete, "delete a task and its working outputs", [
        (("task",), {"metavar": "TASK"}), (("--force",), {"action": "store_true", "help": "stop it first if running"}),
        (("--keep-files",), {"action": "store_true", "help": "delete the task only, keep its result's files"})])
    _verb(sub, "tag", cmd_tag, "add or remove tags", [
        (("task",), {"metavar": "TASK"}), (("--add",), {"action": "append", "default": []}),
        (("--remove",), {"action": "append", "default": []})])
    _add_retry(sub)


def _verb(sub, name, func, help_text, arguments) -> None:
    p = sub.add_parser(name, help=help_text)
    for flags, kwargs in arguments:
        p.add_argument(*flags, **kwargs)
    p.set_defaults(func=func)


def _add_retry(sub) -> None:
    from accelflow.flows.cli.options import add_request_options

    p = sub.add_parser("retry", help="re-accelerate a failed or stopped task, with any setting edited")
    p.add_argument("task", metavar="TASK")
    add_request_options(p, editing=True)
    p.add_argument("--submit", action="store_true", help="send to the server instead of running here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)


def cmd_list(args) -> int:
    rows = list_tasks(state=args.state, tag=args.tag)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    from accelflow.flows.cli import console  # rich: imported only when a table is printed

    console.print_table(
        ["NAME", "STATE", "PROGRESS", "SPEED-UP", "LEVEL", "DEVICE", "CREATED"],
        [[r.name, r.state, f"{r.progress:.0f}%", f"{r.speedup:.2f}x" if r.speedup else "-", r.level, r.device,
          r.created] for r in rows],
        right=("PROGRESS", "SPEED-UP"), wrap=("NAME",), styles={"STATE": console.STATE_STYLES})
    return 0


def cmd_show(args) -> int:
    details = task_actions.show_task(args.task)
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return 0
    _print_details(details)
    return 0


def _print_details(d: dict) -> None:
    from accelflow.flows.cli import console

    lines = [f"{d['name']}  ({d['id']})", f"state: {d['state']} ({d['prefect_state']})", f"tags: {', '.join(d['tags']) or '-'}"]
    if d.get("retry_of"):
        lines.append(f"re-accelerates: {d['retry_of']}")
    if d.get("reason"):
        lines.append(f"reason: {d['reason']}")
    lines.append("settings:")
    lines += [f"  {k}: {v}" for k, v in d["settings"].items()]
    print("\n".join([*lines, "history:"]))
    console.print_table(["TIME", "STATE", "MESSAGE"], [[h["time"], h["state"], h["message"]] for h in d["history"]],
                        indent=2, wrap=("MESSAGE",), styles={"STATE": console.STATE_STYLES})
    if d.get("children"):
        print("tasks:")
        console.print_table(["NAME", "STATE"], [[c["name"], c["state"]] for c in d["children"]],
                            indent=2, wrap=("NAME",), styles={"STATE": console.STATE_STYLES})
    if d.get("report"):
        print("\n".join(_report_lines(d["report"], d["result"])))
    elif d.get("result", {}).get("unreadable"):
        print(f"report: not readable here: {d['result']['unreadable']}")


def _report_lines(report: dict, result: dict) -> list[str]:
    from accelflow.reports.render import console_summary
    from accelflow.reports.results import TaskReport

    return ["report:", *["  " + l for l in console_summary(TaskReport.from_dict(report), result.get("result_uri") or result["result_folder"]).splitlines()]]


def cmd_stop(args) -> int:
    outcome = task_actions.stop_task(args.task)
    print(f"{outcome['name']}: {outcome['state']} ({outcome['prefect_state']})")
    return 0 if outcome["state"] == "stopped" else 1


def cmd_save(args) -> int:
    entry = task_actions.save_task_to_repository(args.task)
    if args.json:
        import dataclasses

        print(json.dumps(dataclasses.asdict(entry), indent=2))
    else:
        print(f"saved as {entry.model}@{entry.version} in the model repository; files: {entry.home}")
    return 0


def cmd_delete(args) -> int:
    outcome = task_actions.delete_task(args.task, force=args.force, keep_files=args.keep_files)
    removed = f"; removed {outcome['removed']} ({outcome['files']} files)" if outcome["removed"] else ""
    print(f"deleted {outcome['name']}{removed}")
    return 0


def cmd_tag(args) -> int:
    print(", ".join(task_actions.tag_task(args.task, args.add, args.remove)) or "(no tags)")
    return 0


def cmd_retry(args) -> int:
    from accelflow.flows.cli.options import request_fields
    from accelflow.flows.cli.submit import run_inline, submit_requests

    retry = task_actions.retry_request(args.task, request_fields(args, editing=True))
    request = retry.request
    if args.submit or retry.deployed:
        return submit_requests([request], request.name, args.json, args.resource_group or retry.work_queue)
    return run_inline([request], request.name, args.json)
