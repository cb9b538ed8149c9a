"""What llama.cpp's RPC backend costs: speed through loopback workers, and load time with the cache.

1. Speed: the default model locally, with all layers on one loopback `edgellm worker`, and split
   over this process and two workers (`--gpu-layers auto`); pp, tg and time to first token as
   `edgellm bench` measures them (each in a fresh process), the three configurations interleaved
   in every round, medians over the rounds. Loopback has no network latency: the difference is
   the protocol's per-token cost (a graph sent and results read back per token).
2. Load time: a model whose feed-forward tensors are over llama.cpp's 10 MiB hash threshold,
   every layer on a worker, loaded in a fresh process through a worker without a cache and
   through one with `--cache` (warmed by one load first); interleaved, medians.

Writes the `rpc` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_rpc [--rounds 5] [--threads 1] [--n-prompt 128] [--n-gen 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.report import machine, write_section
from edgellm.measure.benchmark import Setting, run_settings
from edgellm.models.default_model import default_model_path
from edgellm.runtime import rpc

ROOT = Path(__file__).resolve().parent.parent
LOAD = """
import sys, time
from edgellm.runtime.engine import Engine, LoadOptions
t = time.perf_counter()
with Engine(sys.argv[1], LoadOptions(n_ctx=256, n_threads=1, probe=False, rpc=(sys.argv[2],), n_gpu_layers=-1)):
    print(time.perf_counter() - t)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the client and of each worker (default 1)")
    p.add_argument("--n-prompt", type=int, default=128, help="prompt tokens (default 128)")
    p.add_argument("--n-gen", type=int, default=64, help="generated tokens (default 64)")
    return p.parse_args(argv)


@contextlib.contextmanager
def worker(threads: int, *extra: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edgellm", "worker", "--port", str(port), "--threads", str(threads), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(rpc.WorkerError):
                rpc.probe(rpc.Endpoint.parse(endpoint), timeout=1)
                break
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()


def speed(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    model = default_model_path()
    with worker(args.threads) as one, worker(args.threads) as a, worker(args.threads) as b:
        configs = {"local": ((), 0), "1 worker, all layers": ((one,), -1)}
        from edgellm.commands.options import worker_split

        auto = worker_split(argparse.Namespace(rpc=(a, b), gpu_layers="auto"), model, args.n_prompt + args.n_gen + 256)
        configs[f"here + 2 workers ({auto.remote_layers}/{auto.block_count} layers on workers)"] = ((a, b),
                                                                                                     auto.n_gpu_layers)
        samples: dict[str, dict[str, list[float]]] = {name: {"pp": [], "tg": [], "ttft": []} for name in configs}
        for r in range(args.rounds):
            for name, (workers, layers) in configs.items():
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                setting = Setting(args.threads, layers, args.n_prompt, args.n_gen, 1, workers)
                (row,) = run_settings(model, [setting])
                samples[name]["pp"].append(row.pp.avg_ts)
                samples[name]["tg"].append(row.tg.avg_ts)
                samples[name]["ttft"].append(row.ttft_avg_s * 1000)
    return [(name, {k: statistics.median(v) for k, v in s.items()}) for name, s in samples.items()]


def load_times(args: argparse.Namespace) -> dict[str, float]:
    from tests.store.tiny_gguf import write_tiny_llama  # the same synthetic model tests/rpc loads

    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_llama(Path(tmp) / "big.gguf", layers=4, embedding=2048, heads=16, kv_heads=16, ffn=5632,
                                 vocab=512)  # fmt: skip
        env = {**os.environ, "GGML_NO_BACKTRACE": "1"}

        def load(endpoint: str) -> float:
            out = subprocess.run([sys.executable, "-c", LOAD, str(model), endpoint], cwd=ROOT, env=env,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            return float(out.strip().splitlines()[-1])

        with worker(args.threads) as plain, worker(args.threads, "--cache", str(Path(tmp) / "cache")) as cached:
            load(cached)  # fills the cache
            times: dict[str, list[float]] = {"no cache": [], "--cache (warm)": []}
            for r in range(args.rounds):
                print(f"load round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
                times["no cache"].append(load(plain))
                times["--cache (warm)"].append(load(cached))
        return {k: statistics.median(v) for k, v in times.items()} | {"size": model.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = speed(args)
    loads = load_times(args)
    base = rows[0][1]
    lines = [
        "## RPC workers (llama.cpp's RPC backend over loopback)",
        "",
        f"Machine: {machine()} (2 cores shared with other engineers' jobs while measured: timings swing).",
        f"Command: `.venv/bin/python -m bench.bench_rpc --rounds {args.rounds} --threads {args.threads} "
        f"--n-prompt {args.n_prompt} --n-gen {args.n_gen}`; medians of {args.rounds} interleaved rounds, each "
        "configuration in a fresh process (`edgellm bench`'s measurement), workers on loopback with "
        f"{args.threads} thread(s) each.",
        "",
        f"| default model, {args.threads} thread(s) | pp{args.n_prompt} tok/s | tg{args.n_gen} tok/s | tg vs local "
        f"| TTFT ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['pp']:.1f} | {m['tg']:.1f} | {m['tg'] / base['tg']:.2f} | {m['ttft']:.0f} |")
    lines += [
        "",
        "Anchor: llama.cpp's own llama-bench here, default model, 1 thread: tg64 144 tok/s local, 156 with all "
        "layers on one loopback worker (shared/NOTES.md).",
        "",
        f"Load time, every layer on one loopback worker, synthetic 4-layer F16 model of "
        f"{loads['size'] / 1e6:.0f} MB (feed-forward tensors 23 MB, over the 10 MiB hash threshold; attention "
        "tensors 8.4 MB, always sent): "
        f"{loads['no cache']:.2f} s without a cache, {loads['--cache (warm)']:.2f} s with a warm `--cache` "
        f"({loads['--cache (warm)'] / loads['no cache']:.2f}x). tests/rpc/test_cache.py counts the bytes: the "
        "second load sends everything but the cached tensors.",
    ]
    write_section("rpc", "\n".join(lines) + "\n")
    print(json.dumps({"speed": rows, "load": loads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
