"""The Llama family: Llama-2 (7B/13B multi-head, 70B grouped-query), Alpaca, Chinese-LLaMA-2 and
Chinese-Alpaca-2 (55,296-piece vocabulary, 16K linear and 64K YaRN long-context variants).

All are ``LlamaForCausalLM``; what differs is the variant's default chat template and licence,
picked from the vocabulary size and the model's name (folder or ``_name_or_path``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gguf

from edgellm.models import chat_templates
from quantize.errors import UnsupportedModel
from quantize.families import Family, HParams
from quantize.families.rope import rope_scaling, rope_theta
from quantize.sources import optional, require
from quantize.tensors import RowTransform, unpermute_rope

if TYPE_CHECKING:
    from quantize.sources import Checkpoint
    from quantize.vocab import Vocab

T = gguf.MODEL_TENSOR
CHINESE_ALPACA_SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"
CHINESE_LLAMA2_VOCAB = 55296


def _hint(ckpt: Checkpoint) -> str:
    return f"{ckpt.folder.name} {ckpt.config.get('_name_or_path', '')}".lower()


@dataclass(frozen=True)
class Variant:
    """A member of the family: how to recognise it and what it defaults to."""

    name: str
    matches: Callable[[Checkpoint, int], bool]
    chat_template: str
    license: str | None


VARIANTS = (
    Variant(
        "Chinese-Alpaca-2",
        lambda c, n: n == CHINESE_LLAMA2_VOCAB and "alpaca" in _hint(c),
        chat_templates.llama2(default_system=CHINESE_ALPACA_SYSTEM),
        "apache-2.0",
    ),
    Variant("Chinese-LLaMA-2", lambda c, n: n == CHINESE_LLAMA2_VOCAB, chat_templates.llama2(), "apache-2.0"),
    Variant("Alpaca", lambda c, n: "alpaca" in _hint(c) or n == 32001, chat_templates.alpaca(), "cc-by-nc-4.0"),
    Variant("Llama-2", lambda c, n: True, chat_templates.llama2(), "llama2"),
)


def variant(ckpt: Checkpoint, n_vocab: int) -> Variant:
    return next(v for v in VARIANTS if v.matches(ckpt, n_vocab))


class LlamaFamily(Family):
    name = "llama"
    description = "Llama-2, Alpaca, Chinese-LLaMA-2, Chinese-Alpaca-2"
    model_types = ("llama",)
    architectures = ("LlamaForCausalLM", "LLaMAForCausalLM")
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    vocab_kinds = ("spm", "llama-hf")

    def hparams(self, ckpt: Checkpoint) -> HParams:
        cfg, path = ckpt.config, ckpt.config_path
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModel(f"{path}: hidden_act '{act}' is not llama's silu")
        n_embd = require(cfg, "hidden_size", path)
        n_head = require(cfg, "num_attention_heads", path)
        n_head_kv = optional(cfg, "num_key_value_heads", path, n_head)
        if n_head % n_head_kv:
            raise UnsupportedModel(
                f"{path}: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
            )
        if cfg.get("head_dim") is None and n_embd % n_head:
            raise UnsupportedModel(f"{path}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
        head_dim = optional(cfg, "head_dim", path, n_embd // n_head)
        if head_dim % 2:
            raise UnsupportedModel(f"{path}: head dimension {head_dim} must be an even integer")
        # 2023 Alpaca folders call the context max_sequence_length; transformers' default is 2048
        ctx_key = next((k for k in ("max_position_embeddings", "max_sequence_length") if cfg.get(k)), None)
        embed = ckpt.tensors.get("model.embed_tokens.weight")
        # without vocab_size, the embedding rows say it (transformers would assume 32000)
        n_vocab = optional(cfg, "vocab_size", path, embed.shape[0] if embed is not None else 32000)
        return HParams(
            n_vocab=n_vocab,
            n_ctx=require(cfg, ctx_key, path) if ctx_key else 2048,
            n_embd=n_embd,
            n_ff=require(cfg, "intermediate_size", path),
            n_layer=require(cfg, "num_hidden_layers", path),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rope_theta=rope_theta(cfg, path),
            rms_eps=float(optional(cfg, "rms_norm_eps", path, 1e-6, float)),
            rope_scaling=rope_scaling(cfg, path),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def transform_for(self, kind: gguf.MODEL_TENSOR, hp: HParams, ckpt: Checkpoint) -> RowTransform | None:
        """HF's Q/K rows → Meta's rotary layout (skipped for checkpoints already in it)."""
        if not ckpt.hf_rope_layout:
            return None
        return unpermute_rope(hp.head_dim) if kind in (T.ATTN_Q, T.ATTN_K) else None

    def chat_template(self, ckpt: Checkpoint, vocab: Vocab) -> str | None:
        return variant(ckpt, len(vocab.tokens)).chat_template

    def general(self, ckpt: Checkpoint) -> dict[str, str]:
        v = variant(ckpt, int(ckpt.config.get("vocab_size", 32000)))
        return {"license": v.license} if v.license else {}


FAMILY = LlamaFamily()
