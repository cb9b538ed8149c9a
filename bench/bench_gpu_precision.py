"""Why, and how far, GPU logits differ from CPU logits, against f16 tolerance.

One model in three precisions holding the same weights (F32 and F16 copies dequantized by
llama.cpp from the given file), each evaluated on the first tokens of the bundled English text:

- on the CPU, and on the GPU with all layers and with half of them;
- with llama.cpp's defaults (flash attention where supported, f16 KV cache) and "exact"
  (no flash attention, f32 KV cache);
- token by token (batch 1: matrix-vector kernels) as well as in one batch;
- on the GPU once more in strict f32: NVIDIA_TF32_OVERRIDE=0 (cuBLAS without the TF32 tensor-core
  math ggml asks for) and GGML_CUDA_CUBLAS_COMPUTE_TYPE=f32 (f16 weights multiplied with f32
  rather than f16 accumulation). If a GPU difference vanishes in strict f32, it is the kernels'
  precision, not a bug;
- and, exact mode only, the F32 copy quantized into other types (--types), to tell a kernel of one
  type from the rest.

f16 tolerance is what the CPU itself does to these logits when it goes to f16: the larger of
"weights rounded to f16" (F16 vs F32 file, exact) and "attention in f16" (llama.cpp's defaults vs
exact, F32 file). A second yardstick: how far the CPU moves from itself when it computes the same
logits token by token instead of in batches (other kernels, the same arithmetic). A GPU run
agrees with the CPU when its NMSE against the CPU (same file, same mode) is within them.

Each run is its own process: CUDA reads those variables when it starts.

    python -m bench.bench_gpu_precision --model default --json $OUT/precision.json
    python -m bench.bench_gpu_precision --render precision.json     # -> docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import gpu_cli
from bench.bench_gpu import _text_tokens

STRICT_F32 = {"NVIDIA_TF32_OVERRIDE": "0", "GGML_CUDA_CUBLAS_COMPUTE_TYPE": "f32"}
MODES = ("default", "exact")


@dataclass(frozen=True)
class Run:
    """One evaluation: which copy of the model, where, how."""

    precision: str  # F32, F16 or the file's own type
    layers: str  # "cpu", "half", "all"
    mode: str  # "default" or "exact"
    strict: bool = False
    batch: int = 512  # 1: token by token (other kernels: matrix-vector instead of matrix-matrix)
    env: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        where = {"cpu": "CPU", "half": "GPU, half the layers", "all": "GPU, all layers"}[self.layers]
        how = (", strict f32" if self.strict else "") + (", token by token" if self.batch == 1 else "")
        return f"{self.precision}, {where}, {self.mode}{how}"


def plan(precisions: list[str], extra: list[str]) -> list[Run]:
    """Everything for the model's own precisions; the exact-mode runs alone for the ``extra`` types."""
    runs = []
    for p in precisions + extra:
        modes = MODES if p in precisions else ("exact",)
        for mode in modes:
            runs += [Run(p, "cpu", mode), Run(p, "all", mode)] + ([Run(p, "half", mode)] if p in precisions else [])
        runs += [Run(p, "cpu", "exact", batch=1), Run(p, "all", "exact", batch=1),
                 Run(p, "all", "exact", strict=True, env=STRICT_F32)]
    return runs


