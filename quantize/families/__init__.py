"""The family table: which checkpoints we can convert, and how each maps onto a llama.cpp architecture.

A family is one small module in this package that defines ``FAMILY = SomeFamily()``, where
``SomeFamily`` subclasses :class:`Family` below. Modules are discovered automatically (no list to
edit); `find_family(config)` picks the family whose ``model_types`` or ``architectures`` match
config.json. What a family declares (class attributes) and may override (methods):

- ``name``, ``description``: for messages and the "supported:" list.
- ``model_types`` / ``architectures``: config.json ``model_type`` / ``architectures`` values it claims.
- ``gguf_arch``: the llama.cpp architecture written (``gguf.MODEL_ARCH.LLAMA``, ``.QWEN``, ...).
- ``vocab_kinds``: vocabulary readers to try in order (keys of ``quantize.vocab.READERS``:
  ``"spm"`` tokenizer.model, ``"llama-hf"`` tokenizer.json, ``"tiktoken"``, ...).
- ``hparams(ckpt) -> HParams``: read and validate config.json (raise ``ConfigError`` naming the key).
- ``write_hparams(writer, hp)``: the ``{arch}.*`` keys; the default writes the llama-style set
  (context, embedding, feed-forward, blocks, heads, kv heads, rope base/dims/scaling, rms eps).
- ``expected_shapes(hp)``: HF-order shape of each tensor kind (``gguf.MODEL_TENSOR``), checked
  against the checkpoint before anything is written ("shapes that contradict the config").
- ``transforms``: ``{MODEL_TENSOR: factory(hp) -> RowTransform}`` applied to rows as they stream
  (llama: un-permute Q/K rotary rows; qwen/qwen2 need none).
- ``required`` / ``optional``: tensor kinds every block (or the model) must / may have.
- ``ignored``: regexes of checkpoint tensor names dropped on purpose (e.g. ``rotary_emb.inv_freq``).
- ``fit_vocab(vocab, hp, ckpt)``: reconcile tokenizer size with the embedding rows (llama: must be
  equal, else a clear error naming both files; qwen: pad with ``[PAD{i}]`` tokens).
- ``chat_template(ckpt, vocab)``: the default used when tokenizer_config.json has none.
- ``general(ckpt)``: family-level ``general.*`` defaults (licence, basename) for `Metadata`.

Tensor names are mapped with gguf's table-driven ``TensorNameMap`` (`plan_tensors`), so a family
normally only lists shapes and transforms; override `plan_tensors` for splits or merges.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, ClassVar

import gguf

from quantize.errors import UnsupportedModel, VocabMismatch
from quantize.tensors import RowTransform, TensorPlan, output_type

if TYPE_CHECKING:
    from quantize.sources import Checkpoint
    from quantize.vocab import Vocab

T = gguf.MODEL_TENSOR


@dataclass(frozen=True)
class RopeScaling:
    """HF ``rope_scaling`` as llama.cpp understands it (linear: 16K variants; yarn: 64K)."""

    type: str  # "linear" | "yarn"
    factor: float
    original_context: int | None = None
    finetuned: bool | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None


@dataclass(frozen=True)
class HParams:
    """The hyperparameters of a decoder-only transformer, named as llama.cpp names them."""

    n_vocab: int
    n_ctx: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)  # family-specific values


class Family:
    """One row of the family table; subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    description: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    architectures: ClassVar[tuple[str, ...]]
    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    vocab_kinds: ClassVar[tuple[str, ...]] = ("spm", "llama-hf")
    transforms: ClassVar[Mapping[gguf.MODEL_TENSOR, Callable[[HParams], RowTransform]]] = {}
    required: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = (
        T.TOKEN_EMBD, T.OUTPUT_NORM, T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT,
        T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN,
    )  # fmt: skip
    optional: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = (T.OUTPUT,)
    ignored: ClassVar[tuple[str, ...]] = (r"\.rotary_emb\.inv_freq$",)

    # -- config ------------------------------------------------------------------------------
    def hparams(self, ckpt: Checkpoint) -> HParams:
        raise NotImplementedError

    def write_hparams(self, writer: gguf.GGUFWriter, hp: HParams) -> None:
        """The llama-style ``{arch}.*`` keys that llama, qwen and qwen2 share."""
        writer.add_context_length(hp.n_ctx)
        writer.add_embedding_length(hp.n_embd)
        writer.add_feed_forward_length(hp.n_ff)
        writer.add_block_count(hp.n_layer)
        writer.add_head_count(hp.n_head)
        writer.add_head_count_kv(hp.n_head_kv)
        writer.add_rope_freq_base(hp.rope_theta)
        writer.add_layer_norm_rms_eps(hp.rms_eps)
        writer.add_vocab_size(hp.n_vocab)
        if hp.head_dim != hp.n_embd // hp.n_head:
            writer.add_key_length(hp.head_dim)
            writer.add_value_length(hp.head_dim)
        writer.add_rope_dimension_count(hp.head_dim)
        rs = hp.rope_scaling
        if rs is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType(rs.type))
            writer.add_rope_scaling_factor(rs.factor)
            if rs.original_context is not None:
                writer.add_rope_scaling_orig_ctx_len(rs.original_context)
            if rs.finetuned is not None:
                writer.add_rope_scaling_finetuned(rs.finetuned)
            if rs.beta_fast is not None:
                writer.add_rope_scaling_yarn_beta_fast(rs.beta_fast)
            if rs.beta_slow is not None:
                writer.add_rope_scaling_yarn_beta_slow(rs.beta_slow)
            if rs.attention_factor is not None:
                writer.add_rope_scaling_yarn_attn_factor(rs.attention_factor)

    # -- tensors -----------------------------------------------------------------------------
    def expected_shapes(self, hp: HParams) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        """HF-order (rows, columns) shape of each tensor kind."""
        q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        return {
            T.TOKEN_EMBD: (hp.n_vocab, hp.n_embd),
            T.OUTPUT: (hp.n_vocab, hp.n_embd),
            T.OUTPUT_NORM: (hp.n_embd,),
            T.ATTN_NORM: (hp.n_embd,),
            T.ATTN_Q: (q, hp.n_embd),
            T.ATTN_K: (kv, hp.n_embd),
            T.ATTN_V: (kv, hp.n_embd),
            T.ATTN_OUT: (hp.n_embd, q),
            T.FFN_NORM: (hp.n_embd,),
            T.FFN_GATE: (hp.n_ff, hp.n_embd),
            T.FFN_UP: (hp.n_ff, hp.n_embd),
            T.FFN_DOWN: (hp.n_embd, hp.n_ff),
        }

    def plan_tensors(self, ckpt: Checkpoint, hp: HParams, outtype: gguf.GGMLQuantizationType) -> list[TensorPlan]:
        """Map every checkpoint tensor to its GGUF name, check its shape, attach its transform."""
        from quantize.tensors import plan_from_map

        return plan_from_map(self, ckpt, hp, outtype)

    def transform_for(self, kind: gguf.MODEL_TENSOR, hp: HParams, ckpt: Checkpoint) -> RowTransform | None:
        factory = self.transforms.get(kind)
        return factory(hp) if factory is not None else None

    def tensor_type(self, kind: gguf.MODEL_TENSOR, ndim: int, outtype: gguf.GGMLQuantizationType):
        """Norms and other 1-D tensors stay f32 (llama.cpp computes them in f32 anyway)."""
        return output_type(ndim, outtype)

    # -- vocabulary and chat -----------------------------------------------------------------
    def fit_vocab(self, vocab: Vocab, hp: HParams, ckpt: Checkpoint) -> Vocab:
        """The tokenizer must have exactly one entry per embedding row."""
        if len(vocab.tokens) != hp.n_vocab:
            raise VocabMismatch(
                f"{vocab.source} has {len(vocab.tokens)} tokens but the weights ({ckpt.weights_label}) have "
                f"{hp.n_vocab} embedding rows: the tokenizer files do not belong to these weights "
                "(e.g. a Chinese-LLaMA model with the original Llama tokenizer); copy the model's own tokenizer"
            )
        return vocab

    def chat_template(self, ckpt: Checkpoint, vocab: Vocab) -> str | None:
        return None

    def general(self, ckpt: Checkpoint) -> dict[str, str]:
        """Defaults for ``general.*`` keys that the model folder does not state (licence, basename)."""
        return {}

    def claims(self, config: Mapping[str, object]) -> bool:
        archs = config.get("architectures") or []
        return config.get("model_type") in self.model_types or any(a in self.architectures for a in archs)


