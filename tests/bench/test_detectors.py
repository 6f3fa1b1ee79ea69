"""bench/detectors.py's table: what a run writes to detectors.md and detectors.csv."""

from __future__ import annotations

import pandas as pd

from bench import detectors


def test_the_table_names_the_cpu_and_each_runners_ratio_and_gate(tmp_path):
    rows = [{"model": "faster-rcnn-r50", "runner": detectors.BASELINE, "selected": "torch f32", "p50_ms": 850.0,
             "speedup": 1.0, "flow_speedup": None, "accuracy": "", "int8_gate": ""},
            {"model": "faster-rcnn-r50", "runner": "accelflow int8", "selected": "openvino f32", "p50_ms": 400.0,
             "speedup": 2.125, "flow_speedup": 2.2, "accuracy": "100.0% matched, box diff 0.0001 px",
             "int8_gate": "no INT8 candidate passed the gate; kept the fastest passing f32 candidate (...)"}]
    peak = {"cpu": "AMD EPYC", "mhz": 2596.0, "cores": 2, "cpu_flags": ["avx512_vnni", "avx512_bf16"]}
    text = detectors.write(rows, peak, str(tmp_path))
    assert "AMD EPYC" in text and "avx512_vnni" in text and "not present: amx_int8, amx_bf16" in text
    assert "| faster-rcnn-r50 | accelflow int8 | openvino f32 | 400.0 | 2.12x | 2.20x |" in text
    assert open(tmp_path / "detectors.md").read() == text
    assert list(pd.read_csv(tmp_path / "detectors.csv")["runner"]) == [detectors.BASELINE, "accelflow int8"]
