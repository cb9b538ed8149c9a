"""How close generation gets to the memory-bandwidth limit.

Decoding one token reads every weight once (the token-embedding table only for its one row,
unless it doubles as the output matrix) plus the KV cache so far, so tokens/s can never exceed
bandwidth / bytes-per-token. This measures the machine's read bandwidth with numpy (each thread
taking the maximum of its share of a 1 GiB float32 array: SIMD compares, so memory is the limit,
unlike a sum, which is compute-bound at ~20 GB/s per core here), times
tg128 like `edgellm bench`, and writes the ratio to docs/benchmarks.md (section "bandwidth").

Models: the bundled SmolLM2 (93 MB) and a synthetic TinyLlama-shaped checkpoint (1.1B parameters,
repeated-pattern weights: speed does not depend on their values) converted and quantized by
edgellm's own pipeline to Q4_K_M and Q8_0, big enough that no cache hides the memory traffic.

    .venv/bin/python -m bench.bench_bandwidth [MODEL.gguf ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, write_section  # noqa: E402
from edgellm.measure.benchmark import Setting, run_settings  # noqa: E402
from edgellm.models.default_model import default_model_path  # noqa: E402
from edgellm.runtime.engine import default_threads  # noqa: E402
from tests.quantize.builders import write_synthetic  # noqa: E402

# TinyLlama-1.1B's shape (Llama-2 architecture, grouped-query attention)
SYNTHETIC = {"hidden": 2048, "ff": 5632, "layers": 22, "heads": 32, "kv_heads": 4, "vocab": 32000}

ARRAY_BYTES = 1 << 30
TRIES = 5
N_GEN = 128


def read_bandwidth(threads: int) -> float:
    """Bytes/s of the best of TRIES passes in which ``threads`` threads each take the maximum of a
    slice of 1 GiB (numpy releases the GIL inside the reduction, so the threads run in parallel)."""
    data = np.ones(ARRAY_BYTES // 4, dtype=np.float32)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(TRIES):
            t0 = time.perf_counter()
            list(pool.map(np.max, parts))
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best


def copy_bandwidth() -> float:
    """Bytes/s moved (read + written) by one np.copyto of 512 MiB, best of TRIES (STREAM 'copy')."""
    src = np.ones(ARRAY_BYTES // 16, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(TRIES):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def bytes_per_token(path: Path, position: int) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) read to decode one token at ``position`` (f16 K and V)."""
    reader = gguf.GGUFReader(path)
    names = {t.name for t in reader.tensors}
    weights = 0
    for t in reader.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            weights += int(t.n_bytes) // int(t.shape[1])  # one row (get_rows); output.weight is separate
        else:
            weights += int(t.n_bytes)
    arch = reader.fields["general.architecture"].contents()

    def field(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    heads = field("attention.head_count")
    kv_heads = field("attention.head_count_kv") if f"{arch}.attention.head_count_kv" in reader.fields else heads
    head_dim = field("embedding_length") // heads
    kv = 2 * field("block_count") * kv_heads * head_dim * position * 2
    return weights, kv


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def main(models: list[Path]) -> None:
    load_before = load()
    threads = default_threads()
    read_n = read_bandwidth(threads)
    read_1 = read_bandwidth(1)
    read = max(read_n, read_1)  # the most this machine reads: the limit generation is held to
    copy = copy_bandwidth()
    lines = [
        "## Memory bandwidth and the generation limit",
        "",
        f"Measured {machine()} by `bench/bench_bandwidth.py`. The machine is shared with other jobs, so",
        "every number here is noisy (best-of-5 for bandwidth, mean ± sd of 3 runs for speed).",
        "",
        f"- read bandwidth: **{read / 1e9:.1f} GB/s** (best of {read_n / 1e9:.1f} GB/s with {threads} threads and "
        f"{read_1 / 1e9:.1f} GB/s with one;",
        f"  numpy's max over a 1 GiB float32 array); copy (read + write, one thread): {copy / 1e9:.1f} GB/s",
        "",
        "A decoded token reads every weight once plus the KV cache so far (f16 K and V, position 64 = the",
        f"middle of tg{N_GEN}). Ratio = bytes per token × tokens/s ÷ read bandwidth: 100 % would mean",
        "generation is limited only by memory bandwidth. Like the bandwidth (best of 5), the ratio uses the",
        "best of the 3 runs: on shared cores it is the closest to what the machine can do alone.",
        "",
        f"| model | bytes per token | tg{N_GEN} t/s ({threads} threads) | best run t/s | bytes/s read | "
        "bandwidth limit t/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for path in models:
        (row,) = run_settings(path, [Setting(threads=threads, n_prompt=16, n_gen=N_GEN, reps=3)])
        weights, kv = bytes_per_token(path, N_GEN // 2)
        per_token = weights + kv
        best = max(row.tg.samples_ts)
        ratio = per_token * best / read
        ratios.append(ratio)
        lines.append(
            f"| {row.model_type} | {per_token / 1e6:.1f} MB | {row.tg.avg_ts:.1f} ± {row.tg.stddev_ts:.1f} | "
            f"{best:.1f} | {per_token * best / 1e9:.2f} GB/s | {read / per_token:.0f} | {100 * ratio:.0f} % |"
        )
    top = 100 * max(ratios)
    lines += [
        "",
        "The synthetic TinyLlama rows are a 1.1B-parameter Llama-2 checkpoint made by",
        "`tests/quantize/builders.write_synthetic` and converted by edgellm's pipeline (its weights are a",
        "repeated pattern: speed does not depend on the values).",
        "",
        f"Reading: with {threads} threads generation reaches at most {top:.0f} % of the bandwidth limit: "
        + (
            "it is bound by compute here (dequantizing and multiplying every weight on shared cores), not by memory; "
            "more cores would raise tokens/s towards the 'bandwidth limit' column."
            if top < 50
            else "most of each token's time is memory traffic, so fewer bytes per token (a smaller quantization "
            "type) is the surest way to more tokens/s."
        )
        + " Small models lose more to fixed per-token work (graph building, thread hand-offs), which does not "
        "shrink with the weights.",
    ]
    lines.insert(4, f"Load average {load_before} at the start, {load()} at the end.")
    print("\n".join(lines))
    write_section("bandwidth", "\n".join(lines))


def synthetic_models(work: Path) -> list[Path]:
    """The TinyLlama-shaped checkpoint as Q4_K_M and Q8_0 GGUFs made by `edgellm quantize`'s pipeline."""
    import quantize

    folder = work / "TinyLlama-1.1B-synthetic-hf"
    write_synthetic(folder, **SYNTHETIC)
    outputs = quantize.run(folder, "q4_k_m,q8_0", outdir=work, progress=False)
    shutil.rmtree(folder)
    return [o.path for o in outputs]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path, help="GGUF files (default: SmolLM2 and a synthetic 1.1B)")
    args = ap.parse_args()
    if args.models:
        main(args.models)
    else:
        with tempfile.TemporaryDirectory(prefix="edgellm-bandwidth-") as tmp:
            main([default_model_path(), *synthetic_models(Path(tmp))])
