import base64
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from accelflow.reports.render import (
    console_summary,
    fmt_ms,
    fmt_sci,
    summary_table,
    to_html,
    to_json,
    to_markdown,
    write_report,
)
from accelflow.reports.results import Accuracy, Candidate, OutputAccuracy, ShapeBenchmark, TaskReport
from accelflow.reports.stats import geometric_mean, latency_stats, speedup

SHAPES = {
    "min": {"input_ids": [1, 16], "attention_mask": [1, 16]},
    "mid": {"input_ids": [4, 64], "attention_mask": [4, 64]},
    "max": {"input_ids": [8, 128], "attention_mask": [8, 128]},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(point, base_ms, opt_ms, rng):
    batch = SHAPES[point]["input_ids"][0]
    base = rng.normal(base_ms, base_ms * 0.02, (40, 5))
    opt = rng.normal(opt_ms, opt_ms * 0.02, (40, 5))
    return ShapeBenchmark(
        shape_point=point,
        shapes=SHAPES[point],
        baseline=latency_stats(base.ravel(), batch),
        optimized=latency_stats(opt.ravel(), batch),
        speedup=speedup(base, opt, resamples=200),
    )


def _accuracy(passed=True, reason=""):
    outputs = [
        OutputAccuracy("last_hidden_state", 0.021, 0.8, 0.99999, 4.4, {"atol": 0.05, "min_cosine": 0.9999}, True),
        OutputAccuracy("pooler_output", 0.004 if passed else 0.3, 0.02, 0.999995 if passed else 0.97, 1.0,
                       {"atol": 0.05, "min_cosine": 0.9999}, passed),
    ]
    return Accuracy(passed=passed, draws=8, outputs=outputs, reason=reason)


def make_report(task_name="bert-demo-bert-1#1", selected=True):
    """A realistic report: 3 shape points, one selected candidate, one failed, one build error."""
    rng = np.random.default_rng(7)
    benches = [_bench(p, b, o, rng) for p, b, o in (("min", 8.0, 4.0), ("mid", 40.0, 18.0), ("max", 120.0, 50.0))]
    ratio = geometric_mean([b.speedup.ratio for b in benches])
    good = Candidate("openvino", "2025.1.0", "bf16", 12.5, _accuracy(), benches, ratio, selected,
                     notes=["INFERENCE_PRECISION_HINT=bf16"])
    failed = Candidate("onnxruntime", "1.20.1", "f16", 3.2,
                       _accuracy(False, "pooler_output: cosine 0.97 below 0.9999"))
    broken = Candidate("tensorrt", "10.12", "f16", 0.4, error="TensorRT is not installed on this machine")
    return TaskReport(
        task_name=task_name,
        model="bert-base-uncased",
        version="1",
        format="torchscript",
        level="FP16",
        device="cpu-zen4",
        engine="openvino" if selected else "",
        engine_version="2025.1.0" if selected else "",
        precision="bf16" if selected else "",
        speedup=ratio if selected else float("nan"),
        baseline={b.shape_point: b.baseline for b in benches},
        optimized={b.shape_point: b.optimized for b in benches} if selected else {},
        accuracy=_accuracy() if selected else failed.accuracy,
        candidates=[good, failed, broken],
        tensor_info=["input_ids:int32(1*16,8*128)", "attention_mask:int32(1*16,8*128)"],
        build_seconds=16.1,
        timings={"orchestration": 2.0, "convert": 3.0, "build": 10.0, "benchmark": 5.0},
        library_versions={"onnx": "1.17.0", "openvino": "2025.1.0", "numpy": "2.1.3"},
        machine={"cpu": "AMD EPYC Zen 4", "cores": 2, "memory_gb": 8.0},
        settings={"tags": ["nlp", "demo"], "qat": False, "output_path": "repo/out", "threads": 2},
        notes=["thread count fixed to 2 for baseline and candidates"],
        created="2025-06-01T12:00:00+00:00",
    )


@pytest.fixture(scope="module")
def report():
    return make_report()


def test_json_round_trip_equals_original(report):
    assert TaskReport.from_dict(json.loads(to_json(report))) == report


def test_json_contract_fields_present(report):
    data = json.loads(to_json(report))
    for key in ("task_name", "model", "version", "format", "level", "device", "engine", "engine_version",
                "speedup", "baseline", "optimized", "accuracy", "build_seconds", "library_versions", "machine"):
        assert key in data
    assert set(data["baseline"]["mid"]) >= {"mean", "p50", "p90", "p99", "throughput"}
    assert set(data["accuracy"]["outputs"][0]) >= {"max_abs_diff", "max_rel_diff", "cosine_similarity",
                                                   "tolerance", "passed"}


def test_json_nan_inf_become_null_and_numpy_scalars_plain():
    report = make_report(selected=False)
    report.settings["ratio"] = np.float64(1.5)
    report.settings["count"] = np.int64(3)
    report.settings["flag"] = np.bool_(True)
    report.machine["limit"] = float("inf")
    text = to_json(report)
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["speedup"] is None
    assert data["machine"]["limit"] is None
    assert data["settings"]["ratio"] == 1.5 and data["settings"]["count"] == 3 and data["settings"]["flag"] is True
    assert to_json(report) == text  # same report, same bytes


def test_markdown_lists_every_candidate_output_shape_and_setting(report):
    md = to_markdown(report)
    assert md.startswith("# accelflow report: bert-demo-bert-1#1")
    for cand in report.candidates:
        assert re.search(rf"\| {cand.engine} \| {re.escape(cand.engine_version)} \| {cand.precision} \|", md)
    assert "error: TensorRT is not installed on this machine" in md
    assert "failed: pooler_output: cosine 0.97 below 0.9999" in md
    for output in ("last_hidden_state", "pooler_output"):
        assert f"| {output} |" in md
    for point, shapes in SHAPES.items():
        assert f"- {point}: `input_ids: {shapes['input_ids'][0]}*{shapes['input_ids'][1]}; attention_mask:" in md
    for line in report.tensor_info + ["bert-base-uncased", "torchscript", "FP16", "cpu-zen4", "output_path"]:
        assert line in md
    assert "2.10e-02" in md  # max abs diff in scientific notation
    assert "| openvino | 2025.1.0 |" in md and "| AMD EPYC Zen 4 |" in md


def test_markdown_headline_and_timing_shares(report):
    md = to_markdown(report)
    assert f"Speed-up: {report.speedup:.2f}x" in md
    assert "Engine: openvino 2025.1.0, precision bf16" in md
    assert "Accuracy: passed (8 draws); worst output last_hidden_state" in md
    for step, share in (("orchestration", "10.0%"), ("convert", "15.0%"), ("build", "50.0%"), ("benchmark", "25.0%")):
        assert f"| {step} |" in md and share in md
    mid = report.candidates[0].benchmarks[1].speedup
    assert f"{mid.ratio:.2f}x (95% CI {mid.ci_low:.2f}-{mid.ci_high:.2f})" in md


def _data_images(page):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_html_is_self_contained_with_png_plot(report):
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = _data_images(page)
    assert len(images) == 1
    assert base64.b64decode(images[0]).startswith(PNG_MAGIC)
    for cand in report.candidates:
        assert f"<td>{cand.engine}</td>" in page


def test_html_and_markdown_escape_user_strings():
    evil = "<script>alert(1)</script>"
    report = make_report(task_name=evil)
    report.model = '<img src=x onerror="alert(2)">'
    report.settings["tags"] = ["<b>tag</b>"]
    report.candidates[2].error = "<iframe>broken</iframe>"
    page = to_html(report)
    for raw in (evil, "<img src=x", "<b>tag", "<iframe>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;iframe&gt;broken&lt;/iframe&gt;" in page
    md = to_markdown(report)
    prose = _outside_code_spans(md)  # inside a code span, `<` is text, never HTML
    assert evil not in prose and "<iframe>" not in prose and "<img" not in prose and "<b>" not in prose
    assert f"- task name: `{evil}`" in md
    assert "\\<script\\>alert(1)\\</script\\>" in md


def _outside_code_spans(md: str) -> str:
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md)


def test_markdown_escapes_table_pipes():
    report = make_report()
    report.candidates[2].error = "a | b"
    md = to_markdown(report)
    assert "error: a \\| b" in md


def test_write_report_writes_three_files(tmp_path, report):
    folder = tmp_path / "out" / "task"
    paths = write_report(report, str(folder))
    assert set(paths) == {"json", "markdown", "html"}
    assert sorted(os.listdir(folder)) == ["report.html", "report.json", "report.md"]
    assert paths["json"] == str(folder / "report.json")
    assert TaskReport.from_dict(json.loads((folder / "report.json").read_text())) == report
    assert (folder / "report.md").read_text(encoding="utf-8") == to_markdown(report)
    assert _data_images((folder / "report.html").read_text(encoding="utf-8"))


def test_summary_table_is_plain_json(report):
    rows = summary_table(report)
    json.dumps(rows, allow_nan=False)
    assert [r["shape point"] for r in rows] == ["min", "mid", "max"]
    for row, bench in zip(rows, report.candidates[0].benchmarks):
        assert all(type(v) in (str, float) for v in row.values())
        assert row["speed-up"] == pytest.approx(bench.speedup.ratio, rel=1e-3)
        assert row["baseline p50 ms"] == pytest.approx(bench.baseline.p50, rel=1e-3)
        assert row["ci low"] <= row["speed-up"] <= row["ci high"]
    assert rows[0]["shapes"] == "input_ids: 1*16; attention_mask: 1*16"


def test_console_summary_mentions_speedup_engine_accuracy_and_folder(report):
    text = console_summary(report, "/results/bert-demo")
    assert f"speed-up {report.speedup:.2f}x" in text
    assert "95% CI" in text
    assert "openvino 2025.1.0, precision bf16" in text
    assert "accuracy: passed" in text and "last_hidden_state" in text
    assert "/results/bert-demo/report.html" in text
    assert len(text.splitlines()) <= 6


def test_no_selected_candidate_renders_reasons(tmp_path):
    report = make_report(selected=False)
    md = to_markdown(report)
    assert "No candidate passed" in md
    assert "tensorrt 10.12 f16: error: TensorRT is not installed on this machine" in md
    assert "onnxruntime 1.20.1 f16: failed: pooler_output" in md
    page = to_html(report)
    assert "No candidate passed" in page
    assert base64.b64decode(_data_images(page)[0]).startswith(PNG_MAGIC)  # baseline bars still plotted
    text = console_summary(report, str(tmp_path))
    assert "no candidate passed" in text and str(tmp_path) in text
    assert all(r["optimized p50 ms"] is None and r["speed-up"] is None for r in summary_table(report))
    json.dumps(summary_table(report), allow_nan=False)
    write_report(report, str(tmp_path))
    assert json.loads((tmp_path / "report.json").read_text())["speedup"] is None


def test_report_without_any_timing_still_renders():
    report = make_report(selected=False)
    report.baseline, report.candidates = {}, []
    page = to_html(report)
    assert "No latency was measured" in page and "no candidate was built" in page
    assert summary_table(report) == []


def test_number_formats():
    assert fmt_ms(123.456) == "123.5"
    assert fmt_ms(12.346) == "12.35"
    assert fmt_ms(1.2345) == "1.23"
    assert fmt_ms(0.012345) == "0.0123"
    assert fmt_ms(float("nan")) == "n/a" and fmt_ms(None) == "n/a"
    assert fmt_sci(0.000021) == "2.10e-05"
    assert math.isclose(float(fmt_sci(0.000021)), 2.1e-5)


def test_reports_import_no_prefect_torch_or_pyplot():
    code = (
        "import sys, reports.render, reports.stats\n"
        "from tests.reports.test_render import make_report\n"
        "reports.render.to_html(make_report())\n"
        "bad = [m for m in ('prefect', 'torch', 'matplotlib.pyplot', 'tensorflow', 'openvino') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_detectors_accuracy_is_told_in_detection_terms():
    """Matched share, score and box diff and mask IoU, not 'max abs diff' and 'cosine'."""
    import dataclasses

    from accelflow.formats import detections

    structure = detections.output_structure(1, masks=True)
    mask = np.zeros((1, 8, 8), bool)
    mask[0, :4, :4] = True
    ref = [np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32), np.array([1]), mask]
    got = [ref[0] + 0.25, np.array([0.89], np.float32), ref[2], mask]
    accuracy = detections.compare([ref], [got], structure, detections.tolerances("fp16"))
    report = dataclasses.replace(make_report(), accuracy=accuracy)
    md = to_markdown(report)
    assert "passed (1 images); 100.0% of detections matched, score diff 1.00e-02, box diff 2.50e-01 px, worst mask IoU 1.000" in md
    assert "| detections | yes | 100.00% |" in md and "| masks | yes | 1.000 |" in md and "cosine" not in md.split("## Accuracy")[1].split("##")[0]


# ---------------------------------------------------------------- Markdown as the Prefect UI shows it


def _md_cells(md: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with header_start, split at unescaped pipes."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return [rows[0]] + rows[2:]


def test_markdown_tensor_information_and_shapes_are_code_spans():
    report = make_report()
    report.tensor_info = ["input_0:float32(1*3*16*16,2*3*16*16)"]
    md = to_markdown(report)
    assert "- `input_0:float32(1*3*16*16,2*3*16*16)`" in md  # not `*` as emphasis
    assert "- min: `input_ids: 1*16; attention_mask: 1*16`" in md
    assert "\n- model: `bert-base-uncased`\n" in md
    assert '\n- tags: `["nlp", "demo"]`\n' in md


def test_markdown_escapes_metacharacters_in_names_and_reasons():
    report = make_report(task_name="a|b_c <tag> *x* `q` _u_")
    report.candidates[2].error = "needs <libnvinfer> | see _docs_ [here](x) & 1*2"
    md = to_markdown(report)
    assert md.startswith("# accelflow report: a\\|b_c \\<tag\\> \\*x\\* \\`q\\` \\_u\\_\n")
    assert "error: needs \\<libnvinfer\\> \\| see \\_docs\\_ \\[here\\](x) \\& 1\\*2" in md
    prose = _outside_code_spans(md)
    assert "<tag>" not in prose and "<libnvinfer>" not in prose
    assert "pooler_output" in md  # an underscore inside a word cannot start emphasis: left readable
    assert "\n- task name: ``a|b_c <tag> *x* `q` _u_``\n" in md  # a code span, its fence longer than inside


def test_md_code_handles_backticks_and_edges():
    from accelflow.reports.render import md_code

    assert md_code("a*b") == "`a*b`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x``") == "``` `x`` ```"
    assert md_code("") == ""


def test_md_escape_keeps_block_starts_as_text():
    report = make_report()
    report.notes = ["# not a heading", "- not a sublist", "1. not a numbered list", "> not a quote"]
    md = to_markdown(report)
    for note in ("\\# not a heading", "\\- not a sublist", "1\\. not a numbered list", "\\> not a quote"):
        assert f"\n- {note}" in md


def test_latency_table_is_split_with_the_speedup_in_a_narrow_table(report):
    md = to_markdown(report)
    summary = _md_cells(md, "| shape point | baseline p50 ms |")
    assert summary[0] == ["shape point", "baseline p50 ms", "optimized p50 ms", "speed-up (95% CI)"]
    for row, bench in zip(summary[1:], report.candidates[0].benchmarks):
        assert row[0] == bench.shape_point
        assert row[3] == f"{bench.speedup.ratio:.2f}x (95% CI {bench.speedup.ci_low:.2f}-{bench.speedup.ci_high:.2f})"
    details = _md_cells(md, "| shape point | run |")
    assert details[0] == ["shape point", "run", "mean", "p50", "p90", "p99", "samples/s"]
    assert [(r[0], r[1]) for r in details[1:]] == [(p, side) for p in SHAPES for side in ("baseline", "optimized")]
    widest = max(len(line) for line in md.splitlines() if line.startswith("|"))
    assert widest < 130, widest  # no table row as wide as the old 13-column one


def test_markdown_embeds_the_latency_plot_as_a_small_png(report):
    md = to_markdown(report)
    assert "![latency per shape point][latency-plot]" in md
    encoded = re.findall(r"^\[latency-plot\]: data:image/png;base64,([A-Za-z0-9+/=]+)$", md, re.MULTILINE)
    assert len(encoded) == 1
    png = base64.b64decode(encoded[0], validate=True)
    assert png.startswith(PNG_MAGIC) and len(png) < 40_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 100
    assert md.index("## Latency per shape point") < md.index("![latency per shape point]")
    assert md.rstrip("\n").splitlines()[-1].startswith("[latency-plot]: ")  # the blob last: the file stays readable


def test_markdown_without_timings_has_no_plot():
    report = make_report(selected=False)
    report.baseline, report.optimized = {}, {}
    report.candidates = [c for c in report.candidates if not c.benchmarks]
    md = to_markdown(report)
    assert "data:image" not in md and "latency-plot" not in md and "No latency was measured." in md


def make_pipeline_report():
    """A diffusers-like report: two networks, one image shape point timed end to end."""
    from accelflow.reports.results import ComponentReport, PipelinePoint, PipelineReport

    report = make_report(task_name="sd-fp16")
    bench = report.candidates[0].benchmarks[0]
    unet = ComponentReport("unet", ["sample:float16(2*4*4*4)", "timestep:int64(1)"], "openvino", "2025.1.0", "f16",
                           2.1, _accuracy(), [report.candidates[0], report.candidates[2]], 12.0)
    vae = ComponentReport("vae_decoder", ["latent_sample:float16(1*4*4*4)"], "onnxruntime", "1.20.1", "f16",
                          1.4, _accuracy(), [report.candidates[1]], 3.0)
    point = PipelinePoint("fixed", {"image": [1, 3, 32, 32]}, 41.5, 30.0, 0.02, True, bench,
                          {"unet": 0.8, "vae_decoder": 0.2, "other": 0.1}, {"unet": 0.4, "vae_decoder": 0.15})
    report.components = [unet, vae]
    report.pipeline = PipelineReport("StableDiffusionPipeline", "a *red* <cat> | `x`", 20, 7.5, 0, [point])
    return report


@pytest.mark.parametrize("build", [make_report, make_pipeline_report], ids=["model", "pipeline"])
def test_every_table_is_narrow_with_its_speedup_before_long_text(build):
    """The Prefect UI does not wrap table cells and cuts a table at about 700 px: few, short cells per row,
    and a speed-up column (where there is one) before any long text."""
    md = to_markdown(build())
    tables = [_md_cells(md, line) for i, line in enumerate(md.splitlines())
              if line.startswith("|") and not md.splitlines()[i - 1].startswith("|")]
    assert len(tables) >= 7
    for table in tables:
        for row in table:
            assert len(row) <= 7 and sum(len(c) for c in row) <= 75, row
        speedups = [i for i, h in enumerate(table[0]) if h.startswith("speed-up")]
        assert all(i <= 5 for i in speedups), table[0]


def test_failed_candidates_are_listed_with_their_reasons_under_the_table(report):
    md = to_markdown(report)
    rows = {r[0]: r for r in _md_cells(md, "| engine | version |")[1:]}
    assert rows["openvino"][3:] == ["✓", f"{report.candidates[0].speedup:.2f}x", "12.5", "passed"]
    assert rows["onnxruntime"][-1] == "failed" and rows["tensorrt"][-1] == "error"
    why = md.split("Why candidates were not used:")[1]
    assert "- onnxruntime 1.20.1 f16: failed: pooler_output: cosine 0.97 below 0.9999" in why
    assert "- tensorrt 10.12 f16: error: TensorRT is not installed on this machine" in why


def test_pipeline_report_keeps_its_values_verbatim():
    md = to_markdown(make_pipeline_report())
    assert "- unet: `sample:float16(2*4*4*4); timestep:int64(1)` (exported in 12.0 s)" in md
    assert "prompt 'a \\*red\\* \\<cat\\> \\| \\`x\\`'" in md
    assert "Shape point fixed (`image: 1*3*32*32`):" in md
    assert "| fixed | yes | 41.5 dB | 30 dB | 2.00e-02 | `image: 1*3*32*32` |" in md
    assert "- vae_decoder: onnxruntime 1.20.1 f16: failed: pooler_output" in md
    assert "![latency per shape point][latency-plot]" in md
