"""The stages a single model and a Stable Diffusion pipeline share: building every candidate,
the time outside the steps, and publishing the result with its artifacts on the flow run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from accelflow.engines.machine import process_started_at
from accelflow.flows.progress import Progress, quietly
from accelflow.flows.request import OptimizeRequest
from accelflow.flows.runs import artifact_key, run_has_ended
from accelflow.tasks import publish, steps
from accelflow.tasks.context import ModelContext
from accelflow.tasks.isolation import ModelProcess
from accelflow.tasks.package import Staging

from accelflow import engines


def build_all(request: OptimizeRequest, ctx: ModelContext, pool: ModelProcess, progress: Progress,
              int8=None) -> list:
    """Every candidate engine and precision for the request's level and device, built from ctx's
    ONNX; at the int8 level, `int8` (flows/int8.Int8Builds) builds the INT8 ones from its quantized graph."""
    pairs = engines.candidates(request.level, request.device, request.engine, request.engine_version, request.qat)
    quantized = [(e, p) for e, p in pairs if int8 is not None and p == "int8"]
    built = []
    for engine, precision in [pair for pair in pairs if pair not in quantized]:
        b = steps.build_candidate(ctx, engine.NAME, precision, pool)
        status = f"failed: {b.error}" if b.error else f"built in {b.build_seconds:.1f}s"
        progress.say(f"    {engine.NAME} {precision}: {status}")
        built.append(b)
    return built + (int8.build(quantized) if quantized else [])


def overheads(progress: Progress) -> dict[str, float]:
    """Time waiting for a free runner slot (from the flow run's creation: when the task was
    submitted), and orchestration: the rest of the wall time not spent inside a step (process
    start, imports, Prefect's server and bookkeeping)."""
    submitted = run_created_at() or process_started_at() or time.time()
    started = max(submitted, process_started_at() or submitted)
    busy = sum(progress.timings.values())
    return {
        "queued": round(max(0.0, started - submitted), 3),
        "orchestration": round(max(0.0, time.time() - started - busy), 3),
    }


def run_created_at() -> float | None:
    """When this flow run was created (the task submitted); None outside a flow run."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    created = context.flow_run.created if context and context.flow_run else None
    return created.timestamp() if created else None


@dataclass(frozen=True)
class Destination:
    """Where a task's result goes: staged privately, then published under `output` by this flow run."""

    output: str  # a folder or a URI
    staging: Staging
    run_id: str

    @property
    def work_dir(self) -> str:
        """The task's scratch folder, inside its staging folder (removed with it)."""
        return os.path.join(self.staging.path, "work")


def publish_result(dest: Destination, request, fetched, report) -> dict:
    """Publish the packaged result and return the row the task list keeps of it."""
    uri = publish.publish(dest.staging, dest.output, request.name, dest.run_id, claim_is_stale=_claimer_has_ended)
    return publish.result_row(uri, request, fetched, report)


def _claimer_has_ended(claim: dict) -> bool:
    """Whether the flow run that claimed a result folder has ended (or is gone from the server)."""
    return run_has_ended(claim.get("flow_run_id", ""))


def publish_artifacts(report, result: dict) -> None:
    """The report on the flow run page (markdown, latency table) and the result the task list reads,
    each under a key of this task's own."""
    from accelflow.reports.render import summary_table, to_markdown
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
    from prefect.runtime import flow_run

    def key(kind: str) -> str:
        return artifact_key(kind, flow_run.get_name() or report.task_name, flow_run.get_id())

    quietly(lambda: create_markdown_artifact(to_markdown(report), key=key("report"), description="optimization report"))
    quietly(lambda: create_table_artifact(summary_table(report), key=key("latency"), description="latency per shape"))
    quietly(lambda: create_table_artifact([result], key=key("result"), description="accelflow result"))
    link = result["report_html"]
    quietly(lambda: create_link_artifact(link if "://" in link else f"file://{link}", link_text="report.html",
                                         description=f"the optimization report; the result is at {result['result_uri']}"))


def completed(result: dict):
    """The task's final state. The UI shows a state's name in its badge, in the runs list and the
    run's header, so the name carries the speed-up; the message the engine, precision and verdict."""
    from prefect.states import Completed

    speedup = result.get("speedup")
    name = f"Accelerated {speedup:.2f}x" if isinstance(speedup, (int, float)) else "Accelerated"
    return Completed(name=name, message=headline(result), data=result)


def headline(result: dict) -> str:
    """`2.73x faster · openvino bf16 · accuracy passed`"""
    speedup = result.get("speedup")
    faster = f"{speedup:.2f}x faster" if isinstance(speedup, (int, float)) else "speed-up not measured"
    accuracy = "accuracy passed" if result.get("accuracy_passed") else "accuracy not verified"
    return f"{faster} · {result.get('engine')} {result.get('precision')} · {accuracy}"
