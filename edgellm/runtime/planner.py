"""Will it fit? Memory for a model, quantization and context, before anything is downloaded.

Memory = weights + KV cache + compute buffers, as llama.cpp allocates them (CPU backend):
- weights: the GGUF's tensor bytes, or parameters x bits-per-weight for a file not made yet;
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x bytes per element (f16: 2);
- compute: the largest live set of llama.cpp's graph for one 512-token micro-batch, the biggest of
  the logits (vocab x tokens), the attention scores (heads x context x tokens, plus the mask) and the
  feed-forward activations, all f32. tests/store/test_planner_vs_llama.py holds these to within
  10% of the buffer sizes llama.cpp reports for real models."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.models.registry import ModelEntry, Shape
from edgellm.runtime.hardware import Machine, probe
from edgellm.units import human_bytes

# Average bits per weight of llama.cpp's quantization mixes (file size x 8 / parameters of its
# Llama-2-7B files): K-quant "_M"/"_S" mixes keep some tensors at higher precision.
BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 3.35,
    "Q3_K_S": 3.50,
    "Q3_K_M": 3.91,
    "Q3_K_L": 4.27,
    "Q4_0": 4.55,
    "Q4_1": 5.00,
    "Q4_K_S": 4.58,
    "Q4_K_M": 4.85,
    "Q5_0": 5.54,
    "Q5_1": 6.00,
    "Q5_K_S": 5.54,
    "Q5_K_M": 5.69,
    "Q6_K": 6.56,
    "Q8_0": 8.50,
    "F16": 16.0,
    "BF16": 16.0,
    "F32": 32.0,
}
# The types `edgellm plan` lists, smallest first.
PLAN_TYPES = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")

F32 = 4
UBATCH = 512
RAM_HEADROOM = 512 << 20  # the OS, the Python runtime and llama.cpp's own bookkeeping
VRAM_HEADROOM_FRACTION = 0.10  # driver, fragmentation, other programs' windows
# and at least 1 GiB (llama.cpp's own --fit-target default): beyond the buffers estimated here, the
# CUDA runtime of a process (cuBLAS, kernels loaded on first use, ggml's pool) took 480-560 MiB on an
# H200 (bench/bench_gpu_auto.py).
MIN_VRAM_HEADROOM = 1 << 30


@dataclass(frozen=True)
class Geometry:
    """The dimensions memory depends on."""

    layers: int
    embedding: int
    heads: int
    kv_heads: int
    head_dim_k: int
    head_dim_v: int
    ffn: int
    vocab: int
    context: int  # trained context length

    @classmethod
    def from_shape(cls, shape: Shape, context: int) -> Geometry:
        return cls(
            shape.layers,
            shape.embedding,
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
            shape.head_dim,
            shape.ffn,
            shape.vocab,
            context,
        )

    @classmethod
    def from_gguf(cls, info) -> Geometry:  # noqa: ANN001 - gguf_file.GGUFInfo
        arch, meta = info.architecture, info.metadata

        def num(key: str, default: int) -> int:
            value = meta.get(f"{arch}.{key}")
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

        head_dim = info.embedding_length // info.head_count
        ffn = num("feed_forward_length", 4 * info.embedding_length)
        return cls(
            info.block_count,
            info.embedding_length,
            info.head_count,
            info.head_count_kv,
            num("attention.key_length", head_dim),
            num("attention.value_length", head_dim),
            ffn,
            info.vocab_size or num("vocab_size", 32000),
            info.context_length,
        )


@dataclass(frozen=True)
class Weights:
    """Weight bytes: in total, per repeating layer, and the output head (offloaded last)."""

    total: int
    per_layer: int
    output: int
    head: int = 0  # bytes the output head takes where it is offloaded: a tied model copies token_embd there

    @classmethod
    def from_gguf(cls, path: Path, layers: int) -> Weights:
        from edgellm.models.gguf_header import read_header

        blocks = output = total = embeddings = 0
        tied = True
        for t in read_header(Path(path)).tensors:
            n = t.n_bytes
            total += n
            if t.name.startswith("blk."):
                blocks += n
            elif t.name.startswith("output"):
                output += n
                tied = tied and t.name != "output.weight"
            elif t.name == "token_embd.weight":
                embeddings = n
        return cls(total, blocks // max(layers, 1), output, output + embeddings if tied else output)

    @classmethod
    def from_params(cls, shape: Shape, qtype: str) -> Weights:
        bits = BITS_PER_WEIGHT.get(qtype)
        if bits is None:
            raise EdgeLLMError(f"no size estimate for quantization type {qtype} (known: {', '.join(BITS_PER_WEIGHT)})")
        total = int(shape.params * bits / 8)
        embeddings = shape.vocab * shape.embedding * bits / 8
        per_layer = int(max(total - 2 * embeddings, 0) / shape.layers)
        return cls(total, per_layer, int(embeddings))


@dataclass(frozen=True)
class Estimate:
    """Bytes a model needs, split between RAM and VRAM."""

    weights: int
    kv_cache: int
    compute: int
    ctx: int
    gpu_layers: int = 0
    vram: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def ram(self) -> int:
        return self.total - self.vram + (self.compute if self.vram else 0)

    def breakdown(self) -> str:
        return (
            f"weights {human_bytes(self.weights)} + KV cache {human_bytes(self.kv_cache)} "
            f"+ compute {human_bytes(self.compute)}"
        )


def padded_context(ctx: int) -> int:
    """llama.cpp rounds the KV cache up to a multiple of 256 cells."""
    return max(256, math.ceil(ctx / 256) * 256)


def kv_cache_bytes(geom: Geometry, ctx: int, *, kv_bytes: int = 2, layers: int | None = None) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x context x bytes per element."""
    n_layers = geom.layers if layers is None else layers
    per_token = geom.kv_heads * (geom.head_dim_k + geom.head_dim_v)
    return n_layers * per_token * padded_context(ctx) * kv_bytes


