"""Meta's original checkpoint layout written from a tiny HF Llama folder: the inverse of
transformers' convert_llama_weights_to_hf.py, so both folders hold the same weights.

Q/K rows go back from HF's rotary layout to Meta's, every matrix is cut into model-parallel shards
the way fairscale cuts it (column-parallel on rows, row-parallel and the embedding on columns,
norms replicated), and each shard is saved with torch.save as ``consolidated.NN.pth`` next to a
Llama-2 style ``params.json`` (vocab_size -1, feed-forward width implied by multiple_of)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Meta name (in layer N) → (HF name, split axis; None = replicated), written out independently of
# quantize/sources/meta.py so that a wrong axis there shows up as a difference
LAYER = {
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
TOP = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1),
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}


def hf_permute(w, n_heads: int):  # noqa: ANN001, ANN201 - torch tensors
    """transformers' convert_llama_weights_to_hf.py permute: Meta → HF rotary layout."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_layout(w, n_heads: int):  # noqa: ANN001, ANN201
    """The inverse of `hf_permute`: HF → Meta rotary layout."""
    rows, cols = w.shape
    meta = w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)
    assert (hf_permute(meta, n_heads) == w).all()
    return meta


def write_meta_checkpoint(hf_folder: Path, folder: Path, *, shards: int = 2, tokenizer_beside: bool = True) -> Path:
    """``folder`` with ``consolidated.NN.pth`` and ``params.json`` holding ``hf_folder``'s weights;
    tokenizer.model goes beside ``folder`` (Meta's download layout) unless ``tokenizer_beside`` is False."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((hf_folder / "config.json").read_text())
    state = load_file(hf_folder / "model.safetensors")
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    names = dict(TOP)
    for i in range(config["num_hidden_layers"]):
        names.update({f"layers.{i}.{m}": (f"model.layers.{i}.{h}", axis) for m, (h, axis) in LAYER.items()})
    parts: list[dict] = [{} for _ in range(shards)]
    for meta, (hf, axis) in names.items():
        w = state[hf]
        if meta.endswith("wq.weight"):
            w = meta_layout(w, n_heads)
        elif meta.endswith("wk.weight"):
            w = meta_layout(w, n_kv)
        pieces = [w] * shards if axis is None else list(torch.chunk(w, shards, dim=axis))
        for part, piece in zip(parts, pieces, strict=True):
            part[meta] = piece.clone()  # its own storage, as each rank saved only its slice
    head_dim = config["hidden_size"] // n_heads
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        torch.save({**part, "rope.freqs": freqs.to(torch.bfloat16)}, folder / f"consolidated.{i:02d}.pth")
    params = {
        "dim": config["hidden_size"],
        "multiple_of": 32,
        "n_heads": n_heads,
        "n_layers": config["num_hidden_layers"],
        "norm_eps": config["rms_norm_eps"],
        "vocab_size": -1,
    }
    if n_kv != n_heads:
        params["n_kv_heads"] = n_kv
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copy(hf_folder / "tokenizer.model", (folder.parent if tokenizer_beside else folder) / "tokenizer.model")
    return folder
