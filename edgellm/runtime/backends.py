"""The compute devices llama.cpp itself sees (ggml's backend registry): CPU, CUDA, Metal, ...

Asked through ggml rather than vendor tools, so the answer is what this build can use, with the
free and total memory llama.cpp will plan with."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

# /proc/cpuinfo flag -> the feature name llama.cpp's system info uses for it
CPU_FEATURES = {
    "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "bmi2": "BMI2", "avx512f": "AVX512",
    "avx512vbmi": "AVX512_VBMI", "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16", "avx_vnni": "AVX_VNNI",
    "amx_tile": "AMX_TILE", "amx_int8": "AMX_INT8", "amx_bf16": "AMX_BF16",
}
_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # CPU, GPU, iGPU, accelerator
    free: int  # bytes
    total: int


@functools.cache
def _ggml() -> ctypes.CDLL:
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml.*")) or sorted(lib_dir.glob("ggml.*"))
    lib = ctypes.CDLL(str(candidates[0]) if candidates else "libggml.so")
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes, lib.ggml_backend_dev_type.restype = [ctypes.c_void_p], ctypes.c_int
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_p, size_p]
    return lib


def devices() -> list[Device]:
    """Every device of this build, in ggml's order (GPUs first, then the CPU)."""
    llama_cpp.llama_backend_init()
    lib = _ggml()
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                kind=_TYPES.get(lib.ggml_backend_dev_type(dev), "?"),
                free=free.value,
                total=total.value,
            )
        )
    return found


def gpus() -> list[Device]:
    return [d for d in devices() if d.kind in ("GPU", "iGPU")]


def cpu_flags() -> set[str] | None:
    """This CPU's instruction-set flags (Linux), None where /proc/cpuinfo does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def system_info() -> dict[str, dict[str, str]]:
    """llama.cpp's build features per backend, from `CPU : AVX2 = 1 | ... | CUDA : ARCHS = 900 |`:
    {'CPU': {'AVX2': '1', ...}, 'CUDA': {'ARCHS': '900', ...}}."""
    text = llama_cpp.llama_print_system_info().decode(errors="replace")
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("CPU", {})
    for part in text.replace("\n", "|").split("|"):
        head, colon, rest = part.partition(" : ")
        if colon:
            current = sections.setdefault(head.strip(), {})
            part = rest
        key, sep, value = part.partition("=")
        if sep:
            current[key.strip()] = value.strip()
    return sections
