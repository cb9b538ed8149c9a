"""Tiny Llama-family checkpoints in each family's real on-disk layout, built with transformers.

Random weights, a SentencePiece tokenizer trained here on Chinese and English text with byte
fallback (as Llama's), and the files the real downloads carry: config.json in the 2023 spelling
(rope_theta / rope_scaling), generation_config.json, tokenizer_config.json, special_tokens_map.json,
sharded bf16 safetensors with an index, or sharded f32 pytorch_model-*.bin with an index (Alpaca)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

ENGLISH = """The quick brown fox jumps over the lazy dog. Language models predict the next token.
Llama is a family of large language models released by Meta. It runs on a laptop when quantized.
Quantization stores weights in fewer bits: four or eight instead of sixteen.
Please write a short poem about the sea, the wind and the stars at night.
def add(a, b):
    return a + b
for i in range(10):
    print(i, i * i)
"""
CHINESE = """中文大语言模型可以在笔记本电脑上运行。量化把权重存成更少的比特。
你好，世界！今天天气很好，我们去公园散步吧。
机器学习是人工智能的一个分支，它让计算机从数据中学习。
请写一首关于大海、风和夜晚星星的短诗。
北京是中国的首都，上海是最大的城市。
"""
# what the tokenizer tests encode: Chinese, English, code with tabs, emoji, runs of spaces and newlines
MULTILINGUAL = (
    "Hello, world! 你好，世界！\n\n"
    "def f(x):\n\tif x:\n\t\treturn x  # 注释\n"
    "Emoji: 😀🚀 and 中文混合 text.   Three spaces,\n\n\n  two newlines.\t\tTabs.\n"
    "量化 quantization 4-bit 8位 1234567890"
)


def train_spm(vocab_size: int = 1000) -> bytes:
    """A Llama-style SentencePiece model: BPE, byte fallback, digits split, no normalization."""
    import sentencepiece as spm

    lines = (ENGLISH + CHINESE).splitlines() * 20
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return out.getvalue()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _piece(text: str, score: float) -> bytes:
    body = b"\x0a" + _varint(len(text.encode())) + text.encode() + b"\x15" + struct.pack("<f", score)
    return b"\x0a" + _varint(len(body)) + body  # ModelProto.pieces (field 1)


def extend_spm(model: bytes, size: int) -> bytes:
    """What Chinese-LLaMA did to Llama's tokenizer: append Chinese pieces (score 0) until the
    vocabulary has ``size`` entries. Pieces are pairs of CJK characters, so BPE can build them."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    have = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    common = sorted({c for c in CHINESE if "\u4e00" <= c <= "\u9fff"})
    cjk = [chr(n) for n in range(0x4E00, 0xA000)]
    words = (a + b for a in common for b in common + cjk)  # the words a merged vocabulary adds
    extra: list[str] = []
    for piece in (*cjk, *words):
        if len(have) >= size:
            break
        if piece not in have:
            have.add(piece)
            extra.append(piece)
    return model + b"".join(_piece(p, 0.0) for p in extra)


LLAMA2_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 160,
    "max_position_embeddings": 4096,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0",
    "use_cache": True,
}


def build(
    folder: Path,
    config: dict[str, Any],
    tokenizer_model: bytes,
    *,
    layout: str = "safetensors",  # "safetensors" | "safetensors-sharded" | "bin-sharded"
    dtype: str = "bfloat16",
    tokenizer_config: dict[str, Any] | None = None,
    special_tokens_map: dict[str, Any] | None = None,
    added_tokens: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight LlamaForCausalLM and its tokenizer files to ``folder``."""
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if "vocab_size" not in config:  # one embedding row per token, as in the real checkpoints
        n = spm.SentencePieceProcessor(model_proto=tokenizer_model).get_piece_size()
        config = {**config, "vocab_size": n + len(added_tokens or {})}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config)).to(getattr(torch, dtype))
    with torch.no_grad():  # norms away from 1.0, so a missed or mis-mapped norm shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "bin-sharded":
        _save_sharded(folder, state, "pytorch_model", "bin")
    elif layout == "safetensors-sharded":
        _save_sharded(folder, state, "model", "safetensors")
    else:
        from safetensors.torch import save_file

        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    gen = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "temperature": 0.6, "top_p": 0.9}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (folder / "tokenizer.model").write_bytes(tokenizer_model)
    tc = tokenizer_config or {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 4096,
        "tokenizer_class": "LlamaTokenizer",
        "legacy": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    stm = special_tokens_map or {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(stm, indent=2))
    if added_tokens:
        (folder / "added_tokens.json").write_text(json.dumps(added_tokens))
    return folder


def _save_sharded(folder: Path, state: dict, stem: str, ext: str, shards: int = 2) -> None:
    """HF's sharded layout: ``{stem}-0000i-of-0000n.{ext}`` plus ``{stem}.{ext}.index.json``."""
    import torch
    from safetensors.torch import save_file

    names = list(state)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        part = {n: state[n] for n in names[i * per : (i + 1) * per]}
        fname = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        if ext == "bin":
            torch.save(part, folder / fname)
        else:
            save_file(part, folder / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))


def write_synthetic(folder: Path, *, hidden: int, ff: int, layers: int, heads: int, kv_heads: int,
                    vocab: int, shards: int = 2, seed: int = 0) -> int:  # fmt: skip
    """A Llama checkpoint of real size made without torch: bf16 weights with a realistic spread
    (N(0, 0.02), a 16 MiB pattern repeated), sharded safetensors with an index, config.json and a
    ``vocab``-piece tokenizer. Returns the bytes of weights written."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pattern = (rng.standard_normal(8 << 20, dtype=np.float32) * 0.02).view(np.uint32)
    pattern = (pattern >> 16).astype(np.uint16)  # bf16 bits
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (ff, hidden),
            p + "mlp.up_proj.weight": (ff, hidden),
            p + "mlp.down_proj.weight": (hidden, ff),
        })  # fmt: skip
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    names = list(shapes)
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s * per : (s + 1) * per]
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in part:
            n = 2 * int(np.prod(shapes[name]))
            header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
            offset += n
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / fname, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for name in part:
                n = int(np.prod(shapes[name]))
                if len(shapes[name]) == 1:
                    f.write(np.full(n, 0x3F80, np.uint16).tobytes())  # norms: 1.0
                    continue
                for start in range(0, n, pattern.size):
                    f.write(pattern[: min(pattern.size, n - start)].tobytes())
        weight_map.update(dict.fromkeys(part, fname))
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {**LLAMA2_CONFIG, "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
              "torch_dtype": "bfloat16"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer.model").write_bytes(extend_spm(train_spm(), vocab))
    tc = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    return total
