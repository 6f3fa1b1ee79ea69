"""Co-hosted speed: a result timed while a plain ONNX Runtime session takes turns with it in one process.

    python -m bench.cohost [--model resnet50] [--batch 1] [--seconds 10]

A server often holds several models in one process and calls them in turn. A runtime whose
idle threads spin after a call (ONNX Runtime's default, session.intra_op.allow_spinning=1)
keeps the cores busy while the next model runs. The figure here is the result's speed when
alternating with the neighbour as a share of its speed alone (alone p50 / co-hosted p50; the
issue's target is >= 90%). Alone and alternating turns are short and repeated in turn, so
that drift of a shared machine hits both.

Run as a script, it compares the ONNX Runtime settings accelflow could serve a result with
(spinning on, off, or on but stopped after each call) and OpenVINO's, on a reference model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, fields

import numpy as np
from accelflow.core.runner import Runner, thread_count

SPIN_OFF = {"session.intra_op.allow_spinning": "0"}
SPIN_STOP = {"session.force_spinning_stop": "1"}  # spins during a call, stops when it returns


@dataclass
class Cohosted:
    alone: list[float]  # the result's latencies (ms), nothing else running
    together: list[float]  # its latencies while alternating with the neighbour
    neighbour: list[float]  # the neighbour's latencies while alternating
    neighbour_alone: list[float]  # the neighbour's latencies, nothing else running

    @property
    def alone_ms(self) -> float:
        return float(np.median(self.alone))

    @property
    def cohosted_ms(self) -> float:
        return float(np.median(self.together))

    @property
    def neighbour_ms(self) -> float:
        return float(np.median(self.neighbour))

    @property
    def neighbour_alone_ms(self) -> float:
        return float(np.median(self.neighbour_alone))

    @property
    def share(self) -> float:
        """The result's co-hosted speed as a fraction of its speed alone (p50 over p50)."""
        return self.alone_ms / self.cohosted_ms

    @property
    def neighbour_share(self) -> float:
        """The neighbour's speed next to the result as a fraction of its speed alone: what the
        result's threads cost whoever runs after it."""
        return self.neighbour_alone_ms / self.neighbour_ms

    def __add__(self, other: Cohosted) -> Cohosted:
        return Cohosted(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Cohosted)))


EMPTY = Cohosted([], [], [], [])


def cohosted(runner: Runner, arrays: list[np.ndarray], neighbour: Runner, neighbour_arrays: list[np.ndarray],
             seconds: float = 10.0, min_samples: int = 10, calls: int = 3) -> Cohosted:
    """Time `runner` alone, `neighbour` alone, and the two alternating call by call, in short
    turns of `calls` calls each, repeated until `seconds` have passed and the result has
    `min_samples` co-hosted calls. Short turns keep the load of a shared machine, which comes
    and goes, from landing on one condition more than the other.

    A turn alone starts with one untimed call (the other's spinning threads may still hold
    the cores); in a turn alternating, no call is untimed: that gap is what a server sees.
    """
    feed, other = runner.prepare(arrays), neighbour.prepare(neighbour_arrays)
    for _ in range(3):
        runner.run(feed), neighbour.run(other)
    figures, start = EMPTY, time.perf_counter()
    while len(figures.together) < min_samples or time.perf_counter() - start < seconds:
        alone, neighbour_alone = _alone(runner, feed, calls), _alone(neighbour, other, calls)
        ours, theirs = _alternating(runner, feed, neighbour, other, calls)
        figures += Cohosted(alone, ours, theirs, neighbour_alone)
    return figures


def _alone(runner: Runner, feed, calls: int) -> list[float]:
    runner.run(feed)
    return [_timed(runner, feed) for _ in range(calls)]


def _alternating(runner: Runner, feed, neighbour: Runner, other, calls: int) -> tuple[list[float], list[float]]:
    ours, theirs = [], []
    for _ in range(calls):
        theirs.append(_timed(neighbour, other))
        ours.append(_timed(runner, feed))
    return ours, theirs


def _timed(runner: Runner, feed) -> float:
    t0 = time.perf_counter()
    runner.run(feed)
    return (time.perf_counter() - t0) * 1000.0


