"""LoRA on a second family: Qwen1.5 (NEOX rope, so no Q/K reordering; q/k/v biases untouched by the
adapter), merged while converting and as a runtime adapter, against peft's merge_and_unload()."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from quantize.convert import convert
from quantize.lora_adapter import write_lora_adapter

from .lora_fixtures import write_adapter
from .qwen.fixtures import reference_qwen2, write_qwen15_checkpoint
from .reference import gguf_logits, nmse

pytestmark = pytest.mark.slow  # the real 151K-token Qwen vocabulary: ~20 s of set-up on 2 cores

IDS = [151644, 872, 198, 108386, 3837, 99489, 1773, 151645, 198, 151644, 77091, 198, 9707]


def logits_with_lora(path: Path, lora: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits with a runtime adapter (f32 KV cache). Not through the Engine, whose header
    check reads the 151K-token vocabulary in Python; test_lora.py covers the Engine's --lora path."""
    llm = llama_cpp.Llama(
        str(path), lora_path=str(lora), n_ctx=64, logits_all=True, type_k=0, type_v=0, n_threads=2, verbose=False
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


@dataclass(frozen=True)
class QwenLora:
    root: Path
    base: Path
    adapter: Path
    merged_gguf: Path
    reference: np.ndarray


@pytest.fixture(scope="module")
def qwen_lora(tmp_path_factory: pytest.TempPathFactory) -> QwenLora:
    import torch

    root = tmp_path_factory.mktemp("qwen-lora")
    model = reference_qwen2(kv_heads=2, seed=11)
    base = write_qwen15_checkpoint(root / "Qwen1.5-tiny-Chat", model)
    adapter = root / "qwen1.5-tiny-lora"
    merged = write_adapter(model, adapter, seed=12, r=4, lora_alpha=8)  # every linear layer, no base name saved
    with torch.no_grad():
        reference = merged(torch.tensor([IDS])).logits[0].numpy()
    out = convert(base, "f32", out=root / "merged-f32.gguf", progress=False, loras=[adapter]).path
    return QwenLora(root, base, adapter, out, reference)


def test_qwen15_lora_merged_matches_peft(qwen_lora: QwenLora) -> None:
    assert nmse(gguf_logits(qwen_lora.merged_gguf, IDS), qwen_lora.reference) < 1e-9


def test_qwen15_runtime_adapter_matches_the_merged_model(qwen_lora: QwenLora) -> None:
    base_gguf = convert(qwen_lora.base, "f32", out=qwen_lora.root / "base-f32.gguf", progress=False).path
    adapter = write_lora_adapter(qwen_lora.adapter, base=qwen_lora.base, progress=False)
    assert adapter.name == "qwen1.5-tiny-lora-F16-LoRA.gguf" and adapter.parent == qwen_lora.adapter
    merged = gguf_logits(qwen_lora.merged_gguf, IDS)
    assert nmse(logits_with_lora(base_gguf, adapter, IDS), merged) < 1e-5
    assert nmse(gguf_logits(base_gguf, IDS), merged) > 1e-2  # the adapter really changes the model
