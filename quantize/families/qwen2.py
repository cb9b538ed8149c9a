"""Qwen1.5 (`Qwen2ForCausalLM`, 0.5B-72B, base and chat) → llama.cpp's `qwen2`.

Llama's layout plus q/k/v biases, NEOX rope (no Q/K permutation), embeddings tied to the output
when there is no `lm_head`, and a byte-level BPE tokenizer.json. Qwen's configs have more embedding
rows than tokens (151,936 vs 151,646): the gap is filled with unused `[PAD{id}]` tokens. Qwen-1
(`quantize.families.qwen`) shares the vocabulary handling and differs in names and layout."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import gguf

from edgellm.models import chat_templates
from quantize.errors import CheckpointError, UnsupportedModel, VocabMismatch
from quantize.families import Family, HParams
from quantize.families.rope import rope_scaling, rope_theta
from quantize.sources import optional, require
from quantize.vocab.tiktoken_bpe import ENDOFTEXT, IM_END

if TYPE_CHECKING:
    from quantize.sources import Checkpoint
    from quantize.tensors import TensorPlan
    from quantize.vocab import Vocab

T = gguf.MODEL_TENSOR


class Qwen2Family(Family):
    name = "qwen2"
    description = "Qwen1.5"
    model_types = ("qwen2",)
    architectures = ("Qwen2ForCausalLM",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    vocab_kinds = ("byte-level-hf",)
    optional = (T.OUTPUT,)  # absent when tie_word_embeddings: llama.cpp then reuses token_embd
    biases: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = (T.ATTN_Q, T.ATTN_K, T.ATTN_V)  # every layer has them
    default_system: ClassVar[str] = "You are a helpful assistant"  # Qwen1.5's own template's default

    def hparams(self, ckpt: Checkpoint) -> HParams:
        cfg, path = ckpt.config, ckpt.config_path
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModel(f"{path}: hidden_act '{act}' is not Qwen2's silu")
        n_embd = require(cfg, "hidden_size", path)
        n_head = require(cfg, "num_attention_heads", path)
        n_head_kv = optional(cfg, "num_key_value_heads", path, n_head)
        if n_embd % n_head or n_head % n_head_kv:
            raise UnsupportedModel(
                f"{path}: hidden_size {n_embd}, num_attention_heads {n_head} and num_key_value_heads {n_head_kv} "
                "do not divide evenly"
            )
        n_ctx = require(cfg, "max_position_embeddings", path)
        window = cfg.get("sliding_window")
        if cfg.get("use_sliding_window") and isinstance(window, int) and 0 < window < n_ctx:
            # llama.cpp's qwen2 attends to the whole context; within the window that is the same thing
            n_ctx = window
        return HParams(
            n_vocab=require(cfg, "vocab_size", path),
            n_ctx=n_ctx,
            n_embd=n_embd,
            n_ff=require(cfg, "intermediate_size", path),
            n_layer=require(cfg, "num_hidden_layers", path),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=n_embd // n_head,
            rope_theta=rope_theta(cfg, path),
            rms_eps=float(require(cfg, "rms_norm_eps", path, float)),
            rope_scaling=rope_scaling(cfg, path),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def plan_tensors(self, ckpt: Checkpoint, hp: HParams, outtype: gguf.GGMLQuantizationType) -> list[TensorPlan]:
        """The generic mapping, plus the checks it cannot know: biases present in every layer
        (transformers would initialise missing ones at random) and an output matrix unless tied."""
        plans = super().plan_tensors(ckpt, hp, outtype)
        have = {p.name for p in plans}
        wanted = [f"{gguf.TENSOR_NAMES[k].format(bid=i)}.bias" for i in range(hp.n_layer) for k in self.biases]
        if not hp.tie_embeddings:
            wanted.append(f"{gguf.TENSOR_NAMES[T.OUTPUT]}.weight")
        for name in wanted:
            if name not in have:
                raise CheckpointError(
                    f"{ckpt.weights_label}: no weights for '{name}' although {ckpt.config_path.name} needs them; "
                    "the checkpoint is incomplete (a shard missing?)"
                )
        return plans

    def fit_vocab(self, vocab: Vocab, hp: HParams, ckpt: Checkpoint) -> Vocab:
        """Pad to the embedding rows with unused tokens (never produced, never matched), and name
        Qwen's document and turn ends: llama.cpp's gpt2 default for unset ids (11, ",") would end
        generation at the first comma."""
        n = len(vocab.tokens)
        if n > hp.n_vocab:
            raise VocabMismatch(
                f"{ckpt.config_path}: vocab_size {hp.n_vocab} is smaller than the {n} tokens of {vocab.source}; "
                "the config and the tokenizer belong to different models"
            )
        pad = hp.n_vocab - n
        ids = {text: i for i, text in enumerate(vocab.tokens) if text in (ENDOFTEXT, IM_END)}
        special = dict(vocab.special)
        if ENDOFTEXT in ids:
            special.setdefault("bos", ids[ENDOFTEXT])
            special.setdefault("eos", ids[ENDOFTEXT])
        if IM_END in ids:
            special.setdefault("eot", ids[IM_END])
        return dataclasses.replace(
            vocab,
            tokens=vocab.tokens + [f"[PAD{i}]" for i in range(n, hp.n_vocab)],
            scores=vocab.scores + [0.0] * pad,
            types=vocab.types + [int(gguf.TokenType.UNUSED)] * pad,
            special=special,
        )

    def chat_template(self, ckpt: Checkpoint, vocab: Vocab) -> str | None:
        """ChatML, stopping on <|im_end|> (used when tokenizer_config.json has no template)."""
        return chat_templates.chatml(default_system=self.default_system)


FAMILY = Qwen2Family()
