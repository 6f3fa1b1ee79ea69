"""GPU engines on a real GPU: accuracy against the f32 original and p50 latency, one run.

    python bench/gpu_check.py [--iterations 100]

For a machine with an NVIDIA GPU and torch built with CUDA. Two models made here (a
ResNet-style CNN at 224x224 and a 4-layer transformer encoder at 128 tokens), each as
TorchScript; each is converted to ONNX with accelflow's own converter, then built by every
GPU engine that is installed (ONNX Runtime CUDA: `.[gpu]`; TensorRT: `.[tensorrt]`) at f32
and fp16, and timed against the TorchScript original on the same GPU (accelflow's GPU
baseline) in the same process. Prints one table; speed-ups are ratios of p50s of this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Residual(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return (self.body(x) + self.skip(x)).relu()


def resnet_like() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    for cin, cout, stride in [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2),
                              (256, 256, 1), (256, 512, 2), (512, 512, 1)]:
        layers.append(Residual(cin, cout, stride))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers).eval()


class EncoderLayer(nn.Module):
    def __init__(self, d=512, heads=8):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.out((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.norm2(x))


def encoder_like() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[EncoderLayer() for _ in range(4)]).eval()


MODELS = {  # name: (builder, tensor information, example shape)
    "resnet18-like": (resnet_like, "input_0:float([1*3*224*224,8*3*224*224])", (8, 3, 224, 224)),
    "encoder-4x512": (encoder_like, "input_0:float([1*128*512,8*128*512])", (8, 128, 512)),
}


def p50_ms(runner, arrays, iterations: int) -> float:
    feed = runner.prepare(arrays)
    for _ in range(10):
        runner.run(feed)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner.run(feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def check_model(name: str, iterations: int, work: str) -> list[tuple]:
    from accelflow.core import tensor_info
    from accelflow.core.runner import run_arrays
    from accelflow.formats import torchscript

    from accelflow import engines

    build, line, shape = MODELS[name]
    model = build()
    path = os.path.join(work, f"{name}.pt")
    example = torch.randn(*shape)
    with torch.no_grad():
        torch.jit.trace(model, (example,)).save(path)
    spec = tensor_info.parse([line])
    onnx_dir = os.path.join(work, name)
    os.makedirs(onnx_dir, exist_ok=True)
    onnx_path, io = torchscript.to_onnx(path, spec, onnx_dir, [example.numpy()])
    rows = []
    for batch in (1, shape[0]):
        x = [np.random.default_rng(batch).standard_normal((batch, *shape[1:])).astype(np.float32)]
        want = run_arrays(torchscript.baseline_runner(path, spec, io, 4), x)[0]
        base = torchscript.baseline_runner(path, spec, io, 4, device="cuda")
        base_ms = p50_ms(base, x, iterations)
        rows.append((name, batch, base.label, "-", base_ms, 1.0, _diff(run_arrays(base, x)[0], want)))
        for engine in (engines.engine_named("onnxruntime-cuda"), engines.engine_named("tensorrt")):
            if engine.version() is None:
                continue
            for precision in ("f32", "fp16"):
                out = os.path.join(work, f"{name}-{engine.NAME}-{precision}-b{batch}")
                os.makedirs(out, exist_ok=True)
                started = time.perf_counter()
                config = engine.build(onnx_path, io, spec, precision, out, threads=4)
                built_s = time.perf_counter() - started
                runner = engine.load(out, {"engine_config": config, "io": io.to_dict()}, 4)
                ms = p50_ms(runner, x, iterations)
                rows.append((name, batch, f"{engine.NAME} {engine.version()} (built in {built_s:.0f} s)", precision,
                             ms, base_ms / ms, _diff(run_arrays(runner, x)[0], want)))
    return rows


def _diff(got, want) -> str:
    rel = float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-12))
    return f"{rel:.1e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    from accelflow.engines import gpu

    here = gpu.current()
    if here is None:
        print("no NVIDIA GPU here (nvidia-smi and torch.cuda found none)")
        return 2
    print(f"GPU: {here.name}, compute capability {here.compute_capability}, {here.memory_mib} MiB, "
          f"driver {here.driver}; machine type {here.machine_type}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            rows += check_model(name, args.iterations, work)
    print(f"\n{'model':15} {'batch':>5}  {'runner':58} {'prec':5} {'p50 ms':>8} {'speed-up':>8}  max rel diff vs torch CPU f32")
    for name, batch, label, precision, ms, ratio, diff in rows:
        print(f"{name:15} {batch:5d}  {label[:58]:58} {precision:5} {ms:8.3f} {ratio:7.2f}x  {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
