"""accelflow results for the benchmark, made by the real optimize flow."""

from __future__ import annotations

import json
import os


def optimize(model: str, tensor_info: list[str], level: str, name: str, work: str, bench_seconds: float,
             **options) -> tuple[str, dict]:
    """(the result folder, its report.json) of `accelflow optimize` on `model` at `level`;
    `options` are further request fields (samples, calibration, ...)."""
    from accelflow.flows.optimize import optimize as optimize_flow
    from accelflow.flows.request import OptimizeRequest

    request = OptimizeRequest(model=model, tensor_info=tensor_info, level=level, output=os.path.join(work, "out"),
                              name=name, bench_seconds=bench_seconds, **options)
    result = optimize_flow.with_options(flow_run_name=request.name)(request=request)
    with open(result["report_json"], encoding="utf-8") as f:
        return result["result_folder"], json.load(f)


def int8_outcome(report: dict) -> str:
    """How the int8 gate went, in words: the outcome and the first attempt's reason."""
    int8 = report.get("int8") or {}
    if not int8:
        return ""
    first = min(int8["attempts"], key=lambda a: len(a["kept_in_float"]))
    return f"{int8['outcome']} ({first['reason'] or 'passed'})"