def gpu_layers(layers: str, block_count: int) -> int:
    return {"cpu": 0, "half": block_count // 2, "all": -1}[layers]


def evaluate(path: Path, n_gpu_layers: int, mode: str, batch: int, tokens: list[int]) -> np.ndarray:
    """Logits of ``tokens`` (the worker's job, in a process of its own)."""
    from edgellm.runtime.engine import Engine, LoadOptions

    exact = mode == "exact"
    options = LoadOptions(n_ctx=2048, n_gpu_layers=n_gpu_layers, op_offload=n_gpu_layers != 0,
                          kv_f32=exact, flash_attn=False if exact else None, n_batch=batch, probe=False)
    with Engine(path, options) as engine:
        return engine.logits(tokens)


def run_in_process(path: Path, run: Run, block_count: int, tokens_file: Path, out: Path) -> np.ndarray:
    layers = str(gpu_layers(run.layers, block_count))
    cmd = [sys.executable, "-m", "bench.bench_gpu_precision", "--worker", str(path), "--gpu-layers", layers,
           "--mode", run.mode, "--batch", str(run.batch), "--tokens", str(tokens_file), "--out", str(out)]
    subprocess.run(cmd, env={**os.environ, **run.env}, check=True)
    return np.load(out)


def rewritten(src: Path, precision: str, folder: Path) -> Path:
    """``src`` rewritten by llama.cpp in ``precision`` (F32 and F16 of a quantized file: its weights,
    dequantized)."""
    import llama_cpp

    from quantize.llamacpp import FILE_TYPES

    dst = folder / f"{src.stem}-{precision}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize = int(FILE_TYPES[precision.lower()].ftype), True
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise SystemExit(f"{src}: llama.cpp could not rewrite it in {precision}")
    return dst


@contextlib.contextmanager
def with_f16_copy(model: Path, f16: bool) -> Iterator[list[Path]]:
    """``[model]``, plus with ``f16`` its F16 copy (the larger test model the CPU benchmarks use),
    written to a temporary folder that goes away afterwards."""
    if not f16:
        yield [model]
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield [model, rewritten(model, "F16", Path(tmp))]


def nmse(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((got.astype(np.float64) - ref) ** 2) / np.sum(ref.astype(np.float64) ** 2))


def top1(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(got.argmax(-1) == ref.argmax(-1)))


def compare(logits: dict[Run, np.ndarray], own: str) -> dict[str, object]:
    """Every run against the CPU (same file, same mode) and against the truth (CPU, F32, exact).
    Yardsticks: f16 tolerance (the CPU's own f16 runs), and each file's spread on the CPU itself
    (token by token vs in batches: the same numbers through other kernels)."""
    truth = logits[Run("F32", "cpu", "exact")]
    weights16 = nmse(logits[Run("F16", "cpu", "exact")], truth)
    attention16 = nmse(logits[Run("F32", "cpu", "default")], truth)
    tolerance = max(weights16, attention16)
    spread = {run.precision: nmse(got, logits[Run(run.precision, "cpu", "exact")])
              for run, got in logits.items() if run.batch == 1 and run.layers == "cpu"}
    rows = []
    for run, got in logits.items():
        cpu = logits[Run(run.precision, "cpu", run.mode)]
        row = {"run": run.label, "precision": run.precision, "layers": run.layers, "mode": run.mode,
               "strict": run.strict, "batch": run.batch, "nmse_truth": nmse(got, truth), "top1_truth": top1(got, truth)}
        if run != Run(run.precision, "cpu", run.mode):
            err = nmse(got, cpu)
            row |= {"nmse_cpu": err, "top1_cpu": top1(got, cpu), "within_f16": err <= tolerance,
                    "within_spread": err <= spread[run.precision]}
        rows.append(row)
    return {"quantized": own, "weights_f16": weights16, "attention_f16": attention16, "tolerance": tolerance,
            "spread": spread, "rows": rows}


def measure(source: Path, folder: Path, types: list[str]) -> dict[str, object]:
    """``source`` in F32, F16 and its own type; and ``types`` quantized from the F32 copy."""
    from edgellm.models.gguf_file import inspect

    info = inspect(source)
    files = {"F32": rewritten(source, "F32", folder), "F16": rewritten(source, "F16", folder)}
    files.setdefault(info.file_type, source)
    own = list(files)
    extra = [t for t in types if t not in files]
    files |= {t: rewritten(files["F32"], t, folder) for t in extra}
    tokens_file = folder / "tokens.npy"
    tokens = _text_tokens(source)
    np.save(tokens_file, np.array(tokens, dtype=np.int64))
    logits = {}
    for run in plan(own, extra):
        logits[run] = run_in_process(files[run.precision], run, info.block_count, tokens_file, folder / "logits.npy")
        print(f"{run.label}: done", file=sys.stderr, flush=True)
    return {"model": source.name, "layers": info.block_count, "tokens": len(tokens)} | compare(logits, info.file_type)


def _truth_ratio(r: dict[str, object], rows: dict[tuple, dict[str, object]]) -> str:
    """The run's error against the truth over the CPU's for the same file and mode (1x: as accurate)."""
    cpu = rows[(r["precision"], "cpu", r["mode"], False, 512)]["nmse_truth"]
    return f"{r['nmse_truth'] / cpu:.1f}x" if cpu else "-"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(results: dict[str, object]) -> str:
    lines = [
        "## GPU vs CPU logits: what the differences mean",
        "",
        f"{gpu_cli.intro('bench_gpu_precision', results)}. Each model in "
        "three precisions holding the same weights (F32 and F16 dequantized by llama.cpp from the file), logits "
        "of the first tokens of the bundled English text. *default*: llama.cpp's defaults (flash attention, f16 "
        "KV cache); *exact*: no flash attention, f32 KV cache; *strict f32*: exact plus `NVIDIA_TF32_OVERRIDE=0` "
        "and `GGML_CUDA_CUBLAS_COMPUTE_TYPE=f32`. \"vs CPU\" compares with the CPU run of the same file and "
        "mode; \"vs truth\" with the CPU running the F32 file exactly. f16 tolerance = the larger of the CPU's "
        "own moves to f16 (weights rounded to f16; attention in f16).",
    ]
    for m in results["models"]:  # type: ignore[union-attr]
        rows = {(r["precision"], r["layers"], r["mode"], r.get("strict", False), r.get("batch", 512)): r
                for r in m["rows"]}

        lines += [
            "",
            f"### {m['model']} ({m['layers']} layers, {m['tokens']} tokens)",
            "",
            f"f16 tolerance: NMSE {m['tolerance']:.2e} (weights in f16 {m['weights_f16']:.2e}, attention in f16 "
            f"{m['attention_f16']:.2e}).",
            "",
            "In short (all layers on the GPU, exact mode; *error vs truth* is the GPU's NMSE against the F32 truth "
            "divided by the CPU's, for the same file: 1x = as accurate as the CPU):",
            "",
            "| weights | GPU vs CPU | strict f32 GPU vs CPU | CPU vs itself (token by token) | within f16 tolerance "
            "(strict) | GPU error vs truth ÷ CPU's |",
            "|---|---|---|---|---|---|",
        ]
        for p, spread in m["spread"].items():
            gpu, strict = rows[(p, "all", "exact", False, 512)], rows[(p, "all", "exact", True, 512)]
            lines.append(f"| {p} | {gpu['nmse_cpu']:.2e} | {strict['nmse_cpu']:.2e} | {spread:.2e} | "
                         f"{_yes(gpu['within_f16'])} ({_yes(strict['within_f16'])}) | {_truth_ratio(gpu, rows)} |")
        lines += [
            "",
            "Every run:",
            "",
            "| run | NMSE vs CPU | top-1 vs CPU | within f16 tolerance | NMSE vs truth | ÷ CPU's | top-1 vs truth |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in m["rows"]:
            if "nmse_cpu" in r:
                vs_cpu = f"{r['nmse_cpu']:.2e} | {r['top1_cpu'] * 100:.1f}% | {_yes(r['within_f16'])}"
                ratio = _truth_ratio(r, rows)
            else:
                vs_cpu, ratio = "(reference) | |", ""
            lines.append(f"| {r['run']} | {vs_cpu} | {r['nmse_truth']:.2e} | {ratio} | {r['top1_truth'] * 100:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = gpu_cli.parser(__doc__)
    ap.add_argument("--test-model", type=Path, metavar="DIR", help="also build and convert bench_gpu's test model")
    ap.add_argument("--types", default="Q4_0,Q5_0,Q5_1,Q8_0,Q4_K_M,Q6_K",
                    help="also quantize the F32 copy into these types and compare each (default: %(default)s)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gpu-layers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, default="exact", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        tokens = np.load(args.tokens).tolist()
        np.save(args.out, evaluate(args.worker, args.gpu_layers, args.mode, args.batch, tokens))
        return
    if gpu_cli.rendered_only(args, "gpu-precision", render):
        return
    from bench.bench_gpu import converted_test_model
    from edgellm.models.resolve import resolve_model

    results = gpu_cli.measured_on()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    with tempfile.TemporaryDirectory(prefix="edgellm-precision-") as tmp:
        sources = [resolve_model(name) for name in args.model or ([] if args.test_model else ["default"])]
        if args.test_model:
            sources.append(converted_test_model(args.test_model))
        models = []
        for source in sources:
            folder = Path(tmp) / source.stem
            folder.mkdir()
            models.append(measure(source, folder, types))
    gpu_cli.finish(args, results | {"models": models}, render)


if __name__ == "__main__":
    main()
