"""What machine and which library versions a task ran on, for reports and manifests."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time

from accelflow.core.runner import thread_count

LIBRARIES = (
    "accelflow", "prefect", "numpy", "pandas", "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "polygraphy",
    "tensorflow-cpu", "tensorflow", "tf2onnx", "diffusers", "transformers",
)
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_fp16")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict:
    return {
        **_gpu_info(),
        "cpu": _cpu_model(),
        "cpu_flags": [f for f in _CPU_FLAGS if f in _cpu_flags()],
        "cores_used": thread_count(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def _gpu_info() -> dict:
    """The GPU (name, compute capability, clocks) where nvidia-smi shows one; nothing else."""
    import shutil

    if not shutil.which("nvidia-smi"):
        return {}
    from accelflow.engines import gpu

    here = gpu.current()
    return {"gpu": here.to_dict()} if here else {}


def process_started_at() -> float | None:
    """When this process started (epoch seconds), from /proc on Linux; None elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


def _memory_gib() -> float:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0.0
    return round(pages * size / 2**30, 1)
