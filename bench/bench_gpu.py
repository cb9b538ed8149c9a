"""Partial GPU offload, measured: 0, half and all layers on the GPU.

For each model: prompt (pp512) and generation (tg128) tokens/s through `edgellm.measure.benchmark`
(each setting in a fresh process, as `edgellm bench`), the VRAM the offload takes (ggml's own
device memory, before and after loading), and how far the GPU's logits are from the CPU's on the
same tokens (NMSE and top-1 agreement; f16 tolerance). Needs a GPU build (EDGELLM_GPU=cuda).

    python -m bench.bench_gpu --model default --model other.gguf --json results.json
    python -m bench.bench_gpu --render results.json      # results -> docs/benchmarks.md
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench import gpu_cli
from edgellm.measure.benchmark import Setting, run_settings
from edgellm.models.gguf_file import inspect
from edgellm.models.resolve import resolve_model
from edgellm.runtime import backends
from edgellm.runtime.engine import Engine, LoadOptions, default_threads

N_LOGIT_TOKENS = 128


def _text_tokens(path: Path) -> list[int]:
    """The first tokens of the bundled English evaluation text: real text, so that the logits are
    peaked as in use (random tokens give flat distributions whose top-1 flips on any rounding)."""
    from importlib import resources

    text = (resources.files("edgellm") / "data" / "eval_en.txt").read_text(encoding="utf-8")
    with Engine(path, LoadOptions(n_ctx=512, probe=False)) as engine:
        return engine.tokenize(text, add_special=True, parse_special=False)[:N_LOGIT_TOKENS]


def cpu_logits(path: Path, tokens: list[int]) -> np.ndarray:
    """The CPU-only reference: no layers offloaded and no op offload (else llama.cpp multiplies
    big batches of CPU layers on the GPU)."""
    with Engine(path, LoadOptions(n_ctx=2048, n_gpu_layers=0, op_offload=False, probe=False)) as engine:
        return engine.logits(tokens)


def _vram_used_by(path: Path, gpu_layers: int, tokens: list[int]) -> tuple[int, np.ndarray]:
    """Free GPU memory before minus after loading (model + context); and the logits of ``tokens``."""
    before = sum(d.free for d in backends.gpus())
    with Engine(path, LoadOptions(n_ctx=2048, n_gpu_layers=gpu_layers, probe=False)) as engine:
        engine.reset()
        logits = engine.logits(tokens)
        after = sum(d.free for d in backends.gpus())
    return before - after, logits


def measure_model(path: Path, threads: int, reps: int) -> list[dict[str, object]]:
    info = inspect(path)
    layers = info.block_count
    tokens = _text_tokens(path)
    rows, reference = [], cpu_logits(path, tokens)
    for gpu_layers in (0, layers // 2, layers + 1):  # +1: the output layer too, i.e. everything
        t0 = time.perf_counter()
        (row,) = run_settings(path, [Setting(threads=threads, gpu_layers=gpu_layers, reps=reps)])
        vram, logits = _vram_used_by(path, gpu_layers, tokens)
        nmse = float(np.sum((logits - reference) ** 2) / np.sum(reference**2))
        top1 = float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))
        rows.append({
            "model": path.name, "type": info.file_type, "params": info.parameters, "layers": layers,
            "gpu_layers": min(gpu_layers, layers), "offload": f"{min(gpu_layers, layers)}/{layers}",
            "pp512": row.pp.avg_ts, "pp512_sd": row.pp.stddev_ts, "tg128": row.tg.avg_ts, "tg128_sd": row.tg.stddev_ts,
            "ttft_ms": row.ttft_avg_s * 1000, "vram_bytes": vram, "nmse_vs_cpu": nmse, "top1_vs_cpu": top1,
            "seconds": time.perf_counter() - t0,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def converted_test_model(folder: Path) -> Path:
    """A ~0.9B-parameter Llama-2-shaped checkpoint (random weights, grouped-query attention) built
    with transformers, converted to q4_k_m by edgellm's own pipeline: the path users' models take."""
    from quantize.convert import run
    from tests.quantize.builders import LLAMA2_CONFIG, build, train_spm

    config = {**LLAMA2_CONFIG, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
              "num_attention_heads": 16, "num_key_value_heads": 4}
    src = build(folder / "llama-gpu-test", config, train_spm(), layout="safetensors", dtype="bfloat16")
    (out,) = run(src, "q4_k_m", outdir=folder, progress=False)
    return out.path


def render(results: dict[str, object]) -> str:
    lines = [
        "## Partial GPU offload",
        "",
        f"{gpu_cli.intro('bench_gpu', results)}; {results['threads']} threads, "
        f"{results['reps']} repeats (mean ± sd). VRAM = free device memory before minus after loading "
        f"(weights + KV cache + compute buffers, n_ctx 2048). With 0 layers offloaded llama.cpp still runs "
        f"the matrix products of batches of 32+ tokens on the GPU (op offload), hence pp512's speed and the "
        f"VRAM in that row. Logits: the first {N_LOGIT_TOKENS} tokens of the bundled English text vs a CPU-only "
        f"reference "
        f"(0 layers, op offload off): NMSE and top-1 agreement (see the precision section below for what "
        f"these numbers mean).",
        "",
        "| model | type | layers on GPU | pp512 tok/s | tg128 tok/s | TTFT ms | VRAM | logits NMSE | top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['model']} | {r['type']} | {r['offload']} | {r['pp512']:.0f} ± {r['pp512_sd']:.0f} | "
            f"{r['tg128']:.1f} ± {r['tg128_sd']:.1f} | {r['ttft_ms']:.1f} | {r['vram_bytes'] / 2**20:.0f} MiB | "
            f"{r['nmse_vs_cpu']:.2e} | {r['top1_vs_cpu'] * 100:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = gpu_cli.parser(__doc__)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--test-model", type=Path, metavar="DIR", help="also build and convert a test model in DIR")
    args = ap.parse_args()
    if gpu_cli.rendered_only(args, "gpu", render):
        return
    results = gpu_cli.measured_on() | {"threads": args.threads, "reps": args.reps}
    models = [resolve_model(name) for name in args.model or ["default"]]
    if args.test_model:
        models.append(converted_test_model(args.test_model))
    results["rows"] = [row for path in models for row in measure_model(path, args.threads, args.reps)]
    gpu_cli.finish(args, results, render)


if __name__ == "__main__":
    main()
