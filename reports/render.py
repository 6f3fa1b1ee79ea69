"""Render a TaskReport as JSON, Markdown, self-contained HTML, an artifact table and console lines.

The report content is built once as a list of neutral blocks (heading, paragraph, list,
table, plot) and each format only renders those blocks, so Markdown and HTML never
disagree about what a report says.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from typing import Any, NamedTuple

import numpy as np
from accelflow.reports.results import (
    Accuracy,
    Candidate,
    ComponentReport,
    LatencyStats,
    OutputAccuracy,
    Speedup,
    TaskReport,
)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

NA = "n/a"
_MD_PLOT_DPI = 80  # the artifact's copy of the plot: a data URI of some 10-30 KB


class Code(str):
    """A value from the user or the model (a tensor line, path, shape, setting) that Markdown shows
    as a code span, verbatim. Any other text in a block is prose, escaped; a tuple mixes the two."""


# ---------------------------------------------------------------- JSON


def to_json(report: TaskReport) -> str:
    """report.json: dataclass field order (stable), NaN/inf as null, numpy scalars as Python."""
    return json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # paths, dates, enums: their text is what a reader wants


# ---------------------------------------------------------------- files


def write_report(report: TaskReport, folder: str) -> dict[str, str]:
    """Write report.json, report.md and report.html into folder; return their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {
        "json": os.path.join(folder, "report.json"),
        "markdown": os.path.join(folder, "report.md"),
        "html": os.path.join(folder, "report.html"),
    }
    texts = {"json": to_json(report), "markdown": to_markdown(report), "html": to_html(report)}
    for kind, path in paths.items():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(texts[kind])
    return paths


# ---------------------------------------------------------------- number formats


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_ms(x: float | None) -> str:
    """About three significant figures, never scientific: 123.4, 12.35, 1.23, 0.0123."""
    if _missing(x):
        return NA
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


def fmt_sci(x: float | None) -> str:
    return NA if _missing(x) else f"{x:.2e}"


def fmt_ratio(x: float | None) -> str:
    return NA if _missing(x) else f"{x:.2f}x"


def fmt_speedup(s: Speedup | None) -> str:
    if s is None or _missing(s.ratio):
        return NA
    return f"{fmt_ratio(s.ratio)} ({s.confidence:.0%} CI {s.ci_low:.2f}-{s.ci_high:.2f})"


def fmt_shapes(shapes: dict[str, list[int]]) -> str:
    """Shapes in the tensor-information grammar: `input_ids: 1*128`."""
    return "; ".join(f"{name}: {'*'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else NA
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_json_safe(value))
    return str(value)


# ---------------------------------------------------------------- report content


class ShapeRow(NamedTuple):
    point: str
    shapes: dict[str, list[int]]
    baseline: LatencyStats | None
    optimized: LatencyStats | None
    speedup: Speedup | None


def selected_candidate(report: TaskReport) -> Candidate | None:
    return next((c for c in report.candidates if c.selected), None)


def shape_rows(report: TaskReport) -> list[ShapeRow]:
    """Per shape point: the selected candidate's paired timings (a pipeline's end-to-end ones),
    else the report's dicts."""
    if report.pipeline is not None:
        return [ShapeRow(p.shape_point, p.shapes, p.benchmark.baseline, p.benchmark.optimized, p.benchmark.speedup)
                for p in report.pipeline.points if p.benchmark is not None]
    chosen = selected_candidate(report)
    if chosen is not None and chosen.benchmarks:
        return [ShapeRow(b.shape_point, b.shapes, b.baseline, b.optimized, b.speedup) for b in chosen.benchmarks]
    points = list(dict.fromkeys([*report.baseline, *report.optimized]))
    return [ShapeRow(p, {}, report.baseline.get(p), report.optimized.get(p), None) for p in points]


