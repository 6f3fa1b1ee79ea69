"""What a person sees (rich tables with borders, live step progress) on a terminal, and what a
pipe gets (plain columns, every value whole, no ANSI codes, the same plain progress lines);
``--json`` output as before. Real rich consoles throughout: a StringIO one, one forced to be a
terminal, and a real pseudo-terminal for the command line."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from accelflow.flows.cli import console
from accelflow.flows.cli import repo as repo_cli
from accelflow.flows.cli import tasks as tasks_cli
from accelflow.flows.progress import STEPS, Progress
from accelflow.flows.service.tasklist import TaskRow
from accelflow.storage.repository import ModelRepository
from prefect import flow
from rich.console import Console

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG = "resnet50-imagenet-" + "x" * 100 + "-end"  # 122 characters: wider than any default terminal


def _pipe() -> Console:
    return Console(file=io.StringIO())  # not a terminal, rich's default width of 80


def _terminal(width: int) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system="truecolor")


def _plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


# ---------------------------------------------------------------- tables


def test_plain_table_keeps_every_value_whole_without_ansi():
    out = _pipe()
    console.print_table(["NAME", "STATE", "PROGRESS"], [[LONG, "accelerated", "100%"], ["b", "[red]x[/red]", "5%"]],
                        right=("PROGRESS",), styles={"STATE": console.STATE_STYLES}, console=out)
    text = out.file.getvalue()
    assert "\x1b" not in text and "…" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PROGRESS"]
    assert lines[1].split() == [LONG, "accelerated", "100%"]
    assert lines[2].split() == ["b", "[red]x[/red]", "5%"]  # a value is text, never rich markup
    assert lines[1].endswith("100%") and lines[2].endswith("  5%")  # right-aligned
    assert all(line == line.rstrip() for line in lines)


def test_terminal_table_has_borders_and_folds_long_values_instead_of_cutting_them():
    wide = _terminal(200)
    console.print_table(["NAME", "STATE"], [[LONG, "accelerated"]], styles={"STATE": console.STATE_STYLES}, console=wide)
    text = wide.file.getvalue()
    lines = _plain(text).splitlines()
    assert lines[0].startswith("╭") and lines[-1].startswith("╰") and lines[2].startswith("├")
    assert lines[1].split("│")[1:3] == [" NAME" + " " * (len(LONG) - 3), " STATE       "]
    assert f"│ {LONG} │ accelerated │" in lines[3]
    assert "\x1b[1m" in text and "\x1b[32m" in text  # bold header, green "accelerated"

    narrow = _terminal(50)
    console.print_table(["NAME", "STATE"], [[LONG, "accelerated"]], console=narrow)
    rows = [line for line in _plain(narrow.file.getvalue()).splitlines() if line.startswith("│")]
    assert all(len(line) <= 50 for line in rows) and "…" not in "".join(rows)
    names = [line.split("│")[1].strip() for line in rows]
    assert names[0] == "NAME" and "".join(names[1:]) == LONG and len(names) > 3  # folded onto lines, whole


def _columns(shown: str) -> list[str]:
    """Each column's cell text of a bordered table's body, its folded pieces joined."""
    rows = [line.split("│")[1:-1] for line in _plain(shown).splitlines() if line.startswith("│")][1:]
    return ["".join(piece.strip() for piece in column) for column in zip(*rows)]


def test_terminal_table_folds_the_wrap_columns_first_and_the_rest_only_when_it_must():
    header, row = ["NAME", "STATE", "CREATED"], [LONG, "accelerated", "2026-01-02T03:04:05+00:00"]
    out = _terminal(100)
    console.print_table(header, [row], wrap=("NAME",), console=out)
    lines = _plain(out.file.getvalue()).splitlines()
    assert max(map(len, lines)) <= 100 and len(lines) > 5  # the name folded onto several lines
    assert f"│ accelerated │ {row[2]} │" in lines[3]  # the other columns whole, on the first line
    assert _columns(out.file.getvalue()) == row

    out = _terminal(45)  # no room for the whole columns: everything folds, nothing is lost
    console.print_table(header, [row], wrap=("NAME",), console=out)
    assert max(map(len, _plain(out.file.getvalue()).splitlines())) <= 45
    assert _columns(out.file.getvalue()) == row


def test_indented_terminal_table_is_not_padded_to_the_terminal_width():
    out = _terminal(200)
    console.print_table(["TIME", "STATE"], [["12:00", "failed"]], indent=2, console=out)
    lines = _plain(out.file.getvalue()).splitlines()
    assert lines[0].startswith("  ╭") and all(line == line.rstrip() and len(line) < 40 for line in lines)


def _tasks_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelflow")
    tasks_cli.register(parser.add_subparsers(dest="verb", required=True))
    return parser


ROWS = [
    TaskRow(id="0f1e2d3c-0000-4000-8000-000000000001", name=LONG, state="accelerated", progress=100.0,
            speedup=1.2345, level="fp16", device="cpu", created="2026-01-02T03:04:05+00:00", tags=["prod"],
            prefect_state="Completed"),
    TaskRow(id="0f1e2d3c-0000-4000-8000-000000000002", name="job-bert-v1#2", state="accelerating", progress=45.0,
            speedup=None, level="lossless", device="t4", created="2026-01-02T03:05:06+00:00"),
]

ROWS_JSON = """[
  {
    "id": "0f1e2d3c-0000-4000-8000-000000000001",
    "name": "%s",
    "state": "accelerated",
    "progress": 100.0,
    "speedup": 1.2345,
    "level": "fp16",
    "device": "cpu",
    "created": "2026-01-02T03:04:05+00:00",
    "tags": [
      "prod"
    ],
    "prefect_state": "Completed"
  },
  {
    "id": "0f1e2d3c-0000-4000-8000-000000000002",
    "name": "job-bert-v1#2",
    "state": "accelerating",
    "progress": 45.0,
    "speedup": null,
    "level": "lossless",
    "device": "t4",
    "created": "2026-01-02T03:05:06+00:00",
    "tags": [],
    "prefect_state": ""
  }
]
""" % LONG


def test_tasks_list_plain_table_and_unchanged_json(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(tasks_cli, "list_tasks", lambda state, tag: seen.append((state, tag)) or ROWS)
    args = _tasks_parser().parse_args(["tasks", "list", "--state", "accelerated"])
    assert args.func(args) == 0 and seen == [("accelerated", None)]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PROGRESS", "SPEED-UP", "LEVEL", "DEVICE", "CREATED"]
    assert lines[1].split() == [LONG, "accelerated", "100%", "1.23x", "fp16", "cpu", "2026-01-02T03:04:05+00:00"]
    assert lines[2].split() == ["job-bert-v1#2", "accelerating", "45%", "-", "lossless", "t4", "2026-01-02T03:05:06+00:00"]
    assert len(lines) == 3

    args = _tasks_parser().parse_args(["tasks", "list", "--json"])
    args.func(args)
    assert capsys.readouterr().out == ROWS_JSON  # byte for byte what `tasks list --json` always printed


def test_tasks_show_prints_history_and_children_as_plain_tables(monkeypatch, capsys):
    details = {
        "name": "job", "id": "abc", "state": "failed", "prefect_state": "Failed", "tags": [], "reason": "boom",
        "settings": {"model": "bert@v1", "level": "fp16"},
        "history": [{"time": "2026-01-02T03:04:05+00:00", "state": "starting", "message": ""},
                    {"time": "2026-01-02T03:04:09+00:00", "state": "failed", "message": "a long reason " * 12}],
        "children": [{"name": LONG, "state": "failed"}],
        "result": {},
    }
    monkeypatch.setattr(tasks_cli.task_actions, "show_task", lambda task: details)
    args = _tasks_parser().parse_args(["tasks", "show", "job"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:7] == ["job  (abc)", "state: failed (Failed)", "tags: -", "reason: boom", "settings:",
                         "  model: bert@v1", "  level: fp16"]
    assert lines[7] == "history:" and lines[8].split() == ["TIME", "STATE", "MESSAGE"]
    assert lines[9].split() == ["2026-01-02T03:04:05+00:00", "starting"]
    assert lines[10] == "  2026-01-02T03:04:09+00:00  failed    " + ("a long reason " * 12).rstrip()
    assert lines[11:] == ["tasks:", "  NAME" + " " * (len(LONG) - 2) + "STATE", f"  {LONG}  failed"]

    args = _tasks_parser().parse_args(["tasks", "show", "job", "--json"])
    args.func(args)
    assert capsys.readouterr().out == json.dumps(details, indent=2, default=str) + "\n"


def _repo_with_long_name(tmp_path) -> str:
    uri, model = str(tmp_path / "repo"), tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07onnx-bytes")
    repo = ModelRepository(uri)
    repo.add(LONG, "v1", str(model), source="uploaded", format="onnx")
    repo.add(LONG, "v2", str(model), source="uploaded", format="onnx")
    return uri


def _repo(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="accelflow")
    repo_cli.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_repo_list_plain_keeps_long_names_and_json_is_unchanged(tmp_path, capsys):
    uri = _repo_with_long_name(tmp_path)
    assert _repo("repo", "list", "--repo", uri) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SOURCE", "FORMAT", "VERSIONS", "CREATED"]
    assert lines[1].startswith(LONG + "  ") and lines[1].split()[2:6] == ["uploaded", "onnx", "v1,", "v2"]

    _repo("repo", "list", "--repo", uri, "--json")
    models = ModelRepository(uri).list()
    assert capsys.readouterr().out == json.dumps([dataclasses.asdict(m) for m in models], indent=2, sort_keys=True) + "\n"


def _run_cli_in_pty(args: list[str], columns: int) -> str:
    """Run `accelflow ARGS` with its stdout and stderr on a real pseudo-terminal; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    proc = subprocess.Popen([sys.executable, "-m", "accelflow", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=ROOT, env=dict(env, TERM="xterm-256color"), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode()


def test_repo_list_on_a_real_terminal_and_through_a_pipe(tmp_path):
    uri = _repo_with_long_name(tmp_path)
    shown = _run_cli_in_pty(["repo", "list", "--repo", uri], columns=220)
    lines = _plain(shown).splitlines()
    assert lines[0].startswith("╭") and lines[-1].startswith("╰")
    assert lines[1].split("│")[1].strip() == "NAME" and f"│ {LONG} │" in lines[3]
    assert "\x1b[" in shown

    piped = subprocess.run([sys.executable, "-m", "accelflow", "repo", "list", "--repo", uri], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "40"})
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout and "│" not in piped.stdout
    assert piped.stdout.splitlines()[1].split()[0] == LONG  # a narrow COLUMNS does not cut it either


# ---------------------------------------------------------------- live step progress


@flow(name="console-steps", persist_result=False)
def _steps(fail_at: str | None = None) -> None:
    """The optimize flow's steps, as flows/progress.py announces them, without the work."""
    progress = Progress()
    for name, _ in STEPS:
        with progress.step(name):
            if name == fail_at:
                raise RuntimeError("the step broke")
            if name == "build engines":
                progress.say("    onnxruntime f32: built in 0.1s")


@pytest.fixture
def progress_logger():
    """The progress logger as the command line sets it up (INFO, its own handler), restored after."""
    logger = logging.getLogger("accelflow.progress")
    saved = logger.handlers[:], logger.level, logger.propagate
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:], logger.level, logger.propagate = [handler], logging.INFO, False
    yield logger, lines
    logger.handlers[:], logger.level, logger.propagate = saved