def compute_bytes(
    geom: Geometry, ctx: int, *, n_batch: int = UBATCH, flash_attn: bool | None = None, logits: bool = True
) -> int:
    """The largest set of f32 activations alive at once while evaluating one micro-batch.
    ``flash_attn=None`` is llama.cpp's "auto", which turns it on for the CPU backend; ``logits``
    False for a device that does not hold the output head (an RPC worker's share of the blocks)."""
    n_kv = padded_context(ctx)
    tokens = min(n_batch, n_kv)
    kv_dim = geom.kv_heads * geom.head_dim_v
    residual = 5 * geom.embedding + 2 * kv_dim  # stream, norm, Q, attention out, K/V of the batch
    vocab_rows = geom.vocab + 6 * geom.embedding
    ffn = 3 * geom.ffn + 2 * geom.embedding
    scores = (
        n_kv // 2 + 4 * geom.embedding if flash_attn is not False else geom.heads * n_kv + n_kv
    )  # FA: f16 mask and Q only
    attention = scores + residual
    return max(vocab_rows if logits else 0, ffn, attention) * tokens * F32


def estimate(
    geom: Geometry,
    weights: Weights,
    ctx: int,
    *,
    gpu_layers: int = 0,
    kv_bytes: int = 2,
    flash_attn: bool | None = None,
    n_batch: int = UBATCH,
) -> Estimate:
    """Memory for ``ctx`` tokens with ``gpu_layers`` of the layers on the GPU (-1: all)."""
    layers_on_gpu = geom.layers if gpu_layers < 0 else min(gpu_layers, geom.layers)
    compute = compute_bytes(geom, ctx, n_batch=n_batch, flash_attn=flash_attn)
    kv = kv_cache_bytes(geom, ctx, kv_bytes=kv_bytes)
    vram = 0
    if layers_on_gpu > 0:
        head = weights.output if gpu_layers < 0 or gpu_layers > geom.layers else 0
        vram = (
            weights.per_layer * layers_on_gpu
            + head
            + kv_cache_bytes(geom, ctx, kv_bytes=kv_bytes, layers=layers_on_gpu)
            + compute
        )
    return Estimate(weights.total, kv, compute, ctx, layers_on_gpu, vram)