def worst_output(accuracy: Accuracy | None) -> OutputAccuracy | None:
    """A failing output first; otherwise the largest abs diff relative to the output's range."""
    if accuracy is None or not accuracy.outputs:
        return None

    def badness(o: OutputAccuracy) -> tuple:
        relative = o.max_abs_diff / o.scale if o.scale and not _missing(o.scale) else o.max_abs_diff
        return (not o.passed, -math.inf if _missing(relative) else relative)

    return max(accuracy.outputs, key=badness)


def is_detections(accuracy: Accuracy | None) -> bool:
    """A detector's accuracy (formats/detections.py): its figures sit in the generic fields."""
    return bool(accuracy and accuracy.outputs and accuracy.outputs[0].output == "detections"
                and "min_matched" in accuracy.outputs[0].tolerance)


def _detections_figures(accuracy: Accuracy) -> str:
    det = accuracy.outputs[0]
    text = (f"{det.cosine_similarity:.1%} of detections matched, score diff {fmt_sci(det.max_rel_diff)}, "
            f"box diff {fmt_sci(det.max_abs_diff)} px")
    masks = [o for o in accuracy.outputs if o.output == "masks"]
    return text + (f", worst mask IoU {masks[0].cosine_similarity:.3f}" if masks else "")


def accuracy_verdict(accuracy: Accuracy | None) -> str:
    if accuracy is None:
        return "not checked"
    verdict = "passed" if accuracy.passed else f"failed: {accuracy.reason or 'outside tolerance'}"
    if is_detections(accuracy):
        return f"{verdict} ({accuracy.draws} images); {_detections_figures(accuracy)}"
    worst = worst_output(accuracy)
    if worst is None:
        return f"{verdict} ({accuracy.draws} draws)"
    return (
        f"{verdict} ({accuracy.draws} draws); worst output {worst.output}: "
        f"max abs diff {fmt_sci(worst.max_abs_diff)}, cosine {_fmt_cosine(worst.cosine_similarity)}"
    )


def _fmt_cosine(x: float | None) -> str:
    return NA if _missing(x) else f"{x:.7f}"


def _candidate_verdict(cand: Candidate) -> str:
    if cand.error:
        return f"error: {cand.error}"
    if cand.accuracy is None:
        return "not checked"
    return "passed" if cand.accuracy.passed else f"failed: {cand.accuracy.reason or 'outside tolerance'}"


def failure_reasons(report: TaskReport) -> list[str]:
    reasons = [f"{c.engine} {c.engine_version} {c.precision}: {_candidate_verdict(c)}" for c in report.candidates]
    return reasons or ["no candidate was built"]


def _blocks(report: TaskReport) -> list[tuple]:
    """The whole report as ("h1"|"h2"|"p"|"list"|"table"|"plot", ...) blocks of plain text."""
    return [
        ("h1", f"accelflow report: {report.task_name}"),
        *([("p", f"Created {report.created}")] if report.created else []),
        *_headline_blocks(report),
        *_settings_blocks(report),
        *_shape_blocks(report),
        *_pipeline_blocks(report),
        *_accuracy_blocks(report),
        *_int8_blocks(report),
        *(_component_candidate_blocks(report) if report.components else _candidate_blocks(report)),
        *_timing_blocks(report),
        ("h2", "Library versions"),
        _kv_table(report.library_versions, "library", "version"),
        ("h2", "Machine"),
        _kv_table(report.machine, "property", "value"),
        *([("h2", "Notes"), ("list", list(report.notes))] if report.notes else []),
    ]


def _headline_blocks(report: TaskReport) -> list[tuple]:
    if report.pipeline is not None:
        return _pipeline_headline(report)
    if selected_candidate(report) is None:
        return [
            ("h2", "Result"),
            ("p", "No candidate passed, so there is no optimized model. What each candidate did:"),
            ("list", failure_reasons(report)),
        ]
    points = len(report.optimized) or len(shape_rows(report))
    return [
        ("h2", "Result"),
        ("list", [
            f"Speed-up: {fmt_ratio(report.speedup)} (geometric mean of p50 speed-ups over {points} shape points)",
            f"Engine: {report.engine} {report.engine_version}, precision {report.precision}",
            f"Accuracy: {accuracy_verdict(report.accuracy)}",
            f"Build time: {report.build_seconds:.1f} s",
        ]),
    ]