def test_live_steps_on_a_terminal(prefect_server, progress_logger):
    logger, lines = progress_logger
    before = logger.handlers[:]
    term = _terminal(100)
    with console.live_steps(console=term):
        assert logger.handlers != before
        _steps.with_options(flow_run_name="demo-run")()
    assert logger.handlers == before and lines.getvalue() == ""  # the display replaced the plain lines
    shown = _plain(term.file.getvalue())
    final = shown[shown.rindex("demo-run") - 2:]  # the last frame: rows stay on screen after the run
    assert final.startswith("✓ demo-run") and "100%" in final.splitlines()[0]
    for number, (name, _) in enumerate(STEPS, 1):
        assert re.search(rf"✓   \[{number}/8\] {name} +\d:\d\d:\d\d", final), (name, final)
    assert "    onnxruntime f32: built in 0.1s" in shown and "✗" not in shown


def test_live_steps_mark_the_step_that_did_not_finish(prefect_server, progress_logger):
    term = _terminal(100)
    with pytest.raises(RuntimeError, match="the step broke"), console.live_steps(console=term):
        _steps.with_options(flow_run_name="broken-run")(fail_at="convert to ONNX")
    shown = _plain(term.file.getvalue())
    final = shown[shown.rindex("broken-run") - 2:]
    assert final.startswith("✗ broken-run") and "20%" not in final and "8%" in final
    assert "✓   [2/8] parse tensor information" in final and "✗   [3/8] convert to ONNX" in final
    assert "[4/8]" not in shown


def test_plain_lines_stay_off_a_terminal_and_with_debug(prefect_server, progress_logger):
    logger, lines = progress_logger
    before = logger.handlers[:]
    with console.live_steps(console=_pipe()):
        assert logger.handlers == before
        _steps.with_options(flow_run_name="piped-run")()
    text = lines.getvalue()
    assert "\x1b" not in text
    assert text.splitlines()[:2] == ["[1/8] fetch model ...", "[1/8] fetch model done in 0.0s"]
    assert "    onnxruntime f32: built in 0.1s" in text and "[8/8] package done in" in text

    logger.setLevel(logging.DEBUG)  # --debug: Prefect's own lines share the terminal, so no live display
    with console.live_steps(console=_terminal(100)):
        assert logger.handlers == before