class SessionRunner:
    """An ONNX file in an ONNX Runtime session with the given session config entries; no entries
    and no thread count is a plain session as a user opens it (ONNX Runtime's defaults)."""

    def __init__(self, path: str, threads: int | None = None, config: dict[str, str] | None = None,
                 optimize: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not optimize:  # an offline-optimized graph, as accelflow saves it
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.label = f"onnxruntime {config or 'defaults'}"

    def prepare(self, arrays):
        return dict(zip(self.names, arrays))

    def run(self, feed):
        return self.session.run(None, feed)

    def outputs(self, raw):
        return list(raw)


class OpenVinoRunner:
    """An ONNX file compiled by OpenVINO for the CPU at f32 with the LATENCY hint (as accelflow does)."""

    def __init__(self, path: str, threads: int, extra: dict | None = None):
        from accelflow.engines.openvino_engine import import_openvino

        ov = import_openvino()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads, **(extra or {})}
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.label = f"openvino {extra or 'accelflow settings'}"

    def prepare(self, arrays):
        return {port.get_any_name(): a for port, a in zip(self.compiled.inputs, arrays)}

    def run(self, feed):
        return self.request.infer(feed, share_inputs=True, share_outputs=True)

    def outputs(self, raw):
        return [np.array(v, copy=True) for v in raw.values()]


def optimized_onnx(onnx_path: str, folder: str, threads: int) -> str:
    """The graph optimized offline at ORT_ENABLE_ALL, as accelflow's ONNX Runtime engine saves it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
    ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return options.optimized_model_filepath


def compare_settings(onnx_path: str, arrays: list[np.ndarray], seconds: float, folder: str,
                     rounds: int = 3, only: str = "") -> dict[tuple[str, str], Cohosted]:
    """Each engine setting alone and next to a plain ONNX Runtime session (ONNX Runtime's
    defaults, and the same with spinning off). The pairs take turns in `rounds` rounds, so
    that the load of a shared machine hits them alike."""
    threads = thread_count()
    optimized = optimized_onnx(onnx_path, folder, threads)
    neighbours = {"plain onnxruntime": SessionRunner(onnx_path),  # what a user opens: every default
                  "plain onnxruntime, spinning off": SessionRunner(onnx_path, config=SPIN_OFF)}
    runners = {
        "onnxruntime, spinning on (default)": SessionRunner(optimized, threads, {}, optimize=False),
        "onnxruntime, spinning off": SessionRunner(optimized, threads, SPIN_OFF, optimize=False),
        "onnxruntime, spinning stopped after each call": SessionRunner(optimized, threads, SPIN_STOP, optimize=False),
        "openvino f32, cpu pinning default": OpenVinoRunner(onnx_path, threads),
        "openvino f32, cpu pinning off": OpenVinoRunner(onnx_path, threads, {"ENABLE_CPU_PINNING": False}),
    }
    pairs = [(label, other) for label in runners for other in neighbours if only in label]
    figures = {pair: EMPTY for pair in pairs}
    for _ in range(rounds):
        for label, other in pairs:
            figures[label, other] += cohosted(runners[label], arrays, neighbours[other], arrays,
                                              seconds=seconds / rounds, min_samples=3)
    for (label, other), f in figures.items():
        print(f"{label} | next to {other}: alone {f.alone_ms:.2f} ms, co-hosted {f.cohosted_ms:.2f} ms "
              f"({100 * f.share:.0f}% of alone); neighbour alone {f.neighbour_alone_ms:.2f} ms, "
              f"co-hosted {f.neighbour_ms:.2f} ms ({100 * f.neighbour_share:.0f}%)", flush=True)
    return figures


def main() -> None:
    import torch
    from accelflow.engines.machine import machine_info

    from bench import alternatives
    from bench.models import REFERENCES, build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=[r.name for r in REFERENCES])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0, help="per setting, alone and alternating together")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="only the settings whose label holds this text")
    args = parser.parse_args()
    torch.set_num_threads(thread_count())
    machine = machine_info()
    print(f"CPU: {machine['cpu']}, flags {' '.join(machine['cpu_flags'])}, {thread_count()} threads", flush=True)
    reference = next(r for r in REFERENCES if r.name == args.model)
    with tempfile.TemporaryDirectory(prefix="accelflow-cohost-") as work:
        onnx_path = alternatives.export_onnx(build(reference), reference, work)
        arrays = [t.numpy() for t in reference.inputs(args.batch)]
        compare_settings(onnx_path, arrays, args.seconds, work, args.rounds, args.only)


if __name__ == "__main__":
    main()