def _pipeline_headline(report: TaskReport) -> list[tuple]:
    points = report.pipeline.points
    return [
        ("h2", "Result"),
        ("list", [
            f"Speed-up per image: {fmt_ratio(report.speedup)} (geometric mean of p50 speed-ups over "
            f"{len(points)} image shape points; {report.pipeline.steps} denoising steps)",
            "Networks: " + ", ".join(f"{c.name} {c.engine} {c.precision}" for c in report.components),
            "Image: " + ", ".join(f"{p.shape_point} PSNR {_fmt_db(p.psnr_db)} (required >= {p.min_psnr_db:g} dB)"
                                  for p in points),
            f"Accuracy: {accuracy_verdict(report.accuracy)}",
            f"Build time: {report.build_seconds:.1f} s",
        ]),
    ]


def _fmt_db(x: float | None) -> str:
    return NA if _missing(x) else f"{x:.1f} dB"


def _pipeline_blocks(report: TaskReport) -> list[tuple]:
    """The image check, and where each image's seconds go, network by network."""
    if report.pipeline is None:
        return []
    pipe = report.pipeline
    how = (f"{pipe.pipeline_class}, prompt {pipe.prompt!r}, {pipe.steps} steps, guidance scale "
           f"{pipe.guidance_scale:g}, seed {pipe.seed}; original and optimized pipeline with the same seed.")
    images = [[p.shape_point, "yes" if p.passed else "NO", _fmt_db(p.psnr_db), f"{p.min_psnr_db:g} dB",
               fmt_sci(p.max_abs_diff), Code(fmt_shapes(p.shapes))] for p in pipe.points]
    blocks = [("h2", "Pipeline: same image"), ("p", how),
              ("table", ["shape point", "passed", "PSNR", "required", "max abs diff", "shapes"], images),
              ("h2", "Pipeline: seconds per image, by network"),
              ("p", "Speed-up: in the pipeline, seconds per image; per call: the network's own benchmark.")]
    for p in pipe.points:
        blocks += [("p", (f"Shape point {p.shape_point} (", Code(fmt_shapes(p.shapes)), "):")),
                   _seconds_table(report.components, p)]
    return blocks


def _seconds_table(components: list[ComponentReport], point) -> tuple:
    by_name = {c.name: c for c in components}
    rows = []
    for name in point.baseline_seconds:
        base, opt = point.baseline_seconds[name], point.optimized_seconds.get(name)
        c = by_name.get(name)
        by = f"{c.engine} {c.precision}" if c else "PyTorch (not a network)"
        rows.append([name, fmt_ratio(base / opt) if opt else NA, fmt_ratio(c.speedup) if c else NA, f"{base:.3f}",
                     NA if opt is None else f"{opt:.3f}", by])
    # The speed-ups first and the long "optimized by" last: the Prefect UI cuts wide tables at the right.
    return ("table", ["network", "speed-up", "per call", "baseline s", "optimized s", "optimized by"], rows)


def _component_candidate_blocks(report: TaskReport) -> list[tuple]:
    headers = ["network", "candidate", "selected", "speed-up per call", "build s", "accuracy"]
    rows = [
        [comp.name, f"{c.engine} {c.engine_version} {c.precision}", "✓" if c.selected else "", fmt_ratio(c.speedup),
         f"{c.build_seconds:.1f}", _candidate_outcome(c)]
        for comp in report.components for c in comp.candidates
    ]
    why = [block for comp in report.components for block in _why_failed(comp.candidates, f"{comp.name}: ")]
    why = [("p", "Why candidates were not used:"), ("list", [line for b in why[1::2] for line in b[1]])] if why else []
    info = [(f"{c.name}: ", Code("; ".join(c.tensor_info)), f" (exported in {c.export_seconds:.1f} s)")
            for c in report.components]
    return [("h2", "Candidates, per network"), ("table", headers, rows), *why, ("p", "Tensor information per network:"),
            ("list", info)]


