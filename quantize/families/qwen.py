"""Qwen (v1) (`QWenLMHeadModel`, 1.8B-72B, base and chat) → llama.cpp's `qwen`.

GPT-2-style names (`transformer.h.N.attn.c_attn`) that gguf's tensor map already knows, including
Qwen's swapped MLP names: `mlp.w2` is the gate and `mlp.w1` the up projection, both half as wide as
config.json's `intermediate_size`, which is what llama.cpp's `qwen.feed_forward_length` wants (it
halves it itself). The attention input projection stays fused (`attn_qkv`, weight and bias), as
llama.cpp's qwen graph reads it. Qwen-1 ships no chat template: ChatML with Qwen's default system
prompt, ending turns on <|im_end|>."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gguf

from quantize.errors import UnsupportedModel
from quantize.families import HParams
from quantize.families.qwen2 import Qwen2Family
from quantize.sources import optional, require

if TYPE_CHECKING:
    from quantize.sources import Checkpoint

T = gguf.MODEL_TENSOR


class QwenFamily(Qwen2Family):
    name = "qwen"
    description = "Qwen (v1)"
    model_types = ("qwen",)
    architectures = ("QWenLMHeadModel",)
    gguf_arch = gguf.MODEL_ARCH.QWEN
    vocab_kinds = ("tiktoken",)
    required = (
        T.TOKEN_EMBD, T.OUTPUT_NORM, T.OUTPUT, T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT,
        T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN,
    )  # fmt: skip
    optional = ()
    biases = (T.ATTN_QKV,)
    default_system = "You are a helpful assistant."  # Qwen-1's make_context default

    def hparams(self, ckpt: Checkpoint) -> HParams:
        cfg, path = ckpt.config, ckpt.config_path
        n_embd = require(cfg, "hidden_size", path)
        n_head = require(cfg, "num_attention_heads", path)
        head_dim = optional(cfg, "kv_channels", path, n_embd // n_head)
        n_ff = require(cfg, "intermediate_size", path)
        if head_dim * n_head != n_embd:
            raise UnsupportedModel(
                f"{path}: kv_channels {head_dim} x num_attention_heads {n_head} != hidden_size {n_embd}; "
                "llama.cpp's qwen needs them equal"
            )
        if n_ff % 2:
            raise UnsupportedModel(f"{path}: intermediate_size {n_ff} is odd; Qwen-1 counts w1 and w2 together")
        if cfg.get("rotary_pct", 1.0) != 1.0:
            raise UnsupportedModel(f"{path}: rotary_pct {cfg['rotary_pct']} (partial rotary) is not supported")
        # seq_length is the trained context (QWenConfig's default: 2048); max_position_embeddings
        # counts on dynamic NTK and logn attention scaling, which llama.cpp does not implement
        n_ctx = optional(cfg, "seq_length", path, 2048)
        return HParams(
            n_vocab=require(cfg, "vocab_size", path),
            n_ctx=n_ctx,
            n_embd=n_embd,
            n_ff=n_ff,
            n_layer=require(cfg, "num_hidden_layers", path),
            n_head=n_head,
            n_head_kv=n_head,
            head_dim=head_dim,
            rope_theta=float(optional(cfg, "rotary_emb_base", path, 10000.0, float)),
            rms_eps=float(optional(cfg, "layer_norm_epsilon", path, 1e-6, float)),
        )

    def expected_shapes(self, hp: HParams) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        half = hp.n_ff // 2
        return {
            **super().expected_shapes(hp),
            T.ATTN_QKV: (3 * hp.n_embd, hp.n_embd),
            T.FFN_GATE: (half, hp.n_embd),
            T.FFN_UP: (half, hp.n_embd),
            T.FFN_DOWN: (hp.n_embd, half),
        }


FAMILY = QwenFamily()
