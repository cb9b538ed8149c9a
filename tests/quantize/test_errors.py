"""Issue #3 points 2, 4, 7: bad input gets one clear line (file + fix), exit code 1, no traceback,
and nothing under the output name; existing outputs are kept without --force."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.cli import main


def _copy(models, name: str, dest: Path) -> Path:  # noqa: ANN001
    folder = dest / models(name).folder.name
    shutil.copytree(models(name).folder, folder)
    return folder


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 1 and exactly one `edgellm: error:` line; return it."""
    assert main(["quantize", *args]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgellm: error: ") and "Traceback" not in err
    return lines[0]


def _edit_config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_config(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    (folder / "config.json").unlink()
    assert "no config.json" in _fails([str(folder)], capsys)


def test_missing_tokenizer(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    (folder / "tokenizer.model").unlink()
    line = _fails([str(folder)], capsys)
    assert "no tokenizer found" in line and "tokenizer.model" in line


def test_not_a_folder(tmp_path, capsys) -> None:  # noqa: ANN001
    assert "no such folder" in _fails([str(tmp_path / "nope")], capsys)


def test_truncated_safetensors(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1000)
    line = _fails([str(folder), "--outdir", str(tmp_path / "out")], capsys)
    assert "model.safetensors: truncated" in line and "re-download" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_corrupt_safetensors_header(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    assert "corrupt safetensors" in _fails([str(folder)], capsys)


def test_missing_shard(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-chat", tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    line = _fails([str(folder)], capsys)
    assert "model.safetensors.index.json: lists model-00002-of-00002.safetensors" in line


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"intermediate_size": 256}, "has shape [128, 224] but config.json implies [128, 256]"),
        ({"num_hidden_layers": 2}, "is in layer 2 but config.json says num_hidden_layers=2"),
        ({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]},
         "model_type 'gpt_neox' (GPTNeoXForCausalLM) is not supported; supported: llama (LlamaForCausalLM"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope scaling 'dynamic' is not supported"),
        ({"quantization_config": {"bits": 4, "quant_method": "gptq"}},
         "a gptq-quantized checkpoint; convert the original (unquantized) model instead"),
    ],
    ids=["shapes-contradict", "more-layers", "architecture", "rope-scaling", "gptq-release"],
)
def test_a_config_that_does_not_fit_is_one_line(models, tmp_path, capsys, changes, message) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    _edit_config(folder, **changes)
    assert message in _fails([str(folder)], capsys)


def test_chinese_weights_with_the_original_llama_tokenizer(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "chinese-alpaca-16k", tmp_path)
    shutil.copy(models("llama2-chat").folder / "tokenizer.model", folder / "tokenizer.model")
    line = _fails([str(folder)], capsys)
    assert "tokenizer.model has 1000 tokens but the weights" in line and "55296 embedding rows" in line


def test_unsupported_dtype(models, tmp_path, capsys) -> None:  # noqa: ANN001
    from safetensors.numpy import load_file, save_file

    folder = _copy(models, "llama2-70b", tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype("float64")
    save_file(tensors, folder / "model.safetensors")
    assert "'model.norm.weight' has dtype F64" in _fails([str(folder)], capsys)


def test_legacy_torch_pickle(models, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = _copy(models, "llama2-70b", tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02" + b"\x00" * 64)  # pre-1.6 torch.save: not a zip
    assert "legacy format" in _fails([str(folder)], capsys)


def test_unknown_type(models, capsys) -> None:  # noqa: ANN001
    line = _fails([str(models("llama2-70b").folder), "--type", "q4_k_m,q9_9"], capsys)
    assert "unknown type 'q9_9'" in line and "iq4_xs" in line


def test_existing_output_needs_force(models, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "model.gguf"
    out.write_bytes(b"keep me")
    src = str(models("llama2-70b").folder)
    assert "already exists; pass --force" in _fails([src, "--type", "q8_0", "-o", str(out)], capsys)
    assert out.read_bytes() == b"keep me"
    assert main(["quantize", src, "--type", "q8_0", "-o", str(out), "--force"]) == 0
    assert out.read_bytes()[:4] == b"GGUF"


def test_free_disk_space_is_checked_first(models, tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    line = _fails([str(models("llama2-70b").folder), "--outdir", str(tmp_path / "out")], capsys)
    assert "needs about" in line and "free" in line
    assert not (tmp_path / "out").exists()


def test_ctrl_c_leaves_nothing(models, tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    from quantize.tensors import TensorPlan

    real = TensorPlan.blocks

    def interrupted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        yield from real(self, *args, **kwargs)
        if self.name.startswith("blk.1."):
            raise KeyboardInterrupt

    monkeypatch.setattr(TensorPlan, "blocks", interrupted)
    out = tmp_path / "out"
    assert main(["quantize", str(models("llama2-70b").folder), "--type", "f16,q8_0", "--outdir", str(out)]) == 130
    assert list(out.iterdir()) == []


def test_a_crash_leaves_nothing_under_the_final_name(models, tmp_path) -> None:  # noqa: ANN001
    """SIGKILL half-way: only the hidden temporary file can remain, never a truncated model.gguf."""
    out = tmp_path / "model.gguf"
    script = f"""
import os, signal
from quantize.tensors import TensorPlan
real = TensorPlan.blocks
def dying(self, *a, **k):
    yield from real(self, *a, **k)
    if self.name.startswith("blk.1."):
        os.kill(os.getpid(), signal.SIGKILL)
TensorPlan.blocks = dying
from quantize import convert
convert({str(models("llama2-70b").folder)!r}, "f16", {str(out)!r}, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]


def test_a_write_error_is_one_line_and_leaves_nothing(models, tmp_path) -> None:  # noqa: ANN001
    """The disk filling up mid-way (here: a file-size limit, so write() fails with EFBIG)."""
    out = tmp_path / "out"
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
from edgellm.cli import main
sys.exit(main(["quantize", {str(models("llama2-70b").folder)!r}, "--type", "f16", "--outdir", {str(out)!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("edgellm: error: ") and "writing failed" in line and "File too large" in line
    assert list(out.iterdir()) == []
