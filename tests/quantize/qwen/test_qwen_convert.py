"""Converting Qwen-1 and Qwen1.5 checkpoints: f32 logits equal transformers' (NMSE < 1e-9, same
top-1 everywhere), every hyperparameter equals config.json's as llama.cpp reads it, and bad
folders fail with one clear line naming the file, leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from quantize.convert import prepare
from quantize.errors import ConvertError, UnsupportedModel, VocabMismatch

from .conftest import Converted
from .fixtures import (
    VOCAB_SIZE,
    llama_logits,
    nmse,
    qwen2_logits,
    reference_qwen2,
    tiktoken_encoding,
    write_qwen1_checkpoint,
    write_qwen15_checkpoint,
)

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "床前明月光，疑是地上霜。Translate: def f(x):\n\treturn x ** 2  # 😀 123456<|im_end|>\n<|im_start|>assistant\n"
)


def test_logits_equal_transformers(converted: Converted) -> None:
    tokens = tiktoken_encoding().encode(PROMPT, allowed_special="all")
    want = qwen2_logits(converted.model, tokens)
    got = llama_logits(converted.gguf, tokens)
    assert got.shape == want.shape == (len(tokens), VOCAB_SIZE)
    assert nmse(got, want) < 1e-9
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


@pytest.fixture(scope="module")
def metadata(converted: Converted) -> Iterator[tuple[dict, dict[str, str], int]]:
    """(config.json, GGUF metadata as llama.cpp reads it, llama.cpp's token count)."""
    llm = llama_cpp.Llama(str(converted.gguf), vocab_only=True, verbose=False)
    n_tokens = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    yield json.loads((converted.folder / "config.json").read_text()), dict(llm.metadata), n_tokens
    llm.close()


def test_hyperparameters_equal_config(converted: Converted, metadata: tuple[dict, dict[str, str], int]) -> None:
    cfg, meta, n_tokens = metadata
    qwen1 = cfg["model_type"] == "qwen"
    arch = "qwen" if qwen1 else "qwen2"
    heads = cfg["num_attention_heads"]
    want = {
        "general.architecture": arch,
        f"{arch}.context_length": cfg["seq_length"] if qwen1 else cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],  # Qwen-1: llama.cpp halves it itself
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": heads if qwen1 else cfg["num_key_value_heads"],
        f"{arch}.rope.freq_base": cfg["rotary_emb_base"] if qwen1 else cfg["rope_theta"],
        f"{arch}.attention.layer_norm_rms_epsilon": cfg["layer_norm_epsilon"] if qwen1 else cfg["rms_norm_eps"],
        f"{arch}.rope.dimension_count": cfg["kv_channels"] if qwen1 else cfg["hidden_size"] // heads,
        f"{arch}.vocab_size": cfg["vocab_size"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.add_bos_token": "false",
    }
    for key, value in want.items():
        if isinstance(value, float):
            assert float(meta[key]) == pytest.approx(value, rel=1e-6, abs=1e-7), key
        else:
            assert meta[key] == str(value), key
    assert n_tokens == cfg["vocab_size"]
    assert not any(k.startswith(f"{arch}.attention.sliding_window") for k in meta)  # use_sliding_window: false


def test_tensors_as_llama_cpp_wants_them(converted: Converted) -> None:
    """Qwen-1: fused attn_qkv with its bias, half-width MLP; Qwen1.5: q/k/v biases, and no output
    matrix when the embeddings are tied (llama.cpp reuses token_embd)."""
    conv = prepare(converted.folder)
    shapes = {p.name: tuple(p.shape) for p in conv.plans("f32")}
    cfg, hidden = conv.ckpt.config, conv.hp.n_embd
    if cfg["model_type"] == "qwen":
        assert shapes["blk.0.attn_qkv.weight"] == (3 * hidden, hidden)
        assert shapes["blk.0.attn_qkv.bias"] == (3 * hidden,)
        assert (
            shapes["blk.0.ffn_gate.weight"] == shapes["blk.0.ffn_up.weight"] == (cfg["intermediate_size"] // 2, hidden)
        )
        assert not any(n.startswith("blk.0.attn_q.") for n in shapes)
    else:
        for name in ("attn_q", "attn_k", "attn_v"):
            assert shapes[f"blk.1.{name}.bias"] == (shapes[f"blk.1.{name}.weight"][0],)
        assert ("output.weight" in shapes) != cfg["tie_word_embeddings"]


def test_pickled_qwen1_checkpoint_converts_the_same(qwen1: Converted, tmp_path: Path) -> None:
    """Qwen-7B's first release shipped pytorch_model*.bin: same GGUF tensors, same logits."""
    folder = write_qwen1_checkpoint(tmp_path / qwen1.folder.name, qwen1.model, seq_length=1024, fmt="bin")
    assert not list(folder.glob("*.safetensors"))
    out = tmp_path / "bin.gguf"
    prepare(folder).write(out, "f32", progress=False)
    tokens = tiktoken_encoding().encode(PROMPT, allowed_special="all")
    assert np.array_equal(llama_logits(out, tokens), llama_logits(qwen1.gguf, tokens))


# -- bad folders ------------------------------------------------------------------------------------
def _linked_copy(src: Path, dst: Path) -> Path:
    """``src`` with its files symlinked (weights are shared), so a test can edit or drop some."""
    dst.mkdir()
    for f in src.iterdir():
        os.symlink(f, dst / f.name)
    return dst


def _edit_config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_unknown_model_type_lists_what_is_supported(qwen1: Converted, tmp_path: Path) -> None:
    folder = _linked_copy(qwen1.folder, tmp_path / "next")
    _edit_config(folder, model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"])
    with pytest.raises(UnsupportedModel) as err:
        prepare(folder)
    message = _one_line(err.value)
    for needle in (str(folder / "config.json"), "qwen3_next", "supported", "QWenLMHeadModel", "Qwen2ForCausalLM"):
        assert needle in message


def test_missing_qwen_tiktoken(qwen1: Converted, tmp_path: Path) -> None:
    folder = _linked_copy(qwen1.folder, tmp_path / "no-tokenizer")
    (folder / "qwen.tiktoken").unlink()
    with pytest.raises(VocabMismatch) as err:
        prepare(folder)
    message = _one_line(err.value)
    assert str(folder) in message and "qwen.tiktoken" in message


def test_corrupt_qwen_tiktoken_names_the_line(qwen1: Converted, tmp_path: Path) -> None:
    folder = _linked_copy(qwen1.folder, tmp_path / "corrupt")
    lines = (qwen1.folder / "qwen.tiktoken").read_bytes().splitlines()
    (folder / "qwen.tiktoken").unlink()
    (folder / "qwen.tiktoken").write_bytes(b"\n".join([*lines[:999], b"not-base64!! 999", *lines[1000:]]))
    with pytest.raises(VocabMismatch) as err:
        prepare(folder)
    message = _one_line(err.value)
    assert str(folder / "qwen.tiktoken") in message and "line 1000" in message


@pytest.mark.parametrize("generation", ["qwen1", "qwen15"])
def test_vocab_size_smaller_than_the_tokenizer(generation: str, tmp_path: Path) -> None:
    """Weights with 151,000 embedding rows cannot hold Qwen's 151,646 (151,851 for Qwen-1) tokens."""
    model = reference_qwen2(vocab_size=151_000, hidden=8, layers=1, heads=2, kv_heads=2, ffn=16)
    writer = write_qwen1_checkpoint if generation == "qwen1" else write_qwen15_checkpoint
    folder = writer(tmp_path / "small-vocab", model)
    with pytest.raises(VocabMismatch) as err:
        prepare(folder)
    message = _one_line(err.value)
    tokenizer = "qwen.tiktoken" if generation == "qwen1" else "tokenizer.json"
    assert str(folder / "config.json") in message and tokenizer in message and "151000" in message


def test_qwen15_without_lm_head_and_untied_is_incomplete(qwen15_untied: Converted, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    folder = _linked_copy(qwen15_untied.folder, tmp_path / "no-head")
    state = load_file(qwen15_untied.folder / "model.safetensors")
    del state["lm_head.weight"]
    (folder / "model.safetensors").unlink()
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ConvertError) as err:
        prepare(folder)
    assert "output.weight" in _one_line(err.value)


def test_cli_error_is_one_line_and_writes_nothing(qwen1: Converted, tmp_path: Path) -> None:
    folder = _linked_copy(qwen1.folder, tmp_path / "cli")
    (folder / "qwen.tiktoken").unlink()
    before = sorted(p.name for p in folder.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "edgellm", "quantize", str(folder), "-t", "q8_0"], capture_output=True, text=True
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "qwen.tiktoken" in lines[0], done.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_sliding_window_caps_the_context_when_enabled(qwen15_tied: Converted, tmp_path: Path) -> None:
    """llama.cpp's qwen2 always attends to the whole context; within the window that is exactly
    sliding-window attention, so an enabled window becomes the context length."""
    folder = _linked_copy(qwen15_tied.folder, tmp_path / "swa")
    assert prepare(folder).hp.n_ctx == 4096  # use_sliding_window: false (every Qwen1.5 release)
    _edit_config(folder, use_sliding_window=True, sliding_window=1024)
    assert prepare(folder).hp.n_ctx == 1024


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\w+|\s+"), "pre-tokenizer"),
        (lambda t: t["model"].update(merges=[["a", "b", "c"]]), "merges"),
        (lambda t: t["model"].update(byte_fallback=True), "byte-level"),
    ],
)
def test_unusable_tokenizer_json(qwen15_tied: Converted, tmp_path: Path, edit, needle: str) -> None:  # noqa: ANN001
    folder = _linked_copy(qwen15_tied.folder, tmp_path / "bad-tokenizer")
    data = json.loads((qwen15_tied.folder / "tokenizer.json").read_text(encoding="utf-8"))
    edit(data)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VocabMismatch) as err:
        prepare(folder)
    message = _one_line(err.value)
    assert str(folder / "tokenizer.json") in message and needle in message


@pytest.mark.parametrize(("generation", "method"), [("qwen1", "gptq"), ("qwen15", "awq")])
def test_prequantized_release_is_refused_with_the_fix(
    generation: str, method: str, qwen1: Converted, qwen15_tied: Converted, tmp_path: Path
) -> None:
    """Qwen-7B-Chat-Int4 (GPTQ) and Qwen1.5-*-Chat-AWQ sit next to the originals on the Hub."""
    source = qwen1 if generation == "qwen1" else qwen15_tied
    folder = _linked_copy(source.folder, tmp_path / f"{method}-int4")
    _edit_config(folder, quantization_config={"bits": 4, "group_size": 128, "quant_method": method})
    with pytest.raises(UnsupportedModel) as err:
        prepare(folder)
    message = _one_line(err.value)
    assert str(folder / "config.json") in message and method in message and "unquantized" in message
