"""Session fixtures: one tiny checkpoint per Llama-family layout, built once, converted once."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import builders as B


@dataclass
class Model:
    """A built checkpoint folder and its conversions (made on first use)."""

    folder: Path
    outdir: Path
    _files: dict[str, Path] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.folder / "config.json").read_text())

    def gguf(self, type_name: str) -> Path:
        if type_name not in self._files:
            from quantize import run

            (out,) = run(self.folder, type_name, outdir=self.outdir / type_name, progress=False)
            self._files[type_name] = out.path
        return self._files[type_name]


@pytest.fixture(scope="session")
def spm_llama() -> bytes:
    return B.train_spm()


@pytest.fixture(scope="session")
def spm_chinese(spm_llama: bytes) -> bytes:
    return B.extend_spm(spm_llama, 55296)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, spm_llama: bytes, spm_chinese: bytes):  # noqa: ANN201
    """name → Model, built lazily: each test pays only for the layouts it uses."""
    root = tmp_path_factory.mktemp("llama-family")

    @functools.cache
    def get(name: str) -> Model:
        folder, config, tokenizer, kwargs = LAYOUTS[name](spm_llama, spm_chinese)
        B.build(root / folder, config, tokenizer, **kwargs)
        return Model(root / folder, root / f"{folder}-out")

    return get


BIG_HIDDEN, BIG_VOCAB = 1024, 32000


@pytest.fixture(scope="session")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 340 MB bf16 Llama checkpoint made without torch (for memory and interruption tests)."""
    folder = tmp_path_factory.mktemp("big") / "Llama-2-340M-hf"
    size = B.write_synthetic(folder, hidden=BIG_HIDDEN, ff=2816, layers=8, heads=16, kv_heads=16, vocab=BIG_VOCAB)
    return folder, size


def _llama2_chat(spm: bytes, _: bytes):  # noqa: ANN202
    """Llama-2-7b-chat-hf: multi-head attention, bf16 sharded safetensors, template in tokenizer_config."""
    tc = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "legacy": False,
        "tokenizer_class": "LlamaTokenizer",
        "chat_template": CHAT_TEMPLATE,
    }
    return "Llama-2-7b-chat-hf", B.LLAMA2_CONFIG, spm, {"layout": "safetensors-sharded", "tokenizer_config": tc}


def _llama2_70b(spm: bytes, _: bytes):  # noqa: ANN202
    """Llama-2-70b-hf: grouped-query attention (8 query heads share 2 KV heads), f16 safetensors."""
    cfg = {**B.LLAMA2_CONFIG, "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 128,
           "intermediate_size": 224, "num_hidden_layers": 3}  # fmt: skip
    return "Llama-2-70b-hf", cfg, spm, {"layout": "safetensors", "dtype": "float16"}


def _alpaca(spm: bytes, _: bytes):  # noqa: ANN202
    """A 2023 Alpaca folder: f32 pytorch_model-*.bin, [PAD] added (32001-style vocabulary) and the
    config quirks of the time (pad -1, bos 0 / eos 1, max_sequence_length, LLaMAForCausalLM)."""
    cfg = {
        "architectures": ["LLaMAForCausalLM"],
        "model_type": "llama",
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": -1,
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 160,
        "initializer_range": 0.02,
        "max_sequence_length": 2048,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "rms_norm_eps": 1e-06,
        "torch_dtype": "float32",
        "transformers_version": "4.27.0.dev0",
        "use_cache": True,
    }
    tc = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]", "add_bos_token": True,
          "model_max_length": 512, "padding_side": "right", "tokenizer_class": "LlamaTokenizer"}  # fmt: skip
    stm = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]"}
    n = _pieces(spm)
    kwargs = {"layout": "bin-sharded", "dtype": "float32", "tokenizer_config": tc, "special_tokens_map": stm,
              "added_tokens": {"[PAD]": n}}  # fmt: skip
    return "alpaca-7b-native", cfg, spm, kwargs


def _chinese_alpaca_16k(_: bytes, spm_cn: bytes):  # noqa: ANN202
    """chinese-alpaca-2-7b-16k-hf: 55,296-piece vocabulary, linear RoPE scaling x4, bf16 shards."""
    cfg = {**B.LLAMA2_CONFIG, "rope_scaling": {"factor": 4.0, "type": "linear"}, "torch_dtype": "bfloat16"}
    return "chinese-alpaca-2-7b-16k-hf", cfg, spm_cn, {"layout": "safetensors-sharded"}


def _chinese_llama_64k(_: bytes, spm_cn: bytes):  # noqa: ANN202
    """chinese-llama-2-7b-64k: YaRN x16 over a 4K original context, f16 pytorch_model.bin shards."""
    scaling = {"factor": 16.0, "finetuned": True, "original_max_position_embeddings": 4096, "type": "yarn"}
    cfg = {**B.LLAMA2_CONFIG, "max_position_embeddings": 65536, "rope_scaling": scaling, "rope_theta": 10000.0}
    return "chinese-llama-2-7b-64k", cfg, spm_cn, {"layout": "bin-sharded", "dtype": "float16"}


def _pieces(spm: bytes) -> int:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=spm).get_piece_size()


CHAT_TEMPLATE = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
LAYOUTS = {
    "llama2-chat": _llama2_chat,
    "llama2-70b": _llama2_70b,
    "alpaca": _alpaca,
    "chinese-alpaca-16k": _chinese_alpaca_16k,
    "chinese-llama-64k": _chinese_llama_64k,
}
