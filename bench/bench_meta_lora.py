"""Peak memory and speed of converting Meta consolidated.NN.pth shards, and of merging a LoRA while
converting: the point of streaming is that peak RSS stays far below the checkpoint's size.

A synthetic Llama-2-70B-shaped checkpoint (grouped-query attention, 8 model-parallel shards, bf16,
32,000-token vocabulary) at reduced width and depth is written with torch.save, then converted to
f16 in a child process whose peak RSS (VmHWM: mapped file pages included) is reported. Writes
the `meta-lora` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_meta_lora [--dim 2048] [--layers 4] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, write_section

# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
CONVERT = """
import sys
from quantize.convert import convert
convert(sys.argv[1], "f16", out=sys.argv[2], progress=False, loras=sys.argv[3:])
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def write_checkpoint(folder: Path, dim: int, layers: int, shards: int, vocab: int = 32000) -> int:
    """Random bf16 Meta shards + params.json + tokenizer.model; returns the checkpoint's bytes."""
    import torch

    from tests.quantize.builders import extend_spm, train_spm

    heads, kv_heads = dim // 128, max(shards, dim // 1024)
    ffn = 256 * ((int(2 * 4 * dim / 3 * 1.3) + 255) // 256)  # 70B's ffn_dim_multiplier 1.3, multiple_of 256
    kv = kv_heads * 128
    shapes = {
        "tok_embeddings.weight": ((vocab, dim), 1),
        "norm.weight": ((dim,), None),
        "output.weight": ((vocab, dim), 0),
    }
    for i in range(layers):
        shapes |= {
            f"layers.{i}.attention.wq.weight": ((dim, dim), 0),
            f"layers.{i}.attention.wk.weight": ((kv, dim), 0),
            f"layers.{i}.attention.wv.weight": ((kv, dim), 0),
            f"layers.{i}.attention.wo.weight": ((dim, dim), 1),
            f"layers.{i}.feed_forward.w1.weight": ((ffn, dim), 0),
            f"layers.{i}.feed_forward.w2.weight": ((dim, ffn), 1),
            f"layers.{i}.feed_forward.w3.weight": ((ffn, dim), 0),
            f"layers.{i}.attention_norm.weight": ((dim,), None),
            f"layers.{i}.ffn_norm.weight": ((dim,), None),
        }
    folder.mkdir(parents=True)
    total = 0
    for s in range(shards):
        part = {}
        for name, (shape, axis) in shapes.items():
            local = list(shape)
            if axis is not None:
                local[axis] //= shards
            part[name] = (torch.randn(*local) * 0.02).to(torch.bfloat16)
            total += part[name].numel() * 2
        torch.save(part, folder / f"consolidated.{s:02d}.pth")
        del part
    params = {"dim": dim, "n_layers": layers, "n_heads": heads, "n_kv_heads": kv_heads, "vocab_size": -1,
              "multiple_of": 256, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5}  # fmt: skip
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model").write_bytes(extend_spm(train_spm(1000), vocab))
    return total


def write_adapter(folder: Path, meta: Path, rank: int) -> None:
    """A PEFT adapter (safetensors) on q/k/v/o and the MLP of every layer, in HF names."""
    import torch
    from safetensors.torch import save_file

    params = json.loads((meta / "params.json").read_text())
    dim, kv = params["dim"], params["n_kv_heads"] * 128
    from quantize.sources import open_checkpoint

    ffn = open_checkpoint(meta).config["intermediate_size"]
    dims = {"self_attn.q_proj": (dim, dim), "self_attn.k_proj": (kv, dim), "self_attn.v_proj": (kv, dim),
            "self_attn.o_proj": (dim, dim), "mlp.gate_proj": (ffn, dim), "mlp.up_proj": (ffn, dim),
            "mlp.down_proj": (dim, ffn)}  # fmt: skip
    state = {}
    for i in range(params["n_layers"]):
        for module, (out, inp) in dims.items():
            key = f"base_model.model.model.layers.{i}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(rank, inp) * 0.01
            state[f"{key}.lora_B.weight"] = torch.randn(out, rank) * 0.01
    folder.mkdir(parents=True)
    save_file(state, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": [m.split(".")[1] for m in dims]}
    (folder / "adapter_config.json").write_text(json.dumps(config))


def convert_in_child(src: Path, out: Path, loras: list[Path]) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one conversion in a fresh interpreter."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CONVERT, str(src), str(out), *map(str, loras)], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return time.perf_counter() - t0, int(done.stdout.split()[-1]) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rank", type=int, default=64)
    args = ap.parse_args()
    mb = 1 << 20
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        meta = root / "llama-2-70b-shaped"
        size = write_checkpoint(meta, args.dim, args.layers, args.shards)
        adapter = root / "lora"
        write_adapter(adapter, meta, args.rank)
        plain = convert_in_child(meta, root / "plain.gguf", [])
        merged = convert_in_child(meta, root / "merged.gguf", [adapter])
        out_size = (root / "plain.gguf").stat().st_size
    runs = (("Meta shards → f16", plain), (f"Meta shards + LoRA r={args.rank} merged → f16", merged))
    rows = "\n".join(
        f"| {what} | {s:.1f} | {size / mb / s:.0f} | {peak / mb:.0f} | {peak / size:.2f} |" for what, (s, peak) in runs
    )
    write_section(
        "meta-lora",
        f"""## Meta consolidated.*.pth conversion and LoRA merge: time and peak memory

`python -m bench.bench_meta_lora --dim {args.dim} --layers {args.layers} --shards {args.shards} --rank {args.rank}`
— {machine()}; synthetic Llama-2-70B-shaped bf16 checkpoint (GQA, {args.shards} shards), {size / mb:.0f} MiB
of weights, {out_size / mb:.0f} MiB f16 GGUF; peak RSS (VmHWM) of the converting process, mapped pages included.

| conversion | seconds | MiB/s read | peak RSS MiB | peak RSS / checkpoint |
|---|---|---|---|---|
{rows}
""",
    )
    print(rows)


if __name__ == "__main__":
    main()
