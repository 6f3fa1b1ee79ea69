"""What the command line shows a person: rich tables and live step progress on a terminal,
plain text everywhere else.

Rich decides what a terminal is (a TTY, not TERM=dumb; FORCE_COLOR / NO_COLOR as usual). On a
terminal, tables have borders and long work shows a live display of its steps. Elsewhere (pipes,
files, tests) a table is aligned columns without ANSI codes, as wide as its content (nothing is
wrapped or cut), and progress stays one log line per step. ``--json`` never comes through here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Mapping, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# Wider than any row: a plain table is never wrapped or truncated (rich only pads to the content).
PLAIN_WIDTH = 100_000
MIN_FOLD_WIDTH = 12  # room a folding column needs on a terminal before the others fold too
STATE_STYLES = {"accelerated": "green", "accelerating": "cyan", "starting": "blue",
                "failed": "red", "stopped": "yellow"}


def stdout_console() -> Console:
    """A console on the current sys.stdout (made per call, so redirected stdout is honoured)."""
    return Console(file=sys.stdout, highlight=False)


def build_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, width: int | None = None,
                right: Sequence[str] = (), wrap: Sequence[str] = (),
                styles: Mapping[str, Mapping[str, str]] | None = None) -> Table:
    """A rich table of ``rows`` (cells are shown as text, never read as rich markup).

    ``right`` names right-aligned columns; ``styles`` maps a column to {cell value: style}.
    For a terminal ``width`` columns wide: rounded borders, and long cells fold onto more lines
    rather than lose characters; the ``wrap`` columns (names, messages) fold first, and the
    others stay whole while the terminal leaves the ``wrap`` ones some room. Without a width
    (plain text): no borders, two spaces between columns, nothing wrapped.
    """
    if width is None:
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="")
        whole = set(header)
    else:
        table = Table(box=box.ROUNDED, header_style="bold")
        room = wrap and _fixed_width(header, rows, wrap) + MIN_FOLD_WIDTH * len(wrap) <= width
        whole = set(header) - set(wrap) if room else set()
    for name in header:
        table.add_column(name, justify="right" if name in right else "left", overflow="fold", no_wrap=name in whole)
    styles = styles or {}
    for row in rows:
        table.add_row(*(Text(str(cell), style=styles.get(name, {}).get(str(cell), ""))
                        for name, cell in zip(header, row)))
    return table


def _fixed_width(header, rows, wrap) -> int:
    """The bordered table's width without its ``wrap`` columns' content."""
    widths = [max(cell_len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return sum(w for name, w in zip(header, widths) if name not in wrap) + 3 * len(header) + 1


def plain_text(renderable) -> str:
    """``renderable`` as plain text: no ANSI codes, no line wider than its content, no trailing blanks."""
    out = Console(file=io.StringIO(), width=PLAIN_WIDTH, color_system=None, force_terminal=False,
                  force_jupyter=False, force_interactive=False, highlight=False, legacy_windows=False)
    out.print(renderable)
    return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines())


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, indent: int = 0,
                right: Sequence[str] = (), wrap: Sequence[str] = (),
                styles: Mapping[str, Mapping[str, str]] | None = None, console: Console | None = None) -> None:
    """Print a table on stdout (or ``console``): bordered on a terminal, plain columns otherwise."""
    console = console or stdout_console()
    width = console.width - indent if console.is_terminal else None
    table = build_table(header, rows, width=width, right=right, wrap=wrap, styles=styles)
    if console.is_terminal:
        console.print(Padding(table, (0, 0, 0, indent), expand=False) if indent else table)
    else:
        text = plain_text(table)
        console.file.write("".join(" " * indent + line + "\n" for line in text.splitlines()))
        console.file.flush()


# ---------------------------------------------------------------- live step progress


@contextlib.contextmanager
def live_steps(logger_name: str = "accelflow.progress", console: Console | None = None):
    """While the block runs, show the steps flows/progress.py logs as a live rich display on
    stderr (or ``console``), if that is a terminal. Otherwise, and with --debug (the logger at
    DEBUG: Prefect's own log lines share the terminal then), the plain lines stay as they are."""
    logger = logging.getLogger(logger_name)
    console = console or Console(file=sys.stderr, highlight=False)
    if not console.is_terminal or logger.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    handler = StepDisplay(console)
    saved = logger.handlers[:]
    logger.handlers[:] = [handler]
    try:
        yield
    finally:
        logger.handlers[:] = saved
        handler.close()


class _Status(SpinnerColumn):
    """A spinner while a row runs, then a check mark, or a cross for a step that did not finish."""

    def render(self, task):
        if task.fields.get("failed"):
            return Text("✗", style="red")
        return super().render(task)


class _OverallOnly:
    """Only the task's overall row gets this column (a bar, a percentage); step rows stay blank."""

    def render(self, task):
        return super().render(task) if task.fields.get("overall") else Text("")


class _Bar(_OverallOnly, BarColumn):
    pass


class _Percent(_OverallOnly, TaskProgressColumn):
    pass


class StepDisplay(logging.Handler):
    """Turns progress records into a rich Progress: one overall row per task (bar to the
    percentage its finished steps reach) and one row per step with its elapsed time. Records
    without step fields (a candidate built, a shape point timed) are printed above the display.

    Records carry ``step``, ``step_number``, ``steps``, ``percent``, ``step_done`` and
    ``run_name`` (see flows/progress.py); a step numbered 1 starts a new display."""

    def __init__(self, console: Console):
        super().__init__(logging.INFO)
        self.console = console
        self.progress: Progress | None = None
        self.overall = None
        self.rows: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            step = getattr(record, "step", None)
            if step is None:
                self._note(record.getMessage())
            elif record.step_done:
                self._done(step, record.percent)
            else:
                self._start(step, record.step_number, record.steps, getattr(record, "run_name", None))
        except Exception:  # noqa: BLE001 - a display problem must never fail the task
            self.handleError(record)

    def _start(self, step: str, number: int, count: int, run_name: str | None) -> None:
        if self.progress is None or number == 1:
            self._finish()
            # Stray writes to a terminal's stdout go above the display; stdout sent elsewhere stays there.
            self.progress = Progress(_Status(finished_text=Text("✓", style="green")),
                                     TextColumn("{task.description}"), TimeElapsedColumn(), _Bar(), _Percent(),
                                     console=self.console, redirect_stdout=_isatty(sys.stdout))
            self.progress.start()
            self.overall = self.progress.add_task(run_name or "optimize", total=100, overall=True)
            self.rows = {}
        self.rows[step] = self.progress.add_task(f"  [{number}/{count}] {step}", total=None)

    def _done(self, step: str, percent: float) -> None:
        if self.progress is None or step not in self.rows:
            return
        self.progress.update(self.rows.pop(step), total=1, completed=1)
        self.progress.update(self.overall, completed=percent)
        if percent >= 100:
            self._finish()

    def _note(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(Text(message, style="dim"))
        else:
            self.console.print(Text(message))

    def _finish(self) -> None:
        """Stop the display, leaving it on screen; a step still running did not finish."""
        if self.progress is None:
            return
        for task in self.progress.tasks:
            if not task.finished:
                self.progress.update(task.id, failed=True)
                self.progress.stop_task(task.id)
        self.progress.stop()
        self.progress, self.overall, self.rows = None, None, {}

    def close(self) -> None:
        self._finish()
        super().close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False
