"""Conversion and quantization speed and memory: edgellm against llama.cpp's own tools, same run.

Builds a synthetic bf16 Llama checkpoint of >= 1 GB (realistic value spread, 32,000-piece
tokenizer), then in child processes (wall time and peak RSS from wait4):
  - converts it to an f16 GGUF with edgellm and with llama.cpp's convert_hf_to_gguf.py, alternating,
  - quantizes that f16 GGUF to every quantized type with edgellm's wrapper and with a direct
    `llama_cpp.llama_model_quantize` call, and checks the two outputs are byte-identical.
Writes the `convert` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_convert [--rounds 2] [--workdir DIR] [--types q4_k_m,q8_0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import machine, write_section
from quantize.llamacpp import FILE_TYPES
from tests.quantize.builders import write_synthetic

GNU_TIME = "/usr/bin/time"
CONVERT_HF = Path("/tmp/sd/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")
SHAPE = {"hidden": 2048, "ff": 5632, "layers": 10, "heads": 16, "kv_heads": 16, "vocab": 32000}

EDGELLM_CONVERT = "from quantize import convert; import sys; convert(sys.argv[1], 'f16', sys.argv[2], progress=False)"
EDGELLM_QUANTIZE = """
import sys
from quantize.llamacpp import FILE_TYPES, quantize_file
quantize_file(__import__('pathlib').Path(sys.argv[1]), __import__('pathlib').Path(sys.argv[2]),
              FILE_TYPES[sys.argv[3]], n_params=int(sys.argv[4]), threads=int(sys.argv[5]), progress=False)
"""
DIRECT_QUANTIZE = """
import sys, llama_cpp
from quantize.llamacpp import FILE_TYPES
llama_cpp.llama_backend_init()
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.nthread = int(FILE_TYPES[sys.argv[3]].ftype), int(sys.argv[5])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
"""


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one command, by GNU time: a forked child's ru_maxrss would
    include this (large) parent's RSS at fork, inherited across exec; time's own child's does not."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        proc = subprocess.run([GNU_TIME, "-o", stats.name, "-f", "%e %M", *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        wall, kb = stats.read().split()[-2:]
    return float(wall), int(kb) * 1024


def median(runs: list[tuple[float, int]]) -> float:
    return statistics.median(w for w, _ in runs)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="conversions per tool (best is reported)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--types", default=",".join(n for n, t in FILE_TYPES.items() if not t.is_float))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layers", type=int, default=SHAPE["layers"], help="fewer for a quick try (< 1 GB)")
    args = ap.parse_args()
    SHAPE["layers"] = args.layers
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir))
    try:
        load_start = load()
        src = work / "Llama-2-1B-synthetic-hf"
        size = write_synthetic(src, **SHAPE)
        for f in src.glob("*.safetensors"):  # both tools start from the page cache
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
        ours, theirs = work / "edgellm-f16.gguf", work / "llamacpp-f16.gguf"
        runs: dict[str, list[tuple[float, int]]] = {"edgellm": [], "convert_hf_to_gguf.py": []}
        for _ in range(args.rounds):
            ours.unlink(missing_ok=True)
            runs["edgellm"].append(measure([py, "-c", EDGELLM_CONVERT, str(src), str(ours)]))
            theirs.unlink(missing_ok=True)
            cmd = [py, str(CONVERT_HF), str(src), "--outtype", "f16", "--outfile", str(theirs)]
            runs["convert_hf_to_gguf.py"].append(measure(cmd))
        theirs.unlink(missing_ok=True)
        n_params = size // 2
        quant_rows = []
        for name in args.types.split(","):
            a, b = work / f"ours-{name}.gguf", work / f"direct-{name}.gguf"
            extra = [name, str(n_params), str(args.threads)]
            t_ours, rss_ours = measure([py, "-c", EDGELLM_QUANTIZE, str(ours), str(a), *extra])
            t_direct, rss_direct = measure([py, "-c", DIRECT_QUANTIZE, str(ours), str(b), *extra])
            same = a.read_bytes() == b.read_bytes()
            quant_rows.append((name, t_ours, rss_ours, t_direct, rss_direct, a.stat().st_size, same))
            a.unlink()
            b.unlink()
        write_section("convert", report(size, runs, ours.stat().st_size, quant_rows, args, load_start, load()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(size: int, runs: dict, f16_size: int, quant_rows: list, args: argparse.Namespace, before: str,
           after: str) -> str:  # fmt: skip
    gb, mb = 1e9, 1e6
    best = {tool: (min(w for w, _ in r), max(m for _, m in r)) for tool, r in runs.items()}
    (t_e, m_e), (t_l, m_l) = best["edgellm"], best["convert_hf_to_gguf.py"]
    lines = [
        "## Conversion and quantization (`bench/bench_convert.py`)",
        "",
        f"Measured {machine()}. Load average {before} at the start, {after} at the end (the conversions' own "
        "load included; absolute times move with anything else running); both tools ran alternately in the same run. "
        "edgellm flushes its output to disk (fsync) before giving it its name; convert_hf_to_gguf.py does not.",
        "",
        f"Synthetic Llama checkpoint: {size / gb:.2f} GB of bf16 weights in 2 safetensors shards "
        f"(hidden {SHAPE['hidden']}, {SHAPE['layers']} layers, ffn {SHAPE['ff']}, vocabulary {SHAPE['vocab']}), "
        "converted to an f16 GGUF from the page cache. Best wall time of "
        f"{args.rounds} runs; peak RSS is the converting process's maximum resident set (GNU time %M).",
        "",
        "| converter | wall (s) | throughput (GB/s of bf16 read) | peak RSS (MB) | all runs (s) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for tool, runs_ in runs.items():
        t, m = best[tool]
        walls = ", ".join(f"{w:.2f}" for w, _ in runs_)
        lines.append(f"| {tool} | {t:.2f} | {size / gb / t:.3f} | {m / mb:.0f} | {walls} |")
    lines += [
        "",
        f"edgellm: **{t_l / t_e:.1f}x** the throughput of llama.cpp's convert_hf_to_gguf.py (best runs; "
        f"{median(runs['convert_hf_to_gguf.py']) / median(runs['edgellm']):.1f}x by median) at "
        f"**{m_e / m_l:.2f}x** its peak RSS (target: >= 3x at < 0.4x).",
        "",
        f"Quantization of that {f16_size / gb:.2f} GB f16 GGUF by llama.cpp's quantizer, {args.threads} threads: "
        "edgellm's wrapper (`quantize.llamacpp.quantize_file`, what `edgellm quantize` runs) against a direct "
        "`llama_cpp.llama_model_quantize` call; outputs compared byte for byte.",
        "",
        "| type | edgellm (s) | direct (s) | GB/s (f16 in) | edgellm peak RSS (MB) | direct peak RSS (MB) "
        "| size (MB) | bits/weight | identical |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    n_params = size // 2
    for name, t_o, r_o, t_d, r_d, out_size, same in quant_rows:
        lines.append(
            f"| {name} | {t_o:.2f} | {t_d:.2f} | {f16_size / gb / t_o:.3f} | {r_o / mb:.0f} | {r_d / mb:.0f} "
            f"| {out_size / mb:.0f} | {out_size * 8 / n_params:.2f} | {'yes' if same else 'NO'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