def _settings_blocks(report: TaskReport) -> list[tuple]:
    fixed = {
        "task name": report.task_name, "model": report.model, "version": report.version,
        "format": report.format, "level": report.level, "device": report.device,
    }
    # A list, not a table: the Prefect UI neither wraps table cells nor shows their scroll bar, so a long
    # path in a table was cut off; a list item has the page's whole width.
    settings = [(f"{key}: ", Code(_text(value))) for key, value in {**fixed, **report.settings}.items()]
    blocks = [("h2", "Settings"), ("list", settings)]
    if report.tensor_info:
        blocks += [("p", "Tensor information:"), ("list", [Code(line) for line in report.tensor_info])]
    return blocks


def _shape_blocks(report: TaskReport) -> list[tuple]:
    """A narrow table with the speed-ups first, then the detailed statistics, one row per side:
    one wide table was cut off at the right in the Prefect UI, hiding the speed-up column."""
    rows = shape_rows(report)
    summary = [[r.point, _p50(r.baseline), _p50(r.optimized), fmt_speedup(r.speedup)] for r in rows]
    details = [[r.point, side, *_stat_cells(stats)]
               for r in rows for side, stats in (("baseline", r.baseline), ("optimized", r.optimized))]
    shapes = [(f"{r.point}: ", Code(fmt_shapes(r.shapes))) for r in rows if r.shapes]
    return [
        ("h2", "Latency per shape point"),
        ("plot",),
        ("table", ["shape point", "baseline p50 ms", "optimized p50 ms", "speed-up (95% CI)"], summary),
        *([("p", "Shapes per shape point:"), ("list", shapes)] if shapes else []),
        ("p", "Latency in detail (ms; samples/s is the throughput):"),
        ("table", ["shape point", "run", "mean", "p50", "p90", "p99", "samples/s"], details),
    ]


def _p50(stats: LatencyStats | None) -> str:
    return NA if stats is None else fmt_ms(stats.p50)


def _stat_cells(stats: LatencyStats | None) -> list[str]:
    if stats is None:
        return [NA] * 5
    return [fmt_ms(stats.mean), fmt_ms(stats.p50), fmt_ms(stats.p90), fmt_ms(stats.p99), f"{stats.throughput:,.1f}"]


def _accuracy_blocks(report: TaskReport) -> list[tuple]:
    if is_detections(report.accuracy):
        return _detection_accuracy_blocks(report)
    outputs = report.accuracy.outputs
    # Two narrow tables rather than one of eight columns, which the Prefect UI cut off at the right.
    figures = [[o.output, "yes" if o.passed else "NO", fmt_sci(o.max_abs_diff), fmt_sci(o.max_rel_diff),
                _fmt_cosine(o.cosine_similarity)] for o in outputs]
    limits = [[o.output, fmt_sci(o.scale), f"{o.mismatch_share:.2%}", _fmt_tolerance(o)] for o in outputs]
    return [("h2", "Accuracy against the original"), ("p", accuracy_verdict(report.accuracy)),
            ("table", ["output", "passed", "max abs diff", "max rel diff", "cosine similarity"], figures),
            ("table", ["output", "scale", "mismatch share", "tolerance"], limits), *_int8_accuracy_figures(outputs)]


def _int8_blocks(report: TaskReport) -> list[tuple]:
    """How INT8 was made and judged: calibration, each attempt at the gate, what stayed float."""
    q = report.int8
    if not q:
        return []
    facts = [f"outcome: {q['outcome']}", f"method: {q['method']}", f"calibration: {q['calibration']}",
             f"operations quantized: {q['quantized_ops']}",
             f"kept in float: {', '.join(q['kept_in_float']) or 'none'}", *q.get("warnings", [])]
    rows = [[str(i), str(len(a["kept_in_float"])), "yes" if a["passed"] else "NO", a["reason"] or "passed"]
            for i, a in enumerate(q["attempts"], 1)]
    return [("h2", "INT8"), ("list", facts),
            ("table", ["attempt", "operations in float", "passed", "gate"], rows)]


