"""Benchmark rows, ratios, machine peak, and the CSV / Markdown files."""

from __future__ import annotations

import os
import platform
import time

import pandas as pd
from accelflow.core.runner import thread_count
from accelflow.reports.stats import latency_stats

ACCELFLOW = "accelflow "  # the prefix of accelflow's runner labels: "accelflow lossless", "accelflow int8", ...


def row(model: str, batch: int, label: str, runner, rounds: list[list[float]], flops: float) -> dict:
    stats = latency_stats([ms for block in rounds for ms in block], batch)
    return {
        "model": model, "batch": batch, "runner": label, "precision": runner.precision,
        "engine": getattr(runner, "engine", ""), "p50_ms": stats.p50, "mean_ms": stats.mean,
        "p90_ms": stats.p90, "samples": stats.iterations, "gflop": flops / 1e9,
    }


def machine_peak() -> dict:
    """The machine's FP32 peak, measured: a 2048^3 GEMM in PyTorch (MKL) with the threads the
    benchmark uses. A clock-based figure is not used: the VM reports its base clock (2.3 GHz)
    while the cores run faster, so cores x clock x 32 FLOP/cycle understates what they do."""
    import torch
    from accelflow.engines.machine import machine_info

    cores = thread_count()
    mhz = _cpu_mhz()
    flags = machine_info()["cpu_flags"]
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    fastest = min(_seconds(lambda: a @ b) for _ in range(20))  # the best call: other load only slows calls
    measured = 2 * 2048**3 / fastest / 1e9
    return {"cores": cores, "mhz": mhz, "peak_gflops": measured, "cpu": _cpu_name(), "cpu_flags": flags}


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _cpu_mhz() -> float:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1])
    return 0.0


def _cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def frame(rows: list[dict], peak: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    eager = df[df.runner == "pytorch eager fp32"].set_index(["model", "batch"]).p50_ms
    df["speedup_vs_eager"] = [eager[(m, b)] / p for m, b, p in zip(df.model, df.batch, df.p50_ms)]
    df["peak_fraction"] = df.gflop / (df.p50_ms / 1000) / peak["peak_gflops"]
    df["vs_best_alternative"] = [_vs_best(df, r, r.runner == "accelflow lossless") for r in df.itertuples()]
    df["vs_best_f32_alternative"] = [_vs_best(df, r, True) for r in df.itertuples()]
    return df


def _vs_best(df: pd.DataFrame, r, f32_only: bool) -> float | None:
    """An accelflow row against the best alternative: for lossless the best FP32 one; for the fp16 and
    int8 levels the best of any precision (they allow reduced precision but do not require it), and,
    in a column of its own, the best FP32 one (the int8 target's 'best f32 peer')."""
    if not r.runner.startswith(ACCELFLOW):
        return None
    others = df[(df.model == r.model) & (df.batch == r.batch) & ~df.runner.str.startswith(ACCELFLOW)]
    if f32_only:
        others = others[others.precision == "f32"]
    return float(others.p50_ms.min() / r.p50_ms)


def _ratio(value) -> str:
    return "" if pd.isna(value) else f"{value:.2f}x"


def cohosted_row(model: str, batch: int, label: str, neighbour: str, figures) -> dict:
    """One result's co-hosted figures (bench/cohost.Cohosted) next to `neighbour`, as a table row."""
    return {
        "model": model, "batch": batch, "runner": label, "neighbour": neighbour, "alone_p50_ms": figures.alone_ms,
        "cohosted_p50_ms": figures.cohosted_ms, "share_of_alone": figures.share,
        "neighbour_alone_p50_ms": figures.neighbour_alone_ms, "neighbour_cohosted_p50_ms": figures.neighbour_ms,
        "neighbour_share_of_alone": figures.neighbour_share, "samples": len(figures.together),
    }


def machine_line(peak: dict) -> str:
    present = peak.get("cpu_flags", [])
    absent = [f for f in ("avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f not in present]
    return (f"Machine: {peak['cpu']} ({peak['mhz']:.0f} MHz reported), {peak['cores']} threads for every runner. "
            f"CPU flags: {', '.join(present) or 'none of those checked'}"
            + (f" (not present: {', '.join(absent)})." if absent else "."))


def markdown(rows: list[dict], peak: dict) -> str:
    df = frame(rows, peak)
    lines = [
        machine_line(peak),
        "",
        f"Peak: {peak['peak_gflops']:.0f} GFLOP/s, the best FP32 GEMM PyTorch reaches here (2048^3, MKL); "
        "'% of peak' is the model's FLOPs (PyTorch's counter) per p50 latency over that. Each runner is "
        "timed in blocks of its own after its warm-up, never call by call with another: three passes over "
        "all runners in one process, the order rotating each pass (tasks.benchmark.time_separately).",
        "",
        "| model | batch | runner | precision | p50 ms | x eager | % of peak | accelflow vs best alternative "
        "| accelflow vs best f32 alternative |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        name = f"{r.runner} ({r.engine})" if r.engine else r.runner
        lines.append(f"| {r.model} | {r.batch} | {name} | {r.precision} | {r.p50_ms:.2f} | "
                     f"{r.speedup_vs_eager:.2f}x | {100 * r.peak_fraction:.1f}% | {_ratio(r.vs_best_alternative)} "
                     f"| {_ratio(r.vs_best_f32_alternative)} |")
    return "\n".join(lines) + "\n"


def cohosted_markdown(rows: list[dict]) -> str:
    lines = [
        "## Co-hosted",
        "",
        "Each accelflow result alternating call by call with a plain ONNX Runtime session on the same model "
        "as a user exports it (ONNX Runtime's defaults, whose idle threads spin; and the same with spinning "
        "off, as accelflow serves its ONNX Runtime results) in one process, against each alone "
        "(bench/cohost.py). 'share' is alone p50 / co-hosted p50: the result's co-hosted speed as a share of "
        "its speed alone (target >= 90%); the neighbour's share is what the result costs the session that "
        "runs after it.",
        "",
        "| model | batch | result | neighbour | alone p50 ms | co-hosted p50 ms | share | neighbour alone p50 ms | "
        "neighbour co-hosted p50 ms | neighbour share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['runner']} | {r['neighbour']} | {r['alone_p50_ms']:.2f} | "
                     f"{r['cohosted_p50_ms']:.2f} | {100 * r['share_of_alone']:.0f}% | "
                     f"{r['neighbour_alone_p50_ms']:.2f} | {r['neighbour_cohosted_p50_ms']:.2f} | "
                     f"{100 * r['neighbour_share_of_alone']:.0f}% |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], peak: dict, folder: str, cohosted: list[dict] | None = None, extra: str = "") -> None:
    os.makedirs(folder, exist_ok=True)
    frame(rows, peak).to_csv(os.path.join(folder, "results.csv"), index=False)
    text = "# accelflow benchmark\n\n`python -m bench.run` (see bench/run.py)\n\n" + markdown(rows, peak)
    if cohosted:
        pd.DataFrame(cohosted).to_csv(os.path.join(folder, "cohosted.csv"), index=False)
        text += "\n" + cohosted_markdown(cohosted)
    text += "\n" + extra if extra else ""
    with open(os.path.join(folder, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
