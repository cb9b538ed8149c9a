"""`edgellm doctor`: what this machine and this llama.cpp build can do, and what looks wrong."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from importlib.metadata import version

import psutil

from edgellm import __version__
from edgellm.errors import EdgeLLMError
from edgellm.models.default_model import default_model_path
from edgellm.runtime import backends, rpc
from edgellm.runtime.engine import default_threads
from edgellm.runtime.hardware import gpu_offload_supported
from edgellm.units import human_bytes

REBUILD = "rebuild with `rm .venv/.llama-cpp-build && make setup`"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="backend, CPU flags, threads, RAM, VRAM, build info and warnings")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def build_warnings(build: dict[str, str], flags: set[str] | None) -> list[str]:
    """Problems between the build's instruction sets (llama.cpp system info, CPU section) and
    this CPU's flags: a crash (SIGILL or the AMX bug) or speed left on the table."""
    if flags is None:
        return []
    found = []
    for flag, feature in backends.CPU_FEATURES.items():
        built = build.get(feature) == "1"
        if built and flag not in flags:
            found.append(f"the build uses {feature} but this CPU lacks it: it will crash (SIGILL); {REBUILD}")
        elif built and feature.startswith("AMX"):
            found.append(f"the build uses {feature}: ggml's AMX path segfaults on some Xeons; {REBUILD}")
        elif not built and flag in flags and not feature.startswith("AMX"):
            found.append(f"this CPU has {feature} but the build does not use it (slower than it could be); {REBUILD}")
    return found


@dataclass
class Report:
    edgellm: str
    llama_cpp_python: str
    backends: list[str]
    gpu_offload: bool
    rpc: bool  # llama.cpp's RPC backend: `edgellm worker` and --rpc
    devices: list[backends.Device]
    cpu: str
    build_features: dict[str, dict[str, str]]
    threads_default: int
    cores_physical: int
    cores_logical: int
    ram_total: int
    ram_available: int
    default_model: str
    warnings: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> list[backends.Device]:
        return [d for d in self.devices if d.kind in ("GPU", "iGPU")]


def report() -> Report:

    info = backends.system_info()
    vm = psutil.virtual_memory()
    try:
        model = str(default_model_path())
    except EdgeLLMError as err:
        model = f"missing: {err}"
    warnings = build_warnings(info.get("CPU", {}), backends.cpu_flags())
    offload = gpu_offload_supported()
    if not offload and os.path.exists("/proc/driver/nvidia/version"):
        warnings.append("an NVIDIA driver is present but this build has no GPU backend: "
                        "rebuild with `EDGELLM_GPU=cuda make setup`")
    return Report(
        edgellm=__version__,
        llama_cpp_python=version("llama-cpp-python"),
        backends=[name for name in info if name != "CPU"] + ["CPU"],
        gpu_offload=offload,
        rpc=rpc.available(),
        devices=backends.devices(),
        cpu=backends.cpu_name(),
        build_features=info,
        threads_default=default_threads(),
        cores_physical=psutil.cpu_count(logical=False) or 0,
        cores_logical=psutil.cpu_count() or 0,
        ram_total=vm.total,
        ram_available=vm.available,
        default_model=model,
        warnings=warnings,
    )


def run(args: argparse.Namespace) -> int:
    r = report()
    if args.json:
        print(json.dumps(asdict(r), indent=2))
        return 0
    rows = [
        ("edgellm", f"{r.edgellm} (llama-cpp-python {r.llama_cpp_python})"),
        ("backends", " + ".join(r.backends)),
        ("GPU offload", "yes" if r.gpu_offload else "no (CPU-only build; EDGELLM_GPU=cuda|metal make setup)"),
        ("RPC", f"yes: `edgellm worker` lends this machine, --rpc HOST:PORT borrows workers (protocol "
                f"{'.'.join(map(str, rpc.PROTOCOL))})" if r.rpc else f"no (no libggml-rpc in this build; {REBUILD})"),
        ("CPU", r.cpu),
        ("build features", " ".join(k for k, v in r.build_features.get("CPU", {}).items() if v == "1")),
        ("threads", f"{r.threads_default} by default ({r.cores_physical} physical, {r.cores_logical} logical cores)"),
        ("RAM", f"{human_bytes(r.ram_available)} available of {human_bytes(r.ram_total)}"),
    ]
    rows += [(f"{d.kind} {d.name}", f"{d.description}: {human_bytes(d.free)} free of {human_bytes(d.total)}")
             for d in r.gpus]
    rows += [(f"{name} build", " ".join(f"{k}={v}" for k, v in section.items()))
             for name, section in r.build_features.items() if name != "CPU"]
    rows.append(("default model", r.default_model))
    for key, value in rows:
        print(f"  {key:<16}{value}")
    print("  warnings" + ("" if r.warnings else "        none"))
    for w in r.warnings:
        print(f"    - {w}")
    return 0