def default_context(trained: int) -> int:
    """The context Engine opens when none is asked for (it calls this)."""
    return min(4096, trained)


# -- the verdict --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    fits: bool
    ram_needed: int
    ram_available: int
    vram_needed: int = 0
    vram_free: int = 0

    def __bool__(self) -> bool:
        return self.fits


def vram_headroom(machine: Machine) -> int:
    return max(MIN_VRAM_HEADROOM, int(machine.vram_total * VRAM_HEADROOM_FRACTION))


def verdict(est: Estimate, machine: Machine) -> Verdict:
    """Whether ``est`` fits ``machine`` with headroom left for everything else."""
    if not machine.gpu_offload:  # a CPU build ignores --gpu-layers: everything lives in RAM
        est = replace(est, gpu_layers=0, vram=0)
    ram_ok = est.ram + RAM_HEADROOM <= machine.ram_available
    vram_ok = not est.vram or est.vram + vram_headroom(machine) <= machine.vram_free
    return Verdict(ram_ok and vram_ok, est.ram, machine.ram_available, est.vram, machine.vram_free)


def _shortfall(what: str, est: Estimate, v: Verdict) -> str:
    if v.vram_needed and v.vram_needed > v.vram_free:
        return (
            f"{what} at {est.ctx} tokens needs {human_bytes(v.vram_needed)} of VRAM for {est.gpu_layers} "
            f"GPU layers but {human_bytes(v.vram_free)} is free"
        )
    return (
        f"{what} at {est.ctx} tokens needs {human_bytes(v.ram_needed)} of RAM ({est.breakdown()}) "
        f"plus {human_bytes(RAM_HEADROOM)} headroom, but {human_bytes(v.ram_available)} is available"
    )


def smaller_context(fits_at, ctx: int) -> int | None:  # noqa: ANN001 - Callable[[int], bool]
    """The largest power-of-two context below ``ctx`` (>= 512) that fits, if any."""
    candidate = 1 << (max(ctx - 1, 1).bit_length() - 1)
    while candidate >= 512:
        if fits_at(candidate):
            return candidate
        candidate //= 2
    return None


# -- the three questions the CLI asks ---------------------------------------------------------
def for_entry(entry: ModelEntry, qtype: str, ctx: int | None = None, **kw: object) -> Estimate:
    """A registry model not downloaded yet."""
    geom = Geometry.from_shape(entry.shape, entry.context)
    return estimate(geom, Weights.from_params(entry.shape, qtype), ctx or default_context(entry.context), **kw)


@functools.lru_cache(maxsize=16)
def _sized(path: str, size: int, mtime_ns: int) -> tuple[Geometry, Weights]:
    """A GGUF file's geometry and weight bytes, once per file version (a chat asks per message)."""
    from edgellm.models import gguf_file

    info = gguf_file.inspect(path)
    geom = Geometry.from_gguf(info)
    return geom, Weights.from_gguf(info.path, geom.layers)


def for_file(path: str | os.PathLike[str], ctx: int | None = None, **kw: object) -> tuple[Geometry, Weights, Estimate]:
    """A GGUF file, weights counted exactly from its tensors."""
    from edgellm.models import gguf_file

    try:
        st = os.stat(path)
    except OSError:
        gguf_file.inspect(path)  # the same one-line error a load would give
        raise
    geom, weights = _sized(os.fspath(path), st.st_size, st.st_mtime_ns)
    return geom, weights, estimate(geom, weights, ctx or default_context(geom.context), **kw)


