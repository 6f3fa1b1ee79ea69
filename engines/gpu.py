"""The NVIDIA GPU this process runs on, and which deployment machine type it is.

Discovery asks `nvidia-smi` (it ships with the driver, so it works without CUDA toolkits or
Python CUDA packages) and falls back to torch.cuda when nvidia-smi is absent. Nothing here
imports a CUDA library at module import; `--device cpu` never calls into this module.

Machine types from GPU names (`MACHINE_TYPES`, first match wins, matched on whole words of
the upper-cased name as nvidia-smi prints it):

    "Tesla T4"                                  -> t4
    "Tesla V100-SXM2-16GB", "Tesla V100S-PCIE"  -> v100  (V100S: the same GV100 chip, clocked higher)
    "NVIDIA A10G"                               -> a10g  (AWS's part: not an A10, see below)
    "NVIDIA A10"                                -> a10
    "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe" -> a100
    "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL" -> h100
    "NVIDIA H200", "NVIDIA H200 NVL"            -> h200
    "NVIDIA L4"                                 -> l4
    "NVIDIA L40S"                               -> l40s

Memory size and form factor (SXM / PCIe / NVL) do not change the machine type: the chip,
its compute capability and TensorRT's tactics are the same. The A10G is its own type: it
shares the A10's GA102 chip and compute capability 8.6 but has a lower tensor-core rate
and clocks, so an engine tuned on one is not the best on the other, and a result "for A10"
must not be built on an A10G without saying so. A machine whose GPU is not in the table
(or a special machine type such as pnv5b) names its type in ACCELFLOW_MACHINE_TYPE.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

# Deployment machine types with an NVIDIA GPU (the product's T4, V100, A10, A100 and the special
# type pnv5b, plus common serving GPUs). Each has a work pool `accelflow-<type>` (prefect.yaml).
GPU_DEVICES = ("t4", "v100", "a10", "a10g", "a100", "h100", "h200", "l4", "l40s", "pnv5b")
MACHINE_TYPES: tuple[tuple[str, str], ...] = (
    ("t4", r"T4"),
    ("v100", r"V100S?"),
    ("a10g", r"A10G"),
    ("a100", r"A100"),
    ("a10", r"A10"),
    ("h100", r"H100"),
    ("h200", r"H200"),
    ("l40s", r"L40S"),
    ("l4", r"L4"),
)
MACHINE_TYPE_ENV = "ACCELFLOW_MACHINE_TYPE"
_SMI_FIELDS = "name,compute_cap,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.sm"


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"
    memory_mib: int = 0
    driver: str = ""
    sm_clock_mhz: int = 0  # at the time of the query
    mem_clock_mhz: int = 0
    max_sm_clock_mhz: int = 0

    @property
    def machine_type(self) -> str | None:
        return machine_type(self.name)

    def to_dict(self) -> dict:
        return dict(asdict(self), machine_type=self.machine_type)


def machine_type(gpu_name: str) -> str | None:
    """The deployment machine type of a GPU name; ACCELFLOW_MACHINE_TYPE overrides."""
    declared = os.environ.get(MACHINE_TYPE_ENV, "").strip().lower()
    if declared:
        return declared
    upper = gpu_name.upper()
    for kind, pattern in MACHINE_TYPES:
        if re.search(rf"(?<![A-Z0-9]){pattern}(?![A-Z0-9])", upper):
            return kind
    return None


def current() -> GpuInfo | None:
    """The GPU CUDA would use first (CUDA_VISIBLE_DEVICES respected), or None without one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    first = visible.split(",")[0].strip() if visible else "0"
    found = _query_smi(first)
    return found if found is not None else _query_torch()


def _query_smi(index: str) -> GpuInfo | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run(
            [smi, f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return parse_smi_line(lines[0]) if proc.returncode == 0 and lines else None


def parse_smi_line(line: str) -> GpuInfo:
    """One line of `nvidia-smi --query-gpu=<_SMI_FIELDS> --format=csv,noheader,nounits`."""
    name, cap, memory, driver, sm, mem, max_sm = [f.strip() for f in line.split(",")]
    return GpuInfo(name, cap, _int(memory), driver, _int(sm), _int(mem), _int(max_sm))


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:  # "[N/A]" on some boards
        return 0


def _query_torch() -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    props = torch.cuda.get_device_properties(0)
    return GpuInfo(torch.cuda.get_device_name(0), f"{major}.{minor}", props.total_memory // 2**20)


def built_for(gpu: GpuInfo) -> dict:
    """What an engine built here is bound to; compared at load by `mismatch`."""
    return {"name": gpu.name, "compute_capability": gpu.compute_capability, "machine_type": gpu.machine_type}


def mismatch(built: dict, gpu: GpuInfo | None) -> str | None:
    """Why a result built for `built` must not run on `gpu`, or None when it may."""
    wanted = f"{built.get('name')} (compute capability {built.get('compute_capability')})"
    if gpu is None:
        return f"it was built for an NVIDIA {wanted}, and this machine has no NVIDIA GPU"
    if gpu.compute_capability != built.get("compute_capability"):
        return (f"it was built for an NVIDIA {wanted}, and this machine's GPU is a {gpu.name} "
                f"(compute capability {gpu.compute_capability})")
    if gpu.name != built.get("name"):
        return f"it was built for an NVIDIA {wanted}, and this machine's GPU is a {gpu.name}"
    return None


def refuse_elsewhere(config: dict, engine: str, installed: str | None) -> GpuInfo:
    """The GPU here, once it is the one (and `engine` the version) a result was built for.

    A TensorRT engine holds kernels chosen for one GPU model and one TensorRT version; an
    ONNX Runtime graph optimized offline for CUDA may hold kernels of one architecture.
    Loading either elsewhere is refused, saying what it was built for.
    """
    from accelflow.core.errors import DeviceError

    here = current()
    built = config.get("built_for", {})
    why = mismatch(built, here)
    wanted = config.get("engine_version")
    if why is None and wanted and installed != wanted:
        why = f"it was built with {engine} {wanted}, and {engine} {installed or '(none)'} is installed here"
    if why is None:
        return here
    target = built.get("machine_type") or built.get("name")
    raise DeviceError(
        f"this optimized model cannot run here: {why}. A {engine} result runs only on the GPU "
        f"model and {engine} version it was built with ({built.get('name')}, compute capability "
        f"{built.get('compute_capability')}, {engine} {wanted}): run it on a {target} machine with "
        f"{engine} {wanted}, or optimize the model again on this machine."
    )
