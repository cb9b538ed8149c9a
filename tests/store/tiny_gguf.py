"""Tiny random-weight GGUF models of any shape, loadable by llama.cpp (planner and store tests)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_tiny_llama(
    path: Path,
    *,
    layers: int = 2,
    embedding: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    vocab: int = 512,
    context: int = 4096,
    dtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F16,
    seed: int = 0,
) -> Path:
    """A llama-architecture GGUF with an SPM-style vocabulary (byte tokens + fillers)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(embedding)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(embedding // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == gguf.GGMLQuantizationType.F16 else 7)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(vocab - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def tensor(name: str, *shape: int) -> None:
        data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if name.endswith("norm.weight"):
            w.add_tensor(name, np.ones(shape, dtype=np.float32))
        elif dtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, dtype), raw_dtype=dtype)

    head_dim = embedding // heads
    tensor("token_embd.weight", vocab, embedding)
    tensor("output_norm.weight", embedding)
    tensor("output.weight", vocab, embedding)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", embedding)
        tensor(f"blk.{i}.attn_q.weight", embedding, embedding)
        tensor(f"blk.{i}.attn_k.weight", kv_heads * head_dim, embedding)
        tensor(f"blk.{i}.attn_v.weight", kv_heads * head_dim, embedding)
        tensor(f"blk.{i}.attn_output.weight", embedding, embedding)
        tensor(f"blk.{i}.ffn_norm.weight", embedding)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, embedding)
        tensor(f"blk.{i}.ffn_up.weight", ffn, embedding)
        tensor(f"blk.{i}.ffn_down.weight", embedding, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