def refuse_unless_fits_shape(
    label: str, shape: Shape, context: int, qtype: str, ctx: int | None, machine: Machine | None = None,
    *, smaller_type: str = "{type}",
) -> Estimate:  # fmt: skip
    """Before making a ``qtype`` file of a model of this shape: the estimate, or an error with the
    numbers and what to change. ``smaller_type`` spells the advice, e.g. "`edgellm pull NAME:{type}`"."""
    machine = machine or probe()
    geom = Geometry.from_shape(shape, context)

    def at(t: str, c: int) -> Estimate:
        return estimate(geom, Weights.from_params(shape, t), c)

    est = at(qtype, ctx or default_context(context))
    v = verdict(est, machine)
    if v:
        return est
    advice = []
    smaller = [t for t in PLAN_TYPES if BITS_PER_WEIGHT[t] < BITS_PER_WEIGHT.get(qtype, 99)]
    fitting = [t for t in smaller if verdict(at(t, est.ctx), machine)]
    if fitting:
        advice.append(f"a smaller type: {smaller_type.format(type=fitting[-1])}")
    n = smaller_context(lambda c: bool(verdict(at(qtype, c), machine)), est.ctx)
    if n:
        advice.append(f"a smaller context: --ctx {n}")
    if machine.gpu_offload and machine.gpus:
        advice.append("GPU offload: --gpu-layers auto")
    raise EdgeLLMError(f"{_shortfall(f'{label}:{qtype}', est, v)}. Try {'; '.join(advice) or 'a smaller model'}.")


def refuse_unless_fits_entry(
    entry: ModelEntry, qtype: str, ctx: int | None, machine: Machine | None = None
) -> Estimate:
    """Before a pull: will NAME:TYPE fit this machine? (see refuse_unless_fits_shape)"""
    return refuse_unless_fits_shape(
        entry.name,
        entry.shape,
        entry.context,
        qtype,
        ctx,
        machine,
        smaller_type=f"`edgellm pull {entry.name}:{{type}}`",
    )


def shape_from_hf_config(config: dict[str, object]) -> tuple[Shape, int]:
    """(Shape, trained context) of a Hugging Face checkpoint from its config.json, before converting it:
    Llama / Alpaca / Chinese-LLaMA-2, Qwen (v1: `seq_length`, a doubled `intermediate_size`) and Qwen2."""

    def num(*keys: str, default: int = 0) -> int:
        for key in keys:
            value = config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default

    embedding = num("hidden_size", "n_embd")
    heads = num("num_attention_heads", "n_head")
    layers = num("num_hidden_layers", "n_layer")
    vocab = num("vocab_size", "padded_vocab_size")
    if not (embedding and heads and layers and vocab):
        raise EdgeLLMError("config.json lacks hidden_size / num_attention_heads / num_hidden_layers / vocab_size")
    kv_heads = num("num_key_value_heads", default=heads)
    qwen_v1 = config.get("model_type") == "qwen"
    ffn = num("intermediate_size", "ffn_hidden_size", default=4 * embedding) // (2 if qwen_v1 else 1)
    context = num("max_position_embeddings", "seq_length", default=4096)
    head_dim = embedding // heads
    tied = bool(config.get("tie_word_embeddings", False))
    per_layer = 2 * embedding * embedding + 2 * embedding * kv_heads * head_dim + 3 * embedding * ffn + 2 * embedding
    params = vocab * embedding * (1 if tied else 2) + layers * per_layer + embedding
    return Shape(params, layers, embedding, heads, kv_heads, ffn, vocab), context


def check_load(
    path: str | os.PathLike[str],
    ctx: int | None,
    gpu_layers: int = 0,
    *,
    flash_attn: bool | None = None,
    kv_bytes: int = 2,
    machine: Machine | None = None,
) -> Estimate:
    """Before loading a GGUF: the estimate, or an error with the numbers and what to change."""
    machine = machine or probe()
    geom, weights, est = for_file(path, ctx, gpu_layers=gpu_layers, flash_attn=flash_attn, kv_bytes=kv_bytes)
    v = verdict(est, machine)
    if v:
        return est

    def fits_at(c: int) -> bool:
        return bool(verdict(estimate(geom, weights, c, gpu_layers=gpu_layers, flash_attn=flash_attn), machine))

    advice = []
    n = smaller_context(fits_at, est.ctx)
    if n:
        advice.append(f"--ctx {n}")
    if machine.gpu_offload and machine.gpus and not gpu_layers:
        advice.append("--gpu-layers auto")
    advice.append("a smaller quantization (`edgellm plan` lists them)")
    raise EdgeLLMError(f"{_shortfall(Path(path).name, est, v)}. Try {', or '.join(advice)}.")