def _int8_accuracy_figures(outputs: list[OutputAccuracy]) -> list[tuple]:
    """Relative L2 error and top-k agreement, for the outputs an int8 gate judged by them."""
    rows = [[o.output, fmt_sci(o.rel_l2), _fmt_share(o.top1_agreement), _fmt_share(o.top5_agreement)]
            for o in outputs if "max_rel_l2" in o.tolerance]
    return [("table", ["output", "relative L2 error", "top-1 agreement", "top-5 agreement"], rows)] if rows else []


def _fmt_share(x: float | None) -> str:
    return NA if x is None else f"{x:.1%}"


def _fmt_tolerance(o: OutputAccuracy) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in o.tolerance.items())


def _detection_accuracy_blocks(report: TaskReport) -> list[tuple]:
    """Detections matched by IoU (docs/detectors.md): matched share, score and box diff, mask IoU."""
    headers = ["output", "passed", "matched share / mask IoU", "score diff", "box diff (px)", "tolerance"]
    rows = [
        [o.output, "yes" if o.passed else "NO",
         f"{o.cosine_similarity:.3f}" if o.output == "masks" else f"{o.cosine_similarity:.2%}",
         NA if o.output == "masks" else fmt_sci(o.max_rel_diff), NA if o.output == "masks" else fmt_sci(o.max_abs_diff),
         _fmt_tolerance(o)]
        for o in report.accuracy.outputs
    ]
    return [("h2", "Accuracy against the original (detections matched by IoU)"),
            ("p", accuracy_verdict(report.accuracy)), ("table", headers, rows)]


def _candidate_blocks(report: TaskReport) -> list[tuple]:
    # Short cells only (the Prefect UI does not wrap table cells): why a candidate failed is listed below.
    headers = ["engine", "version", "precision", "selected", "speed-up", "build s", "accuracy"]
    rows = [
        [c.engine, c.engine_version, c.precision, "✓" if c.selected else "", fmt_ratio(c.speedup),
         f"{c.build_seconds:.1f}", _candidate_outcome(c)]
        for c in report.candidates
    ]
    notes = [f"{c.engine} {c.precision}: {note}" for c in report.candidates for note in c.notes]
    return [("h2", "Candidates"), ("table", headers, rows), *_why_failed(report.candidates),
            *([("p", "Engine notes:"), ("list", notes)] if notes else [])]


def _candidate_outcome(cand: Candidate) -> str:
    """One word for a table cell: passed, failed, error or not checked."""
    return _candidate_verdict(cand).split(":")[0]


def _why_failed(candidates: list[Candidate], network: str = "") -> list[tuple]:
    lines = [f"{network}{c.engine} {c.engine_version} {c.precision}: {_candidate_verdict(c)}"
             for c in candidates if _candidate_outcome(c) in ("failed", "error")]
    return [("p", "Why candidates were not used:"), ("list", lines)] if lines else []


def _timing_blocks(report: TaskReport) -> list[tuple]:
    # A "total" entry, if the flow recorded one, is the wall time; otherwise steps add up.
    total = report.timings.get("total") or sum(v for k, v in report.timings.items() if k != "total")
    rows = [
        [step, f"{seconds:.2f}", f"{seconds / total:.1%}" if total else NA]
        for step, seconds in report.timings.items()
    ]
    return [("h2", "Time per step"), ("table", ["step", "seconds", "share of total"], rows)]


def _kv_table(mapping: dict[str, Any], key: str, value: str) -> tuple:
    return ("table", [key, value], [[str(k), _text(v)] for k, v in mapping.items()])


# ---------------------------------------------------------------- Markdown

