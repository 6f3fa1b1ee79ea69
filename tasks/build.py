"""Step 4: build each candidate engine from the ONNX model."""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass, field

from accelflow.core.errors import AccelflowError, first_line
from accelflow.core.modelio import ModelIO
from accelflow.engines import engine_named
from accelflow.tasks.context import ModelContext
from accelflow.tasks.runners import RunnerPool


@dataclass
class BuiltCandidate:
    """One engine configuration's build: its folder and manifest section, or why it failed."""

    engine: str
    engine_version: str
    precision: str
    folder: str
    build_seconds: float
    engine_config: dict = field(default_factory=dict)
    error: str = ""
    io: dict = field(default_factory=dict)  # the conversion's io it runs with (a detector's INT8 heads differ)

    @property
    def key(self) -> str:
        return f"{self.engine}-{self.precision}"


def build_candidate(ctx: ModelContext, engine_name: str, precision: str, pool: RunnerPool,
                    variant: str = "") -> BuiltCandidate:
    """Build one candidate from ctx's ONNX model; a failure is recorded on the result so the
    others still compete. A `variant` (another INT8 graph of the same engine) builds in a
    folder of its own: runners are loaded once per folder."""
    engine = engine_named(engine_name)
    folder = os.path.join(ctx.work_dir, "candidates", f"{engine_name}-{precision}{variant}")
    os.makedirs(folder, exist_ok=True)
    built = BuiltCandidate(engine_name, engine.version() or "", precision, folder, 0.0, io=ctx.io)
    start = time.perf_counter()
    try:
        built.engine_config = engine.build(ctx.onnx_path, ModelIO.from_dict(ctx.io), ctx.spec, precision, folder,
                                           ctx.threads)
        pool.candidate(built, ctx.io, ctx.threads)  # loading compiles: a failure belongs to this candidate
    except AccelflowError as exc:
        built.error = str(exc)
    except Exception as exc:  # an engine's own failure on this graph: recorded, not fatal
        built.error = f"{type(exc).__name__}: {first_line(exc)}"
        built.engine_config = {"traceback": traceback.format_exc(limit=5)}
    built.build_seconds = time.perf_counter() - start
    if built.error:
        shutil.rmtree(folder, ignore_errors=True)
    return built