def fit_gpu_layers(
    geom: Geometry, weights: Weights, ctx: int, machine: Machine, *, flash_attn: bool | None = None
) -> int:
    """As many layers as free VRAM holds with headroom: 0 without a GPU build, -1 for all."""
    if not machine.gpu_offload or not machine.gpus:
        return 0
    budget = machine.vram_free - vram_headroom(machine)
    best = 0
    for n in range(1, geom.layers + 2):  # layers + 1 also offloads the output head
        if estimate(geom, weights, ctx, gpu_layers=n, flash_attn=flash_attn).vram > budget:
            break
        best = n
    return -1 if best > geom.layers else best


@dataclass(frozen=True)
class GpuFit:
    """What `--gpu-layers auto` chose, and the numbers it chose from (shown by --verbose)."""

    layers: int  # -1: all, output layer included
    block_count: int
    vram_needed: int  # the planner's estimate for ``layers``
    vram_free: int
    headroom: int

    def describe(self) -> str:
        if self.vram_free == 0 and self.headroom == 0:
            return "--gpu-layers auto: 0 layers on the GPU (this llama.cpp build has no GPU offload)"
        on_gpu = self.block_count if self.layers < 0 else self.layers
        return (
            f"--gpu-layers auto: {on_gpu} of {self.block_count} layers on the GPU "
            f"(needs {human_bytes(self.vram_needed)} of {human_bytes(self.vram_free)} free VRAM, "
            f"keeping {human_bytes(self.headroom)} free)"
        )


def plan_gpu_layers(
    path: str | os.PathLike[str],
    ctx: int | None = None,
    *,
    flash_attn: bool | None = None,
    machine: Machine | None = None,
) -> GpuFit:
    """`--gpu-layers auto` for a GGUF file (what run, chat and bench call)."""
    machine = machine or probe()
    geom, weights, est = for_file(path, ctx)
    if not machine.gpu_offload or not machine.gpus:
        return GpuFit(0, geom.layers, 0, 0, 0)
    layers = fit_gpu_layers(geom, weights, est.ctx, machine, flash_attn=flash_attn)
    on_gpu = geom.layers + 1 if layers < 0 else layers
    needed = estimate(geom, weights, est.ctx, gpu_layers=on_gpu, flash_attn=flash_attn).vram
    return GpuFit(layers, geom.layers, needed, machine.vram_free, vram_headroom(machine))