@cache
def families() -> tuple[Family, ...]:
    """Every family module in this package (each defines ``FAMILY``), in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    return tuple(found)


def supported() -> str:
    """One line listing what can be converted, for error messages and --help."""
    return "; ".join(f"{f.name} ({', '.join(f.architectures)}: {f.description})" for f in families())


def find_family(config: Mapping[str, object], config_path: object = "config.json") -> Family:
    """The family that claims this config.json, or an error listing what is supported."""
    refuse_prequantized(config, config_path)
    for family in families():
        if family.claims(config):
            return family
    model_type = config.get("model_type", "?")
    archs = ", ".join(map(str, config.get("architectures") or [])) or "no architectures"
    raise UnsupportedModel(
        f"{config_path}: model_type '{model_type}' ({archs}) is not supported; supported: {supported()}"
    )


def refuse_prequantized(config: Mapping[str, object], path: object) -> None:
    """GPTQ/AWQ releases (Qwen's …-Chat-Int4 and …-Chat-AWQ, the many *-GPTQ uploads of Llama-2):
    their packed integer weights cannot become a GGUF, the original ones can."""
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = quant.get("quant_method", "pre-quantized")
        raise UnsupportedModel(
            f"{path}: a {method}-quantized checkpoint; convert the original (unquantized) model instead, "
            "e.g. Qwen/Qwen-7B-Chat rather than Qwen/Qwen-7B-Chat-Int4"
        )


def matches_any(patterns: tuple[str, ...], name: str) -> bool:
    return any(re.search(p, name) for p in patterns)
