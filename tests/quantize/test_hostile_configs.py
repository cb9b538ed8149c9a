"""Issue 14, item 3: model and adapter configs with impossible values (non-positive sizes, heads
that do not divide, non-finite numbers, LoRA rank 0 or negative, empty target modules, ranks that
disagree with the tensors) are one line naming the file and the key, exit code 1, nothing written;
never a ZeroDivisionError, a ValueError from float() or a GGUF with a negative context."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from edgellm.cli import main
from tests import limited

MODEL_CASES = {
    "hidden_size 0": ({"hidden_size": 0}, "'hidden_size' must be a positive integer, got 0"),
    "hidden_size negative": ({"hidden_size": -128}, "'hidden_size' must be a positive integer, got -128"),
    "hidden_size a string": ({"hidden_size": "128"}, "'hidden_size' must be a positive integer, got '128'"),
    "no heads": ({"num_attention_heads": 0}, "'num_attention_heads' must be a positive integer"),
    "heads do not divide hidden": ({"num_attention_heads": 6, "num_key_value_heads": 6},
                                   "hidden_size 128 is not a multiple of num_attention_heads 6"),
    "kv heads do not divide heads": ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
    "kv heads a boolean": ({"num_key_value_heads": True}, "'num_key_value_heads' must be a positive integer"),
    "no layers": ({"num_hidden_layers": 0}, "'num_hidden_layers' must be a positive integer"),
    "negative feed-forward": ({"intermediate_size": -1}, "'intermediate_size' must be a positive integer"),
    "negative head_dim": ({"head_dim": -2}, "'head_dim' must be a positive integer"),
    "negative context": ({"max_position_embeddings": -1}, "'max_position_embeddings' must be a positive integer"),
    "vocab_size 0 is not 'absent'": ({"vocab_size": -5}, "'vocab_size' must be a positive integer"),
    "rms eps NaN": ({"rms_norm_eps": float("nan")}, "'rms_norm_eps' must be a positive number, got nan"),
    "rms eps a string": ({"rms_norm_eps": "1e-5"}, "'rms_norm_eps' must be a positive number"),
    "rope theta infinite": ({"rope_theta": float("inf")}, "'rope_theta' must be a positive number, got inf"),
    "rope factor NaN": ({"rope_scaling": {"type": "linear", "factor": float("nan")}}, "needs a positive 'factor'"),
}


def _fails(args: list[str | Path], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgellm: error: ") and "Traceback" not in err, err
    return lines[0]


def _edit(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))  # NaN/Infinity as Python writes them


@pytest.fixture
def model(models, tmp_path: Path) -> Path:  # noqa: ANN001
    folder = tmp_path / "Llama-2-70b-hf"
    shutil.copytree(models("llama2-70b").folder, folder)
    return folder


@pytest.mark.parametrize("case", MODEL_CASES)
def test_impossible_model_config(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    changes, words = MODEL_CASES[case]
    _edit(model / "config.json", **changes)
    out = tmp_path / "out.gguf"
    line = _fails(["quantize", model, "--type", "f16", "-o", out], capsys)
    assert str(model / "config.json") in line and words in line
    assert not out.exists()


def _adapter(folder: Path, rank: int = 2, **config: object) -> Path:
    """A PEFT LoRA adapter on q_proj of every layer of the tiny Llama-2-70b (hidden 128, 3 layers)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(3):
        key = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, 128), dtype=np.float32)
        tensors[f"{key}.lora_B.weight"] = rng.standard_normal((128, rank), dtype=np.float32)
    save_file(tensors, folder / "adapter_model.safetensors")
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 4, "target_modules": ["q_proj"], **config}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


ADAPTER_CASES = {
    "rank 0": ({"r": 0}, "r (the LoRA rank) must be a positive integer, got 0"),
    "negative rank": ({"r": -4}, "r (the LoRA rank) must be a positive integer, got -4"),
    "rank_pattern 0": ({"rank_pattern": {"q_proj": 0}}, "rank_pattern['q_proj'] (the LoRA rank) must be a positive"),
    "alpha NaN": ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number, got nan"),
    "alpha infinite": ({"lora_alpha": float("-inf")}, "lora_alpha must be a finite number, got -inf"),
    "alpha a string": ({"lora_alpha": "16"}, "lora_alpha must be a finite number, got '16'"),
    "alpha_pattern NaN": ({"alpha_pattern": {"q_proj": float("nan")}}, "alpha_pattern['q_proj'] must be a finite"),
    "no target modules": ({"target_modules": []}, "'target_modules' is empty"),
    "rank that disagrees with the tensors": ({"r": 8}, "has rank-2 LoRA matrices but adapter_config.json says r=8"),
}


def test_a_plain_adapter_merges(model: Path, tmp_path: Path) -> None:
    """The control: the same synthetic adapter with sane values converts both ways."""
    adapter = _adapter(tmp_path / "adapter")
    assert main(["quantize", str(model), "--lora", str(adapter), "--type", "f16", "-o", str(tmp_path / "m.gguf")]) == 0
    assert main(["quantize", str(adapter), "--lora-only", "--base", str(model), "-o", str(tmp_path / "a.gguf")]) == 0


@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_impossible_adapter_config(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    changes, words = ADAPTER_CASES[case]
    adapter = _adapter(tmp_path / "adapter", **changes)
    out = tmp_path / "out.gguf"
    for args in (["quantize", model, "--lora", adapter, "--type", "f16", "-o", out],
                 ["quantize", adapter, "--lora-only", "--base", model, "-o", out]):  # fmt: skip
        line = _fails(args, capsys)
        assert str(adapter) in line and words in line
        assert not out.exists()


def test_rank_zero_tensors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rank-0 matrices with no r to compare against: refused, not a division by zero in alpha / r."""
    adapter = _adapter(tmp_path / "adapter", rank=0)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    del cfg["r"]
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    line = _fails(["quantize", model, "--lora", adapter, "--type", "f16", "-o", tmp_path / "out.gguf"], capsys)
    assert "has rank-0 LoRA matrices" in line


def test_under_a_4gb_limit(model: Path, tmp_path: Path) -> None:
    """One of each in a child process limited to 4 GB of address space: the same single line."""
    _edit(model / "config.json", rms_norm_eps=float("nan"))
    limited.one_line_error(limited.cli("quantize", model, "-o", tmp_path / "out.gguf"), "'rms_norm_eps'")
    adapter = _adapter(tmp_path / "adapter", lora_alpha=float("nan"))
    limited.one_line_error(limited.cli("quantize", adapter, "--lora-only", "--base", model),
                           "lora_alpha must be a finite number")  # fmt: skip
    assert not (tmp_path / "out.gguf").exists() and not list(adapter.glob("*.gguf"))
