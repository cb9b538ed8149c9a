"""PEFT LoRA adapters for a tiny Llama, trained nowhere but real: peft writes them (random, non-zero
B so every delta counts) and its merge_and_unload() gives the reference merged model.

The Chinese-LLaMA-2 style pack resizes the vocabulary, saves embed_tokens/lm_head in
modules_to_save and ships its own extended tokenizer.model; an Alpaca-style adapter trained on top
of that merge uses rsLoRA and is saved as a pickled adapter_model.bin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_llama(folder: Path):  # noqa: ANN201 - a transformers LlamaForCausalLM in f32
    import torch
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)


def write_adapter(model, folder: Path, *, seed: int, resize_to: int | None = None,  # noqa: ANN001
                  tokenizer: bytes | None = None, bin_format: bool = False, **lora: Any):  # noqa: ANN201 # fmt: skip
    """Wrap ``model`` (changed in place) in a random LoRA adapter, save it to ``folder`` and return
    the merged model (peft's merge_and_unload): the reference for what edgellm must produce."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    if resize_to is not None:
        model.resize_token_embeddings(resize_to)
    config = LoraConfig(init_lora_weights=False, target_modules=lora.pop("target_modules", ALL_LINEAR), **lora)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft's own random init of B is large for a 64-wide model
                p.mul_(0.3)
            elif "modules_to_save" in name:  # a trained replacement differs from the base rows
                p.add_(0.05 * torch.randn_like(p))
    peft_model.save_pretrained(folder, safe_serialization=not bin_format)
    if tokenizer is not None:
        (folder / "tokenizer.model").write_bytes(tokenizer)
        (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return peft_model.merge_and_unload()


def gpt2_with_conv1d_adapter(root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(base folder, adapter folder, merged state dict) for a fan_in_fan_out adapter on GPT-2's Conv1D
    layers, whose weights are stored (in, out): the one real case of fan_in_fan_out."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(7)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    model.save_pretrained(root / "gpt2-tiny")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
                        init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(root / "gpt2-lora")
    merged = {k: v.detach().numpy().copy() for k, v in peft_model.merge_and_unload().state_dict().items()}
    return root / "gpt2-tiny", root / "gpt2-lora", merged


def copy_adapter(src: Path, dst: Path, **config_changes: Any) -> Path:
    """A copy of an adapter folder with adapter_config.json values changed (None removes a key)."""
    shutil.copytree(src, dst)
    path = dst / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return dst
