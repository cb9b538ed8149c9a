"""Meta's original Llama checkpoints: ``consolidated.NN.pth`` model-parallel shards + ``params.json``.

Each shard holds a slice of every big matrix, cut the way Meta's fairscale layers cut them:
column-parallel layers (wq, wk, wv, w1, w3, output) along their output rows, row-parallel layers
(wo, w2) and the ParallelEmbedding along their columns; norms are replicated. A merged tensor here
is a view that reads the same rows from every shard on demand, so converting a 70B (eight 16 GB
shards) holds a few row blocks in memory, never a whole tensor. Shards are read by the restricted
unpickler of `torch_pickle`. Tensors come out under HF names (so the llama family and `--lora`
work unchanged) with ``hf_rope_layout=False``: Meta's Q/K rows are already in llama.cpp's layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantize.errors import CheckpointError, ConfigError, UnsupportedModel
from quantize.sources import Checkpoint, TensorRef, read_json, require
from quantize.sources.shards import label
from quantize.sources.torch_pickle import read_archive

PARAMS = "params.json"
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")

# Meta name (after "layers.N.") → HF name, and the axis fairscale split it along (None: replicated)
_LAYER_TENSORS: dict[str, tuple[str, int | None]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
_MODEL_TENSORS: dict[str, tuple[str, int | None]] = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1),  # ParallelEmbedding splits the width
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}
_IGNORED = ("rope.freqs",)  # Llama-1/2 store the RoPE frequencies; llama.cpp computes them


def hf_name(meta_name: str) -> tuple[str, int | None] | None:
    """(HF name, split axis) of a Meta tensor name, or None if it is not a Llama tensor."""
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", meta_name)
    if m:
        found = _LAYER_TENSORS.get(m.group(2))
        return (f"model.layers.{m.group(1)}.{found[0]}", found[1]) if found else None
    return _MODEL_TENSORS.get(meta_name)


@dataclass
class ShardedTensor:
    """One tensor assembled from its slices in every shard (``axis`` None: the copy in shard 0)."""

    name: str
    parts: list[TensorRef]
    axis: int | None

    def __post_init__(self) -> None:
        first = self.parts[0]
        self.dtype = first.dtype
        self.file = first.file
        if self.axis is None:
            self.parts = self.parts[:1]
        for part in self.parts:
            other_dims = [d for i, d in enumerate(part.shape) if i != self.axis]
            if part.dtype != first.dtype or other_dims != [d for i, d in enumerate(first.shape) if i != self.axis]:
                raise CheckpointError(
                    f"{part.file}: tensor '{part.name}' is {part.dtype} {list(part.shape)} but {first.dtype} "
                    f"{list(first.shape)} in {first.file.name}: the shards belong to different models"
                )
        shape = list(first.shape)
        if self.axis is not None:
            shape[self.axis] = sum(p.shape[self.axis] for p in self.parts)
        self.shape = tuple(shape)
        self._row_starts = np.cumsum([0] + [p.shape[0] for p in self.parts]) if self.axis == 0 else None

    @property
    def locator(self) -> tuple[str, int]:
        return self.parts[0].locator

    def _row_slices(self, start: int, stop: int):  # noqa: ANN202 - yields (part, start, stop)
        for part, begin in zip(self.parts, self._row_starts[:-1], strict=True):
            lo, hi = max(start, begin), min(stop, begin + part.shape[0])
            if lo < hi:
                yield part, int(lo - begin), int(hi - begin)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        if self.axis is None:
            return self.parts[0].read_rows(start, stop)
        if self.axis == 0:
            blocks = [part.read_rows(lo, hi) for part, lo, hi in self._row_slices(start, stop)]
        else:
            blocks = [part.read_rows(start, stop) for part in self.parts]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=self.axis)

    def release(self, start: int, stop: int) -> None:
        if self.axis == 0:
            for part, lo, hi in self._row_slices(start, stop):
                part.release(lo, hi)
        else:
            for part in self.parts:
                part.release(start, stop)


def shard_files(folder: Path) -> list[Path]:
    """consolidated.00.pth ... in order; a gap in the numbering is a missing download."""
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _SHARD.fullmatch(p.name)) and p.is_file()}
    missing = [i for i in range(max(found, default=-1) + 1) if i not in found]
    if missing:
        raise CheckpointError(
            f"{folder}: consolidated.{missing[0]:02d}.pth is missing ({len(found)} of {max(found) + 1} shards "
            "present); download every shard"
        )
    return [found[i] for i in sorted(found)]


def _merge_shards(files: list[Path]) -> dict[str, ShardedTensor]:
    shards = [read_archive(f) for f in files]
    tensors: dict[str, ShardedTensor] = {}
    for meta_name, ref in shards[0].items():
        if meta_name in _IGNORED:
            continue
        mapped = hf_name(meta_name)
        if mapped is None:
            raise UnsupportedModel(f"{ref.file}: tensor '{meta_name}' is not part of a Meta Llama checkpoint")
        parts = [ref]
        for path, shard in zip(files[1:], shards[1:], strict=True):
            if meta_name not in shard:
                raise CheckpointError(f"{path}: tensor '{meta_name}' is missing; re-download this shard")
            parts.append(shard[meta_name])
        tensors[mapped[0]] = ShardedTensor(mapped[0], parts, mapped[1])
    for path, shard in zip(files[1:], shards[1:], strict=True):
        extra = sorted(set(shard) - set(shards[0]))
        if extra:
            raise CheckpointError(f"{path}: tensor '{extra[0]}' is not in {files[0].name}: shards of different models")
    return tensors


def _context_length(params: dict[str, Any]) -> int:
    """params.json does not say; Meta's releases differ in ways that do: Code Llama trained 16K with
    rope_theta 1e6, Llama-2 4K (norm_eps 1e-5), Llama-1 2K (norm_eps 1e-6)."""
    if isinstance(params.get("max_seq_len"), int):
        return params["max_seq_len"]
    if params.get("rope_theta") == 1_000_000:
        return 16384
    return 4096 if params.get("norm_eps") == 1e-5 else 2048


def hf_config(params: dict[str, Any], path: Path, tensors: dict[str, ShardedTensor], name: str) -> dict[str, Any]:
    """params.json as the config.json the llama family reads; widths the file leaves out (vocab_size
    -1, the feed-forward width Meta derives from multiple_of) come from the tensors."""
    if params.get("use_scaled_rope") or params.get("vocab_size") == 128256:
        raise UnsupportedModel(f"{path}: a Llama 3 checkpoint; only Llama and Llama-2 Meta checkpoints are supported")
    n_heads = require(params, "n_heads", path)
    for key in ("model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight"):
        if key not in tensors:
            raise CheckpointError(f"{path.parent}: no weights for '{key}'; the checkpoint is incomplete")
    dim = require(params, "dim", path)
    vocab, width = tensors["model.embed_tokens.weight"].shape
    if width != dim:  # the embedding is split by columns over the shards: a missing last shard shows here
        have = len(tensors["model.embed_tokens.weight"].parts)
        raise CheckpointError(
            f"{path.parent}: its {have} consolidated.*.pth shards hold {width} of the {dim} embedding columns "
            "params.json declares: a shard is missing or from another model; download every shard"
        )
    if params.get("vocab_size", -1) not in (-1, vocab):
        raise CheckpointError(
            f"{path}: vocab_size {params['vocab_size']} but tok_embeddings has {vocab} rows: "
            "params.json and the shards belong to different models"
        )
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "_name_or_path": name,
        "hidden_size": dim,
        "num_hidden_layers": require(params, "n_layers", path),
        "num_attention_heads": n_heads,
        "num_key_value_heads": params.get("n_kv_heads") or n_heads,
        "intermediate_size": tensors["model.layers.0.mlp.gate_proj.weight"].shape[0],
        "vocab_size": vocab,
        "rms_norm_eps": params.get("norm_eps", 1e-5),  # checked by the llama family, naming params.json
        "rope_theta": params.get("rope_theta", 10000.0),
        "max_position_embeddings": _context_length(params),
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }


def tokenizer_folder(folder: Path) -> Path:
    """Meta's download script puts tokenizer.model beside the model folders, not inside them."""
    if not (folder / "tokenizer.model").is_file() and (folder.parent / "tokenizer.model").is_file():
        return folder.parent
    return folder


def open_checkpoint(folder: Path) -> Checkpoint | None:
    files = shard_files(folder)
    if not files:
        return None
    path = folder / PARAMS
    if not path.is_file():
        raise ConfigError(f"{folder}: has {files[0].name} but no {PARAMS}; download it with the shards")
    tensors = _merge_shards(files)
    config = hf_config(read_json(path), path, tensors, folder.name)
    return Checkpoint(
        folder,
        config,
        dict(tensors),
        label(files),
        path,
        hf_rope_layout=False,
        tokenizer_folder=tokenizer_folder(folder),
    )
