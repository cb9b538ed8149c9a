"""Where a model's layers run, worded like `ollama ps`: shown by `show`, `chat`'s status bar."""

from __future__ import annotations


def layer_split(n_gpu_layers: int, block_count: int, gpu_offload: bool) -> str:
    """"100% CPU", "40%/60% CPU/GPU" or "100% GPU" (-1 layers: all; a CPU-only build: 100% CPU)."""
    offloaded = block_count if n_gpu_layers < 0 else min(n_gpu_layers, block_count)
    if not gpu_offload or offloaded <= 0 or block_count <= 0:
        return "100% CPU"
    gpu = round(100 * offloaded / block_count)
    return "100% GPU" if gpu >= 100 else f"{100 - gpu}%/{gpu}% CPU/GPU"


# Weight types llama.cpp's CUDA kernels multiply less accurately than its CPU: their activation
# blocks carry the sum of the unquantized activations (docs/benchmarks.md, GPU vs CPU logits).
LESS_ACCURATE_ON_CUDA = ("Q4_1", "Q5_1")


def offload_note(file_type: str, device_names: list[str], n_gpu_layers: int) -> str | None:
    """A word of advice where layers of a Q4_1 / Q5_1 model would go to a CUDA GPU."""
    on_cuda = any(name.upper().startswith("CUDA") for name in device_names)
    if n_gpu_layers == 0 or not on_cuda or file_type.upper() not in LESS_ACCURATE_ON_CUDA:
        return None
    return (f"llama.cpp's CUDA kernels lose more accuracy on {file_type.upper()} than its CPU does; for GPU offload "
            "prefer Q4_K_M, Q5_K_M or Q8_0")


def split_label(split) -> str:  # noqa: ANN001 - planner.Split
    """`processor` with RPC workers: "37%/63% here/workers" by the blocks each side holds."""
    remote = round(100 * split.remote_layers / split.block_count) if split.block_count else 0
    if remote >= 100:
        return "100% workers"
    return "100% here" if remote <= 0 else f"{100 - remote}%/{remote}% here/workers"


def split_lines(split) -> list[str]:  # noqa: ANN001 - planner.Split
    """Who holds which layers and how many bytes, one line per holder (`show --rpc`)."""
    from edgellm.units import human_bytes

    return [
        f"{h.name}: {h.describe_layers()}, {human_bytes(h.needed)} (weights {human_bytes(h.weights)} + KV "
        f"{human_bytes(h.kv_cache)} + compute {human_bytes(h.compute)}) of {human_bytes(max(h.free, 0))} offered"
        + ("" if h.fits else " - DOES NOT FIT")
        for h in split.holders
    ]
