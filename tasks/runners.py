"""The runners one task loads, each once, owned by the flow run that creates the pool.

The accuracy and benchmark steps run in the same process and use the same baseline and
candidate runners; loading BERT-sized models costs seconds each time. The flow creates one
RunnerPool per task and closes it at the end, so nothing outlives the task.

The baseline is timed where the candidates run: on a GPU machine type, the original model is
loaded on the GPU in its own framework (TorchScript on CUDA; an ONNX model in ONNX Runtime's
CUDA provider). A format without a GPU baseline of its own is timed as its ONNX conversion
in ONNX Runtime CUDA, and its label says so. Accuracy is always judged against the original
on the CPU (`reference`).
"""

from __future__ import annotations

import gc
import inspect

from accelflow.core.modelio import ModelIO
from accelflow.core.runner import Runner
from accelflow.engines import engine_named
from accelflow.formats import detections, format_named
from accelflow.tasks.context import ModelContext


class RunnerPool:
    def __init__(self, device: str = "cpu", trust_model_code: bool = False):
        self.device = device  # where the baseline is timed: "cpu" or "cuda"
        self.trust_model_code = trust_model_code  # --trust-model-code: loaders may run the model's code
        self._loaded: dict[tuple, object] = {}
        self._postprocessors: dict[str, object] = {}  # a detector's heads, shared by its candidates

    def __enter__(self) -> RunnerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load(self, key: tuple, loader):
        """Whatever `loader()` returns, loaded once for this task under `key`."""
        if key not in self._loaded:
            self._loaded[key] = loader()
        return self._loaded[key]

    def baseline(self, ctx: ModelContext, device: str | None = None) -> Runner:
        """The original model in its own framework (TorchScript in torch, ONNX in ONNX Runtime)."""
        device = device or self.device
        return self.load(("baseline", device, ctx.model_file), lambda: _baseline_runner(ctx, device))

    def reference(self, ctx: ModelContext) -> Runner:
        """What accuracy is judged against: the original model in IEEE float32, i.e. on the CPU.

        On a GPU the timed baseline keeps the defaults users serve with, and those compute
        float32 in TF32 (PyTorch's cuDNN convolutions, ONNX Runtime's CUDA provider): on an H200
        its reference was 2.6e-4 off (relative) on a ResNet, more than the lossless gate allows,
        and a float32 engine (2.4e-7 off) failed against it. torch 2.11's TorchScript kept that
        error with TF32 switched off, so the reference is the CPU run of the same original model.
        """
        return self.baseline(ctx, device="cpu")

    def candidate(self, built, io: dict, threads: int) -> Runner:
        """A built engine, loaded; a detector's engine (its backbone) is followed by the
        framework's heads and NMS, so accuracy and timing see the whole detector. The candidate's
        own io, where it has one, is the one it was built with."""
        io = built.io or io
        return self.load(("candidate", built.folder), lambda: self._load_candidate(built, io, threads))

    def _load_candidate(self, built, io: dict, threads: int) -> Runner:
        runner = engine_named(built.engine).load(built.folder, {"engine_config": built.engine_config, "io": io},
                                                 threads)
        if not detections.is_detector(io):
            return runner
        fmt = format_named(detections.format_name(io))
        return detections.candidate(fmt, runner, io, threads, postprocessors=self._postprocessors,
                                    trusted=self.trust_model_code)

    def release(self, built) -> None:
        """Forget a candidate that will not run again (it failed the gate): its loaded engine,
        and the detector heads loaded for it alone (an INT8 candidate's own head graphs). The
        int8 fallback builds several candidates per attempt; a Cascade Mask R-CNN's would not
        all fit in memory at once."""
        self._loaded.pop(("candidate", built.folder), None)
        heads = (built.io.get("source") or {}).get(detections.HEAD_GRAPHS_DIR) if built.io else None
        for key in [k for k in self._postprocessors if heads and k[1] == heads]:
            del self._postprocessors[key]
        gc.collect()

    def close(self) -> None:
        """Free every loaded model (the end of a task)."""
        self._loaded.clear()
        self._postprocessors.clear()


def _baseline_runner(ctx: ModelContext, device: str) -> Runner:
    fmt = format_named(ctx.format)
    path = ctx.onnx_path if fmt.NAME == "onnx" else ctx.model_file
    io = ModelIO.from_dict(ctx.io)
    if device == "cpu":
        trust = {"trusted": ctx.trust_model_code} if hasattr(fmt, "checkpoint_for") else {}  # detectors' configs
        return fmt.baseline_runner(path, ctx.spec, io, ctx.threads, **trust)
    if fmt.NAME == "onnx" or "device" not in inspect.signature(fmt.baseline_runner).parameters:
        from accelflow.engines.onnxruntime_cuda_engine import OrtCudaRunner

        runner = OrtCudaRunner(ctx.onnx_path, io, ctx.threads, tf32=None)  # ONNX Runtime's defaults
        if fmt.NAME != "onnx":
            runner.label += f" (the {fmt.NAME} model's ONNX conversion: no {fmt.NAME} GPU baseline here)"
        return runner
    return fmt.baseline_runner(path, ctx.spec, io, ctx.threads, device=device)
