"""How far GPU logits are from CPU logits, against the yardstick of f16 rounding.

On the same tokens (the bundled English text): the CPU with an f32 model vs the CPU with the same
model stored in f16 (what "f16 tolerance" means), and GPU vs CPU for the f32 and the f16 file.
f32 KV cache and flash attention off everywhere, so only the matrix products differ.

    python -m bench.bench_gpu_precision --f32 model-F32.gguf --f16 model-F16.gguf
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.bench_gpu import _text_tokens
from edgellm.engine import Engine, LoadOptions


def logits(path: Path, tokens: list[int], gpu_layers: int) -> np.ndarray:
    options = LoadOptions(n_ctx=2048, n_gpu_layers=gpu_layers, op_offload=gpu_layers != 0, kv_f32=True,
                          flash_attn=False, probe=False)
    with Engine(path, options) as engine:
        return engine.logits(tokens)


def compare(name: str, got: np.ndarray, ref: np.ndarray) -> str:
    nmse = float(np.sum((got - ref) ** 2) / np.sum(ref**2))
    top1 = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    return f"| {name} | {nmse:.2e} | {top1 * 100:.1f}% |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--f32", type=Path, required=True)
    ap.add_argument("--f16", type=Path, required=True)
    args = ap.parse_args()
    tokens = _text_tokens(args.f16)
    cpu32, cpu16 = logits(args.f32, tokens, 0), logits(args.f16, tokens, 0)
    gpu32, gpu16 = logits(args.f32, tokens, -1), logits(args.f16, tokens, -1)
    print("| comparison | NMSE | top-1 agreement |\n|---|---|---|")
    print(compare("f16 weights vs f32 weights, both on the CPU (the f16 yardstick)", cpu16, cpu32))
    print(compare("f32 model: GPU vs CPU", gpu32, cpu32))
    print(compare("f16 model: GPU vs CPU", gpu16, cpu16))


if __name__ == "__main__":
    main()
