"""The int8 level: INT8 candidates built from the calibrated graph, and the gate's fallback.

When no INT8 candidate passes the gate, the operations that read the noisiest activations
(tasks/quantize.rank_sensitive) are kept in float, 1, then 2, 4, 8 ... of them, and the INT8
candidates are rebuilt and judged again, until one passes or the attempts run out. The float
candidates built beside them (f32, and bf16 where the CPU computes it) compete all along, so
the fastest passing candidate wins, and a failing one never does. docs/int8.md.
"""

from __future__ import annotations

from dataclasses import replace

from accelflow.core.levels import level_named
from accelflow.flows.progress import Progress
from accelflow.flows.request import OptimizeRequest, calibration_files
from accelflow.tasks import steps
from accelflow.tasks.context import ModelContext
from accelflow.tasks.isolation import ModelProcess
from accelflow.tasks.quantize import Calibration, QuantizedModel

MAX_FALLBACKS = 4  # rebuilds with more operations in float before keeping a float candidate


class Int8Builds:
    """One model's INT8 candidates: how they were quantized, and every attempt at the gate."""

    def __init__(self, ctx: ModelContext, calibration: Calibration, pool: ModelProcess, progress: Progress):
        self.ctx, self.calibration, self.pool, self.progress = ctx, calibration, pool, progress
        self.quantized: QuantizedModel | None = None
        self.attempts: list[dict] = []  # {"excluded": [...], "passed": bool, "reason": str}

    @classmethod
    def for_request(cls, request: OptimizeRequest, ctx: ModelContext, pool: ModelProcess, progress: Progress,
                    own_data: bool = True):
        """None unless the request's level builds INT8 (a QAT model's graph is INT8 already).
        `own_data=False`: the request's samples are not this network's inputs (a pipeline's)."""
        if request.qat or not level_named(request.level).int8:
            return None
        return cls(ctx, calibration_of(request) if own_data else Calibration(), pool, progress)

    def build(self, pairs: list, excluded: list[str] = (), variant: str = "") -> list:
        """The INT8 candidates of `pairs` (engine, "int8") from the graph quantized with
        `excluded` operations in float."""
        self.quantized = steps.quantize_model(self.ctx, self.calibration, list(excluded), self.pool)
        kept = f", {len(excluded)} kept in float" if excluded else ""
        self.progress.say(f"    quantized {self.quantized.quantized_ops} operations to INT8{kept} "
                          f"(calibration: {self.quantized.calibration})")
        ctx = replace(self.ctx, onnx_path=self.quantized.onnx_path, io=self.quantized.io(self.ctx.io))
        built = []
        for engine, precision in pairs:
            b = steps.build_candidate(ctx, engine.NAME, precision, self.pool, variant)
            b.engine_config["int8"] = {"method": self.quantized.method, "calibration": self.quantized.calibration,
                                       "kept_in_float": list(excluded)}
            self.progress.say(f"    {engine.NAME} {precision}: " + (f"failed: {b.error}" if b.error else
                                                                      f"built in {b.build_seconds:.1f}s"))
            built.append(b)
        return built

    def fall_back(self, built: list, accuracies: dict, check, verify=None) -> tuple[list, dict]:
        """`built` and `accuracies` after the fallback, when no INT8 candidate passed. `verify`
        (built candidates -> accuracies) judges the rebuilt ones; by default the model's step."""
        verify = verify or (lambda ok: steps.verify_accuracy(self.ctx, ok, check, self.pool))
        tried = [b for b in built if b.precision == "int8" and not b.error]
        self._record([], tried, accuracies)
        if not tried:
            self.attempts[-1]["reason"] = "; ".join(f"{b.engine}: {b.error}" for b in built if b.precision == "int8")
        if not tried or any(accuracies[b.key].passed for b in tried):
            return built, accuracies
        ranked = steps.rank_sensitive(self.ctx, self.quantized, self.calibration, self.pool)
        pairs = [(_engine(b.engine), "int8") for b in tried]
        for count in _exclusion_counts(len(ranked)):
            excluded = [name for name, _ in ranked[:count]]
            self.progress.say(f"    INT8 failed the gate: keeping the {count} most sensitive operation(s) in float "
                              f"({', '.join(excluded[:3])}{' ...' if count > 3 else ''})")
            rebuilt = self.build(pairs, excluded, variant=f"-float{count}")
            ok = [b for b in rebuilt if not b.error]
            accuracies = dict(accuracies, **(verify(ok) if ok else {}))
            built = [b for b in built if b.precision != "int8"] + rebuilt
            self._record(excluded, ok, accuracies)
            if any(accuracies[b.key].passed for b in ok):
                break
        return built, accuracies

    def _record(self, excluded: list[str], tried: list, accuracies: dict) -> None:
        passed = [b for b in tried if accuracies[b.key].passed]
        reasons = "; ".join(f"{b.engine}: {accuracies[b.key].reason}" for b in tried if not accuracies[b.key].passed)
        self.attempts.append({"kept_in_float": list(excluded), "passed": bool(passed),
                              "engines": [b.engine for b in tried], "reason": "" if passed else reasons})

    def summary(self, chosen_precision: str) -> dict:
        """The report's int8 section: how INT8 was made, each attempt, and what was kept."""
        q = self.quantized
        if q is None:
            return {}
        passed = [a for a in self.attempts if a["passed"]]
        if chosen_precision == "int8":
            kept = passed[0]["kept_in_float"] if passed else []
            outcome = "int8 with exceptions" if kept else "int8"
        elif passed:
            outcome = f"int8 passed the gate, but {chosen_precision} was faster"
        else:
            outcome = f"no INT8 candidate passed the gate; kept the fastest passing {chosen_precision} candidate"
        return {"outcome": outcome, "method": q.method, "calibration": q.calibration,
                "calibration_inputs": q.calibration_inputs, "quantized_ops": q.quantized_ops,
                "kept_in_float": q.excluded if chosen_precision == "int8" else [], "attempts": self.attempts,
                "warnings": q.warnings}


def int8_notes(summary: dict) -> list[str]:
    """The report's notes on INT8: what was kept, and how the calibration could be better."""
    notes = [f"INT8: {summary['outcome']}"
             + (f" ({len(summary['kept_in_float'])} operations kept in float: "
                f"{', '.join(summary['kept_in_float'])})." if summary["kept_in_float"] else ".")]
    return notes + list(summary["warnings"])


def calibration_of(request: OptimizeRequest) -> Calibration:
    """--calibration (a file or folder), else --samples, else inputs drawn from the tensor information."""
    if request.calibration:
        return Calibration(tuple(calibration_files(request.calibration)), "calibration")
    if request.samples:
        return Calibration((request.samples,), "samples")
    return Calibration()


def _exclusion_counts(operations: int) -> list[int]:
    """1, 2, 4, ... operations in float, at most MAX_FALLBACKS attempts and at most half of them."""
    counts, count = [], 1
    while count <= max(1, operations // 2) and len(counts) < MAX_FALLBACKS:
        counts.append(count)
        count *= 2
    return counts


def _engine(name: str):
    from accelflow import engines

    return engines.engine_named(name)