PLOT_ALT = "latency per shape point"
_PLOT_REF = "latency-plot"
# Backslash-escaped wherever they stand: emphasis, code, links, raw HTML, tables, strikethrough, entities.
_MD_ALWAYS = set("\\`*[]<>|~&")
# What would make a line a heading, list, quote or thematic break when it starts a paragraph or list item.
_MD_LINE_START = re.compile(r"^(\s*\d*)([#>+=.)-])")


def to_markdown(report: TaskReport) -> str:
    """report.md and the Prefect artifact: every value verbatim, tables narrow enough for the UI,
    the plot as a PNG data URI (a reference link defined at the end, so the file stays readable)."""
    png = latency_plot_png(shape_rows(report), dpi=_MD_PLOT_DPI)
    no_plot = ("p", "No latency was measured.")
    text = "\n\n".join(_md_block(no_plot if block == ("plot",) and png is None else block) for block in _blocks(report))
    if png is not None:
        text += f"\n\n[{_PLOT_REF}]: data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
    return text + "\n"


def md_escape(text: str) -> str:
    """Prose that renders as itself in CommonMark/GFM (and the UI's marked): metacharacters get a backslash.
    An underscore inside a word never starts emphasis, so `pooler_output` stays as it is."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    out = []
    for i, ch in enumerate(text):
        if ch in _MD_ALWAYS or (ch == "_" and not _inside_word(text, i)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _inside_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def md_code(text: str) -> str:
    """A code span showing text verbatim: a fence longer than any run of backticks inside it,
    padded when text starts or ends with a backtick (CommonMark strips one space each side)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" or (text[0] == text[-1] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(value: Any, in_table: bool = False) -> str:
    """Inline text: a Code value as a code span, a tuple of parts part by part, anything else as prose."""
    if isinstance(value, tuple):
        return "".join(_md_inline(part, in_table) for part in value)
    if isinstance(value, Code):
        # GFM splits table cells at a pipe even inside a code span; a backslash keeps it in the cell.
        return md_code(value).replace("|", "\\|") if in_table else md_code(value)
    return md_escape(value)


def _md_line(value: Any) -> str:
    """Inline text that starts a block (paragraph, list item): a leading `#`, `-`, `1.`... stays text."""
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), _md_inline(value), count=1)


def _md_block(block: tuple) -> str:
    kind = block[0]
    if kind == "h1":
        return f"# {_md_inline(block[1])}"
    if kind == "h2":
        return f"## {_md_inline(block[1])}"
    if kind == "p":
        return _md_line(block[1])
    if kind == "list":
        return "\n".join(f"- {_md_line(item)}" for item in block[1])
    if kind == "plot":
        return f"![{PLOT_ALT}][{_PLOT_REF}]"
    headers, rows = block[1], block[2]
    cells = [[_md_inline(h, True) for h in headers]] + [[_md_inline(c, True) for c in row] for row in rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines[:1] + ["|" + "---|" * len(headers)] + lines[1:])


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


