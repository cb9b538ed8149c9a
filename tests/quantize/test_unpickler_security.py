"""Pickled checkpoints from strangers run nothing: pytorch_model.bin, Meta's consolidated.NN.pth and a
LoRA's adapter_model.bin whose pickle would run a command are refused with a one-line error, and
the command never runs (the file it would create does not appear)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest

from edgellm.cli import main
from quantize.errors import CheckpointError, UnsafeCheckpoint
from quantize.sources import open_checkpoint
from quantize.sources.lora import read_adapter


class RunsCommand:
    """What a malicious checkpoint holds: unpickling it calls ``function(*args)``."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.args


def _payloads(marker: Path) -> dict[str, RunsCommand]:
    return {
        "os.system": RunsCommand(os.system, f"touch {marker}"),
        "subprocess.call": RunsCommand(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": RunsCommand(exec, f"open({str(marker)!r}, 'w').close()"),
    }


def _save(path: Path, payload: RunsCommand) -> Path:
    """A real torch.save zip archive with the payload beside a genuine tensor."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model.embed_tokens.weight": torch.zeros(4, 4), "hook": payload}, path)
    return path


@pytest.fixture(params=["os.system", "subprocess.call", "builtins.exec"])
def payload(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[RunsCommand, Path]:
    marker = tmp_path / f"pwned-{request.param}"
    return _payloads(marker)[request.param], marker


def test_the_payloads_really_run_when_unpickled_by_torch(payload: tuple[RunsCommand, Path], tmp_path: Path) -> None:
    """The control: what the refusals below keep from running does run under a plain torch.load."""
    import torch

    evil, marker = payload
    torch.load(_save(tmp_path / "control.bin", evil), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("folder", "file", "sidecar", "sidecar_json", "opener"),
    [
        ("model", "pytorch_model.bin", "config.json", {"model_type": "llama"}, open_checkpoint),
        ("llama-2-7b", "consolidated.00.pth", "params.json", {"dim": 4, "n_layers": 1, "n_heads": 1, "norm_eps": 1e-5},
         open_checkpoint),
        ("lora", "adapter_model.bin", "adapter_config.json", {"peft_type": "LORA", "r": 4, "lora_alpha": 8},
         read_adapter),
    ],
    ids=["pytorch_model.bin", "consolidated.pth", "adapter_model.bin"],
)
def test_a_pickled_checkpoint_that_would_run_a_command_is_refused(  # noqa: PLR0913
    payload: tuple[RunsCommand, Path], tmp_path: Path, folder: str, file: str, sidecar: str,
    sidecar_json: dict, opener,  # noqa: ANN001
) -> None:  # fmt: skip
    evil, marker = payload
    where = tmp_path / folder
    _save(where / file, evil)
    (where / sidecar).write_text(json.dumps(sidecar_json))
    with pytest.raises(UnsafeCheckpoint, match=rf"{re.escape(file)}: refused: .*nothing was executed"):
        opener(where)
    assert not marker.exists()


def test_a_bare_pickle_is_not_unpickled(tmp_path: Path) -> None:
    """The pre-1.6 (non-zip) format is refused before any unpickling."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_payloads(marker)["os.system"]))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not a zip archive"):
        open_checkpoint(folder)
    assert not marker.exists()


def test_the_cli_prints_one_line_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "llama-2-7b"
    _save(folder / "consolidated.00.pth", _payloads(marker)["os.system"])
    (folder / "params.json").write_text(json.dumps({"dim": 4, "n_layers": 1, "n_heads": 1}))
    assert main(["quantize", str(folder), "-o", str(tmp_path / "out.gguf")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err and "posix.system" in err
    assert not marker.exists() and not (tmp_path / "out.gguf").exists()