# -- splitting layers over this machine and RPC workers -----------------------------------------
@dataclass(frozen=True)
class Holder:
    """One place a model's layers live: this machine, or one device of an RPC worker."""

    name: str  # "here" or the worker's HOST:PORT (with "#N" for a worker's second device)
    free: int  # bytes it offers, headroom taken off
    layers: tuple[int, ...] = ()
    output: bool = False  # holds the output head (the logits)
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0

    @property
    def needed(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def fits(self) -> bool:
        return self.needed <= self.free

    def describe_layers(self) -> str:
        """'layers 0-9', 'layers 10-29 + output', 'embeddings only'."""
        if not self.layers:
            text = "no layers"
        elif len(self.layers) == 1:
            text = f"layer {self.layers[0]}"
        else:
            text = f"layers {self.layers[0]}-{self.layers[-1]}"
        return text + (" + output" if self.output else "")


@dataclass(frozen=True)
class Split:
    """Where every layer goes with ``n_gpu_layers`` of them offloaded to the workers."""

    holders: tuple[Holder, ...]  # this machine first, then the workers' devices in --rpc order
    n_gpu_layers: int  # what llama.cpp takes: layers on the workers, -1 for all and the output head
    block_count: int
    ctx: int

    @property
    def fits(self) -> bool:
        return all(h.fits for h in self.holders)

    @property
    def remote_layers(self) -> int:
        return sum(len(h.layers) for h in self.holders[1:])


def worker_layers(value: int | None, geom: Geometry, local_free: int, worker_free: list[int]) -> int:
    """``--gpu-layers`` with workers: None ("auto") gives the workers their share of the layers
    (the output head counted as one, as llama.cpp counts it) in proportion to free memory."""
    if value is not None:
        return value
    remote = sum(max(f, 0) for f in worker_free)
    offered = max(local_free, 0) + remote
    share = round((geom.layers + 1) * remote / offered) if offered else 0
    return -1 if share > geom.layers else share


def device_of_layers(n_gpu_layers: int, block_count: int, reported: list[int]) -> list[int]:
    """For layers 0..block_count (the last index is the output head): -1 for this machine, else
    the index of the worker device holding it. llama.cpp's own rule (llama_model::load_tensors):
    the output head counts as one more layer, the last ``n_gpu_layers`` go to the devices, cut
    where the running sum of the devices' free memory crosses each layer's fraction."""
    n_gpu = block_count + 1 if n_gpu_layers < 0 else n_gpu_layers
    start = max(block_count + 1 - n_gpu, 0)
    active = min(n_gpu, block_count + 1) if reported else 0
    total = sum(reported) or 1
    bounds, running = [], 0
    for free in reported:
        running += free
        bounds.append(running / total)
    placement = []
    for il in range(block_count + 1):
        if il < start or il - start >= active:
            placement.append(-1)
        else:
            fraction = (il - start) / active
            placement.append(min(sum(1 for b in bounds if b <= fraction), len(reported) - 1))
    return placement


def split(
    geom: Geometry,
    weights: Weights,
    ctx: int,
    machine: Machine,
    workers: list[tuple[str, int]],
    n_gpu_layers: int | None = None,
    *,
    flash_attn: bool | None = None,
    kv_bytes: int = 2,
) -> Split:
    """Layers over this machine and the workers' devices ((name, free bytes) each), with the
    memory each holds: weights, the KV cache of its layers and a compute buffer. ``n_gpu_layers``
    None is `auto` (see :func:`worker_layers`)."""
    local_free = machine.ram_available - RAM_HEADROOM
    worker_free = [free - RAM_HEADROOM for _, free in workers]
    n_gpu = worker_layers(n_gpu_layers, geom, local_free, worker_free)
    placement = device_of_layers(n_gpu, geom.layers, [free for _, free in workers])
    compute = {out: compute_bytes(geom, ctx, flash_attn=flash_attn, logits=out) for out in (False, True)}
    kv_layer = kv_cache_bytes(geom, ctx, kv_bytes=kv_bytes, layers=1)
    holders = []
    names = ["here"] + [name for name, _ in workers]
    for index, (name, free) in enumerate(zip(names, [local_free, *worker_free], strict=True)):
        device = index - 1
        layers = tuple(il for il in range(geom.layers) if placement[il] == device)
        output = placement[geom.layers] == device
        weight = weights.per_layer * len(layers) + ((weights.head or weights.output) if output else 0)
        if device < 0:  # the token embeddings and everything not in a block stay here
            weight += weights.total - weights.per_layer * geom.layers - weights.output
        used = device < 0 or bool(layers) or output
        holders.append(Holder(name, free, layers, output, weight, kv_layer * len(layers),
                              compute[output or device < 0] if used else 0))  # fmt: skip
    return Split(tuple(holders), n_gpu, geom.layers, ctx)


def worker_holders(workers) -> list[tuple[str, int]]:  # noqa: ANN001 - tuple[rpc.Worker, ...]
    """(name, free bytes) of each device of each probed worker, in llama.cpp's device order."""
    return [
        (str(w.endpoint) + (f"#{d.index}" if len(w.devices) > 1 else ""), d.free) for w in workers for d in w.devices
    ]