def to_html(report: TaskReport) -> str:
    """One self-contained file: inline CSS, the plot as a data URI, no external references."""
    body = "\n".join(_html_block(block, report) for block in _blocks(report))
    title = html.escape(f"accelflow report: {report.task_name}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: tuple, report: TaskReport) -> str:
    kind, esc = block[0], _html_text
    if kind in ("h1", "h2", "p"):
        return f"<{kind}>{esc(block[1])}</{kind}>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>"
    if kind == "plot":
        png = latency_plot_png(shape_rows(report))
        if png is None:
            return "<p>No latency was measured.</p>"
        data = base64.b64encode(png).decode("ascii")
        return f'<img alt="baseline and optimized latency per shape point" src="data:image/png;base64,{data}">'
    head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _html_text(value: Any) -> str:
    """Escaped text; a tuple of parts (prose and Code) joined, as HTML shows both alike."""
    return html.escape("".join(value) if isinstance(value, tuple) else str(value))


def latency_plot_png(rows: list[ShapeRow], dpi: int = 100) -> bytes | None:
    """Grouped bars of p50 per shape point, whiskers up to p90; None when nothing was timed."""
    if not any(r.baseline or r.optimized for r in rows):
        return None
    # A bare Figure with its own Agg canvas: no pyplot, so no global backend or figure state.
    figure = Figure(figsize=(max(5.0, 1.6 * len(rows) + 2), 3.6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.38
    for offset, side, color in ((-width / 2, "baseline", "#9a9a9a"), (width / 2, "optimized", "#2b7bba")):
        timed = [(i, getattr(r, side)) for i, r in enumerate(rows) if getattr(r, side) is not None]
        if timed:
            p50 = np.array([s.p50 for _, s in timed])
            whisker = np.array([max(s.p90 - s.p50, 0.0) for _, s in timed])
            axes.bar([i + offset for i, _ in timed], p50, width, label=side, color=color,
                     yerr=[np.zeros_like(whisker), whisker], capsize=4)
    axes.set_xticks(range(len(rows)), [r.point.replace("$", r"\$") for r in rows])
    axes.set_ylabel("latency, ms (p50, whisker to p90)")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------- artifact table and console


def _round(x: float | None, digits: int) -> float | None:
    """Plain Python float with `digits` significant figures; None for missing values."""
    if _missing(x):
        return None
    return float(f"{float(x):.{digits}g}")


def summary_table(report: TaskReport) -> list[dict]:
    """Rows for a Prefect table artifact: JSON-safe Python values only."""
    return [
        {
            "shape point": r.point,
            "baseline p50 ms": _round(r.baseline.p50 if r.baseline else None, 4),
            "optimized p50 ms": _round(r.optimized.p50 if r.optimized else None, 4),
            "speed-up": _round(r.speedup.ratio if r.speedup else None, 4),
            "ci low": _round(r.speedup.ci_low if r.speedup else None, 4),
            "ci high": _round(r.speedup.ci_high if r.speedup else None, 4),
            "shapes": fmt_shapes(r.shapes),  # last: long for many inputs, and the UI does not wrap cells
        }
        for r in shape_rows(report)
    ]


def console_summary(report: TaskReport, result_folder: str) -> str:
    """The lines the CLI prints when a task ends."""
    files = f"report: {os.path.join(result_folder, 'report.html')} (also report.json, report.md)"
    if report.pipeline is not None:
        return _pipeline_summary(report, files)
    if selected_candidate(report) is None:
        lines = [f"{report.task_name}: no candidate passed, no optimized model."]
        return "\n".join(lines + [f"  {reason}" for reason in failure_reasons(report)] + [files])
    per_point = ", ".join(f"{r.point} {fmt_speedup(r.speedup)}" for r in shape_rows(report) if r.speedup)
    return "\n".join([
        f"{report.task_name}: speed-up {fmt_ratio(report.speedup)} (geometric mean over shape points)",
        *([f"per shape point: {per_point}"] if per_point else []),
        f"engine: {report.engine} {report.engine_version}, precision {report.precision}",
        f"accuracy: {accuracy_verdict(report.accuracy)}",
        files,
    ])


def _pipeline_summary(report: TaskReport, files: str) -> str:
    per_point = ", ".join(f"{r.point} {fmt_speedup(r.speedup)}" for r in shape_rows(report) if r.speedup)
    images = ", ".join(f"{p.shape_point} {_fmt_db(p.psnr_db)}" for p in report.pipeline.points)
    return "\n".join([
        f"{report.task_name}: speed-up per image {fmt_ratio(report.speedup)} (geometric mean over shape points)",
        *([f"per shape point: {per_point}"] if per_point else []),
        "networks: " + ", ".join(f"{c.name} {c.engine} {c.precision} {fmt_ratio(c.speedup)}" for c in report.components),
        f"image PSNR against the original: {images}",
        f"accuracy: {accuracy_verdict(report.accuracy)}",
        files,
    ])
