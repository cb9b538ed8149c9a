"""`--gpu-layers auto` on a real GPU with as little VRAM free as a laptop's.

A second process takes the GPU's memory (cudaMalloc) until what a new process sees free is the
planner's estimate for half the model's layers plus its headroom; then `edgellm run --gpu-layers
auto --verbose` must choose about half (it says what it chose from which numbers), load with that
choice and answer, within the VRAM it saw free. Also with the whole GPU free (auto = all layers)
and with less than the headroom free (auto = 0: the CPU). VRAM used = what `run` saw free when it
planned minus the lowest free memory seen while it ran (polled every 20 ms).

    python -m bench.bench_gpu_auto --model default --json auto.json
    python -m bench.bench_gpu_auto --render auto.json        # -> docs/benchmarks.md
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import gpu_cli
from edgellm.runtime import backends
from edgellm.runtime.hardware import probe
from edgellm.runtime.planner import estimate, for_file, vram_headroom

# Runs in the hog process: llama.cpp's CUDA build brings libcudart; find it, make this process's
# context, then take all but argv[1] bytes of what is free.
HOG = r"""
import ctypes, sys, llama_cpp
llama_cpp.llama_backend_init()
path = next(line.split()[-1] for line in open("/proc/self/maps") if "libcudart" in line)
cudart = ctypes.CDLL(path)
cudart.cudaFree(None)
free, total = ctypes.c_size_t(), ctypes.c_size_t()
cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
ptr = ctypes.c_void_p()
rc = cudart.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(free.value - int(sys.argv[1])))
print(rc, flush=True)
sys.stdin.read()
"""
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
SIZE = r"([\d.]+ [KMGT]?B)"  # edgellm.units.human_bytes: decimal units, one decimal
CHOSE = re.compile(rf"--gpu-layers auto: (\d+) of (\d+) layers on the GPU \(needs {SIZE} of {SIZE} free")
UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def size_bytes(text: str) -> int:
    """`196.1 MB` -> 196100000 (what human_bytes printed, to its precision)."""
    number, unit = text.split()
    return round(float(number) * UNITS[unit])


def gpu_free() -> int:
    return sum(d.free for d in backends.gpus())


class Hog:
    """Another process holding all the VRAM but ``leave`` bytes (None: holding nothing), for a ``with``."""

    def __init__(self, leave: int | None) -> None:
        self.leave, self.proc = leave, None

    def __enter__(self) -> Hog:
        if self.leave is not None:
            self.proc = subprocess.Popen([sys.executable, "-c", HOG, str(self.leave)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
            if self.proc.stdout.readline().strip() != "0":
                raise SystemExit(f"could not take all but {self.leave} bytes of VRAM")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.stdin.close()
            self.proc.wait()


def edgellm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True)


def free_seen_by_a_new_process() -> int:
    """What a fresh edgellm process sees free: less than we see, by its own CUDA context."""
    doctor = json.loads(edgellm("doctor", "--json").stdout)
    return sum(d["free"] for d in doctor["devices"] if d["kind"] in ("GPU", "iGPU"))


def run_watching_vram(model: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`edgellm run MODEL --gpu-layers auto --verbose` and the lowest free VRAM while it ran."""
    lowest, done = [gpu_free()], threading.Event()

    def watch() -> None:
        while not done.is_set():
            lowest[0] = min(lowest[0], gpu_free())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = edgellm("run", model, "What is the capital of France?", "--gpu-layers", "auto", "--verbose", "--log",
                         "--temperature", "0", "--max-tokens", "48", "--system", "You are a helpful assistant.")
    finally:
        done.set()
        watcher.join()
    return result, lowest[0]


def scenario(name: str, model: str, leave_free: int | None, context: int) -> dict[str, object]:
    """Leave a new process ``leave_free`` bytes of VRAM (None: all there is), then let `auto` choose.
    ``context``: what a new process's CUDA context takes (free_seen_by_a_new_process's difference)."""
    with Hog(None if leave_free is None else leave_free + context):
        shown = json.loads(edgellm("show", model, "--gpu-layers", "auto", "--json").stdout)
        result, lowest = run_watching_vram(model)
    chose, offloaded = CHOSE.search(result.stderr), OFFLOADED.search(result.stderr)
    if chose is None:
        raise SystemExit(f"`edgellm run --verbose` did not say what auto chose:\n{result.stderr[-2000:]}")
    on_gpu = int(chose.group(1))
    needed, free = size_bytes(chose.group(3)), size_bytes(chose.group(4))
    return {
        "scenario": name, "free": free, "auto": on_gpu, "processor": shown["processor"],
        "offloaded": offloaded.group(0) if offloaded else "none", "planned_vram": needed,
        "used_vram": free - lowest, "lowest_free": lowest, "rc": result.returncode,
        "answer": result.stdout.strip()[:120],
    }


def measure(model: str) -> list[dict[str, object]]:
    from edgellm.models.resolve import resolve_model

    geom, weights, est = for_file(resolve_model(model))
    half = geom.layers // 2
    headroom = vram_headroom(probe())
    at_half = estimate(geom, weights, est.ctx, gpu_layers=half).vram
    next_layer = estimate(geom, weights, est.ctx, gpu_layers=half + 1).vram - at_half
    context = gpu_free() - free_seen_by_a_new_process()
    rows = [
        scenario("whole GPU free", model, None, context),
        scenario(f"room for {half} layers", model, headroom + at_half + next_layer // 2, context),
        scenario("less than the headroom free", model, headroom // 2, context),
    ]
    for row in rows:
        row |= {"headroom": headroom, "cuda_context": context}
        print(json.dumps(row), flush=True)
    return rows


def _first(results: dict[str, object]) -> dict[str, object]:
    return next(iter(results["models"].values()))[0]  # type: ignore[union-attr]


def render(results: dict[str, object]) -> str:
    lines = [
        "## `--gpu-layers auto` on a real GPU",
        "",
        f"{gpu_cli.intro('bench_gpu_auto', results)}. Another process "
        "held VRAM (cudaMalloc) so that `edgellm run --gpu-layers auto --verbose` saw only the free memory shown; "
        "*auto* and *planned* are what it said it chose and the planner's estimate for that; *llama.cpp* is "
        "llama.cpp's own log line; *used* = free when planning minus the lowest free memory while it ran "
        "(polled every 20 ms); *processor* is `edgellm show --gpu-layers auto`. The planner keeps "
        f"{_first(results)['headroom'] / 2**20:,.0f} MiB free on this GPU (10% of it, at least 1 GiB).",
        "",
        "| model | scenario | VRAM free | auto (layers) | processor | llama.cpp | planned | used | exit | answer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results["models"].items():  # type: ignore[union-attr]
        for r in rows:
            lines.append(
                f"| {Path(model).name} | {r['scenario']} | {r['free'] / 2**20:,.0f} MiB | {r['auto']} | "
                f"{r['processor']} | {r['offloaded']} | {r['planned_vram'] / 2**20:,.0f} MiB | "
                f"{r['used_vram'] / 2**20:,.0f} MiB | {r['rc']} | {r['answer'][:40]!r} |"
            )
    return "\n".join(lines)


def main() -> None:
    args = gpu_cli.parser(__doc__).parse_args()
    if gpu_cli.rendered_only(args, "gpu-auto", render):
        return
    results = gpu_cli.measured_on() | {"models": {m: measure(m) for m in args.model or ["default"]}}
    gpu_cli.finish(args, results, render)


if __name__ == "__main__":
    main()
