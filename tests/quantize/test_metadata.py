"""Issue #3 points 3-4: every hyperparameter in the GGUF equals config.json's (f16 logits cannot see
small errors), rope scaling, general.*, special tokens, and each variant's chat template."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgellm.models import chat_templates

from .conftest import CHAT_TEMPLATE, LAYOUTS
from .reference import gguf_fields, hf_tokenizer


def _f32(x: float) -> float:
    return float(np.float32(x))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_hyperparameters_equal_config(models, name: str) -> None:  # noqa: ANN001
    model = models(name)
    cfg = model.config
    f = gguf_fields(model.gguf("f16"))
    heads = cfg["num_attention_heads"]
    expected = {
        "general.architecture": "llama",
        "llama.context_length": cfg.get("max_position_embeddings", cfg.get("max_sequence_length")),
        "llama.embedding_length": cfg["hidden_size"],
        "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.block_count": cfg["num_hidden_layers"],
        "llama.attention.head_count": heads,
        "llama.attention.head_count_kv": cfg.get("num_key_value_heads", heads),
        "llama.rope.dimension_count": cfg["hidden_size"] // heads,
        "llama.rope.freq_base": _f32(cfg.get("rope_theta", 10000.0)),
        "llama.attention.layer_norm_rms_epsilon": _f32(cfg["rms_norm_eps"]),
        "llama.vocab_size": cfg["vocab_size"],
    }
    for key, value in expected.items():
        assert f[key] == value, key
    assert len(f["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
    scaling = cfg.get("rope_scaling")
    if scaling:
        assert f["llama.rope.scaling.type"] == scaling["type"]
        assert f["llama.rope.scaling.factor"] == _f32(scaling["factor"])
        if "original_max_position_embeddings" in scaling:
            assert f["llama.rope.scaling.original_context_length"] == scaling["original_max_position_embeddings"]
            assert f["llama.rope.scaling.finetuned"] == scaling["finetuned"]
    else:
        assert not any(k.startswith("llama.rope.scaling") for k in f)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_special_tokens_are_the_tokenizers(models, name: str) -> None:  # noqa: ANN001
    """bos/eos/unk (and Alpaca's [PAD]) are the tokenizer's ids, whatever config.json claims
    (2023 Alpaca folders say bos 0 / eos 1)."""
    model = models(name)
    tok = hf_tokenizer(model.folder)
    f = gguf_fields(model.gguf("f16"))
    assert f["tokenizer.ggml.model"] == "llama"
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_token_id == 1
    assert f["tokenizer.ggml.eos_token_id"] == tok.eos_token_id == 2
    assert f["tokenizer.ggml.unknown_token_id"] == tok.unk_token_id
    assert f["tokenizer.ggml.add_bos_token"] is True
    if tok.pad_token_id is not None:
        assert f["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    types = f["tokenizer.ggml.token_type"]
    assert sum(t == gguf.TokenType.BYTE for t in types) == 256


def test_alpaca_pad_token_comes_from_added_tokens_json(models) -> None:  # noqa: ANN001
    model = models("alpaca")
    f = gguf_fields(model.gguf("f16"))
    pad = f["tokenizer.ggml.padding_token_id"]
    assert pad == len(f["tokenizer.ggml.tokens"]) - 1 == model.config.get("vocab_size", pad + 1) - 1
    assert f["tokenizer.ggml.tokens"][pad] == "[PAD]"
    assert f["llama.context_length"] == model.config["max_sequence_length"]


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("llama2-chat", CHAT_TEMPLATE),  # the folder's own, from tokenizer_config.json
        ("llama2-70b", chat_templates.llama2()),
        ("alpaca", chat_templates.alpaca()),
        (
            "chinese-alpaca-16k",
            chat_templates.llama2(default_system="You are a helpful assistant. 你是一个乐于助人的助手。"),
        ),
        ("chinese-llama-64k", chat_templates.llama2()),
    ],
    ids=["own", "llama2", "alpaca", "chinese-alpaca-2", "chinese-llama-2"],
)
def test_chat_template(models, name: str, template: str) -> None:  # noqa: ANN001
    assert gguf_fields(models(name).gguf("f16"))["tokenizer.chat_template"] == template


def test_chinese_alpaca_prompt_carries_its_system_prompt(models) -> None:  # noqa: ANN001
    template = gguf_fields(models("chinese-alpaca-16k").gguf("f16"))["tokenizer.chat_template"]
    prompt = chat_templates.render(template, [{"role": "user", "content": "你好"}], bos_token="<s>", eos_token="</s>")
    assert (
        prompt == "<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n你好 [/INST]"
    )


@pytest.mark.parametrize(
    ("name", "license"),
    [("llama2-chat", "llama2"), ("alpaca", "cc-by-nc-4.0"), ("chinese-alpaca-16k", "apache-2.0")],
)
def test_general_metadata_and_file_name(models, name: str, license: str) -> None:  # noqa: ANN001
    path = models(name).gguf("f16")
    f = gguf_fields(path)
    assert f["general.license"] == license
    assert f["general.type"] == "model"
    assert f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert f["general.size_label"]
    expected = gguf.naming_convention(
        f["general.name"], f.get("general.basename"), f.get("general.finetune"), f.get("general.version"),
        f["general.size_label"], "f16",
    )  # fmt: skip
    assert path.name == expected + ".gguf"
    assert path.name.endswith("-F16.gguf")


def test_llama2_chat_names(models) -> None:  # noqa: ANN001
    """Llama-2-7b-chat-hf → basename Llama-2, finetune chat (the -hf suffix names the format)."""
    f = gguf_fields(models("llama2-chat").gguf("f16"))
    assert f["general.basename"] == "Llama-2"
    assert "chat" in f["general.finetune"].lower() and "hf" not in f["general.finetune"].lower()
    assert f["general.sampling.temp"] == pytest.approx(0.6)  # from generation_config.json
