"""What this machine has to run a model with: RAM (psutil) and, in a GPU build, VRAM.

VRAM is asked of ggml's own device registry (edgellm.runtime.backends: what llama.cpp will plan with, for
CUDA, Metal, Vulkan alike), else of `nvidia-smi`; and only when llama.cpp was built with GPU
offload: a CPU build has no VRAM to plan for, whatever the hardware."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import psutil

MIB = 1 << 20


@dataclass(frozen=True)
class Gpu:
    name: str
    total: int  # bytes
    free: int


@dataclass(frozen=True)
class Machine:
    ram_total: int
    ram_available: int
    gpu_offload: bool  # llama.cpp can offload layers (CUDA / Metal / Vulkan build)
    gpus: tuple[Gpu, ...] = ()

    @property
    def vram_free(self) -> int:
        return sum(g.free for g in self.gpus) if self.gpu_offload else 0

    @property
    def vram_total(self) -> int:
        return sum(g.total for g in self.gpus) if self.gpu_offload else 0


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Rows of `nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits`
    (MiB), e.g. `NVIDIA H200, 143771, 143252`; rows that do not parse are skipped."""
    gpus = []
    for line in text.splitlines():
        name, _, rest = line.rpartition(",")  # the name may itself hold commas
        name, _, total = name.rpartition(",")
        try:
            gpus.append(Gpu(name.strip(), int(float(total)) * MIB, int(float(rest)) * MIB))
        except ValueError:
            continue
    return tuple(gpus)


def nvidia_gpus(exe: str = "nvidia-smi") -> tuple[Gpu, ...]:
    path = shutil.which(exe)
    if path is None:
        return ()
    try:
        out = subprocess.run(
            [path, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(out)


def gpu_offload_supported() -> bool:
    """A GPU backend with a device: llama_supports_gpu_offload() alone is also true for a CPU build
    that carries the RPC backend (layers then go to workers, which `--rpc` handles)."""
    import llama_cpp

    from edgellm.runtime import backends

    return bool(llama_cpp.llama_supports_gpu_offload()) and bool(backends.gpus())


def ggml_gpus() -> tuple[Gpu, ...]:
    from edgellm.runtime import backends

    return tuple(Gpu(d.description or d.name, d.total, d.free) for d in backends.gpus() if d.total)


def probe() -> Machine:
    """This machine, now."""
    vm = psutil.virtual_memory()
    offload = gpu_offload_supported()
    return Machine(vm.total, vm.available, offload, (ggml_gpus() or nvidia_gpus()) if offload else ())
