"""Where a model's layers run, worded like `ollama ps`: shown by `show`, `chat`'s status bar."""

from __future__ import annotations


def layer_split(n_gpu_layers: int, block_count: int, gpu_offload: bool) -> str:
    """"100% CPU", "40%/60% CPU/GPU" or "100% GPU" (-1 layers: all; a CPU-only build: 100% CPU)."""
    offloaded = block_count if n_gpu_layers < 0 else min(n_gpu_layers, block_count)
    if not gpu_offload or offloaded <= 0 or block_count <= 0:
        return "100% CPU"
    gpu = round(100 * offloaded / block_count)
    return "100% GPU" if gpu >= 100 else f"{100 - gpu}%/{gpu}% CPU/GPU"
