"""Meta's consolidated.NN.pth checkpoints convert to exactly the GGUF the HF route gives for the
same weights: every tensor byte-identical (so the shard merge axes and the Q/K layout are right)
and the same hyperparameters, tokenizer and chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from quantize.convert import convert
from quantize.errors import CheckpointError
from quantize.sources import open_checkpoint

from .builders import LLAMA2_CONFIG, build, train_spm
from .meta_fixtures import write_meta_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, Meta folder) with the same bf16 weights; grouped-query attention (4 heads, 2 kv
    heads) so each of the two shards holds one kv head; tokenizer.model beside the Meta folder."""
    root = tmp_path_factory.mktemp("meta")
    hf = build(root / "Llama-2-tiny-chat-hf", {**LLAMA2_CONFIG, "num_key_value_heads": 2}, train_spm(600))
    meta = write_meta_checkpoint(hf, root / "download" / "llama-2-tiny-chat")
    return hf, meta


@pytest.fixture(scope="module")
def ggufs(folders: tuple[Path, Path]) -> tuple[Path, Path]:
    hf, meta = folders
    out = hf.parent
    return (
        convert(hf, "f32", out=out / "hf.gguf", progress=False).path,
        convert(meta, "f32", out=out / "meta.gguf", progress=False).path,
    )


def _fields(reader: gguf.GGUFReader) -> dict[str, object]:
    skip = ("general.", "GGUF.")
    return {name: (f.contents() if f.types else None) for name, f in reader.fields.items() if not name.startswith(skip)}


def test_meta_checkpoint_converts_to_the_same_tensors_as_the_hf_route(ggufs: tuple[Path, Path]) -> None:
    hf, meta = (gguf.GGUFReader(p) for p in ggufs)
    hf_tensors = {t.name: t for t in hf.tensors}
    meta_tensors = {t.name: t for t in meta.tensors}
    assert sorted(meta_tensors) == sorted(hf_tensors)
    for name, want in hf_tensors.items():
        got = meta_tensors[name]
        assert (got.tensor_type, list(got.shape)) == (want.tensor_type, list(want.shape)), name
        assert np.array_equal(np.asarray(got.data), np.asarray(want.data)), name
    assert _fields(meta) == _fields(hf)


def test_hyperparameters_come_from_params_json_and_the_shapes(folders: tuple[Path, Path]) -> None:
    hf, meta = folders
    ckpt = open_checkpoint(meta)
    want = json.loads((hf / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "rms_norm_eps", "max_position_embeddings"):  # fmt: skip
        assert ckpt.config[key] == want[key], key
    assert not ckpt.hf_rope_layout
    assert ckpt.tokenizer_folder == meta.parent


def test_a_missing_shard_is_named(folders: tuple[Path, Path], tmp_path: Path) -> None:
    _, meta = folders
    broken = tmp_path / "llama-2-13b"
    shutil.copytree(meta, broken)
    (broken / "consolidated.01.pth").rename(broken / "consolidated.02.pth")
    with pytest.raises(CheckpointError, match=r"consolidated\.01\.pth is missing"):
        open_checkpoint(broken)
    (broken / "consolidated.02.pth").unlink()
    with pytest.raises(CheckpointError, match="32 of the 64 embedding columns"):
        open_checkpoint(broken)
