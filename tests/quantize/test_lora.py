"""LoRA adapters, merged while converting (`--lora`) and applied at run time (`--lora-only`), checked
against transformers + peft's merge_and_unload() on a tiny Llama-2 with grouped-query attention."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgellm.cli import main
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from quantize.convert import convert, prepare
from quantize.errors import CheckpointError, ConfigError, ConvertError, UnsupportedModel, VocabMismatch
from quantize.families.adapters import FamilyView
from quantize.families.llama import CHINESE_LLAMA2_VOCAB, variant
from quantize.lora_adapter import write_lora_adapter
from quantize.sources import open_checkpoint
from quantize.sources.lora import merge_adapters

from .builders import LLAMA2_CONFIG, build, extend_spm, train_spm
from .lora_fixtures import copy_adapter, gpt2_with_conv1d_adapter, load_llama, write_adapter
from .meta_fixtures import write_meta_checkpoint
from .reference import gguf_logits, nmse


def _merged(base: Path, adapters: list) -> object:
    """The base checkpoint with ``adapters`` merged, as the converter does it."""
    ckpt = open_checkpoint(base)
    return merge_adapters(ckpt, adapters, FamilyView(ckpt))

BASE_VOCAB, CHINESE_VOCAB = 600, 640
# token ids, some of them rows that only the resized (Chinese) vocabulary has
IDS = [1, 17, 250, 5, 599, 33, 120, 610, 8, 639, 77, 2, 300, 45]


def torch_logits(model, ids: list[int]) -> np.ndarray:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@dataclass(frozen=True)
class World:
    root: Path
    spm: bytes
    base: Path
    chinese_llama: Path  # resized vocabulary, modules_to_save, own tokenizer (safetensors)
    chinese_alpaca: Path  # trained on the merge of the one above; rsLoRA; adapter_model.bin
    style: Path  # plain adapter on the base: rsLoRA with rank_pattern and alpha_pattern
    chinese_reference: np.ndarray
    style_reference: np.ndarray


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("lora")
    spm = train_spm(BASE_VOCAB)
    config = {**LLAMA2_CONFIG, "num_key_value_heads": 2, "vocab_size": BASE_VOCAB}
    base = build(root / "Llama-2-tiny-hf", config, spm, dtype="float32")
    chinese_llama, chinese_alpaca = root / "chinese-llama-2-lora-tiny", root / "chinese-alpaca-2-lora-tiny"
    style = root / "style-lora"
    merged = write_adapter(load_llama(base), chinese_llama, seed=1, resize_to=CHINESE_VOCAB,
                           tokenizer=extend_spm(spm, CHINESE_VOCAB), r=8, lora_alpha=16,
                           modules_to_save=["embed_tokens", "lm_head"])  # fmt: skip
    merged = write_adapter(merged, chinese_alpaca, seed=2, tokenizer=extend_spm(spm, CHINESE_VOCAB), bin_format=True,
                           r=4, lora_alpha=8, use_rslora=True,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    chinese_reference = torch_logits(merged, IDS)
    merged = write_adapter(load_llama(base), style, seed=3, r=4, lora_alpha=8, use_rslora=True,
                           rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 4})  # fmt: skip
    style_reference = torch_logits(merged, [i for i in IDS if i < BASE_VOCAB])
    return World(root, spm, base, chinese_llama, chinese_alpaca, style, chinese_reference, style_reference)


@pytest.fixture(scope="module")
def base_gguf(world: World) -> Path:
    return convert(world.base, "f32", out=world.root / "base-f32.gguf", progress=False).path


@pytest.fixture(scope="module")
def style_merged_gguf(world: World) -> Path:
    return convert(world.base, "f32", out=world.root / "style-f32.gguf", progress=False, loras=[world.style]).path


def test_chinese_pack_merged_in_order_matches_peft(world: World) -> None:
    """Resized vocabulary from modules_to_save, then an rsLoRA adapter from a .bin, in order."""
    out = convert(world.base, "f32", out=world.root / "chinese-f32.gguf", progress=False,
                  loras=[world.chinese_llama, world.chinese_alpaca]).path  # fmt: skip
    assert nmse(gguf_logits(out, IDS), world.chinese_reference) < 1e-9
    reader = gguf.GGUFReader(out)
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == CHINESE_VOCAB  # the adapter's own tokenizer


def test_style_adapter_merged_matches_peft(world: World, style_merged_gguf: Path) -> None:
    ids = [i for i in IDS if i < BASE_VOCAB]
    assert nmse(gguf_logits(style_merged_gguf, ids), world.style_reference) < 1e-9


@pytest.fixture(scope="module")
def meta_base(world: World) -> Path:
    return write_meta_checkpoint(world.base, world.root / "meta" / "llama-2-tiny")


def test_lora_on_a_meta_checkpoint_equals_lora_on_the_hf_one(
    world: World, meta_base: Path, style_merged_gguf: Path
) -> None:
    """Deltas are in HF's Q/K layout; a Meta base is not, so they are re-ordered before adding."""
    out = convert(meta_base, "f32", out=world.root / "meta-style-f32.gguf", progress=False, loras=[world.style]).path
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(style_merged_gguf).tensors}
    got = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    assert sorted(got) == sorted(want)
    for name, data in want.items():
        np.testing.assert_allclose(got[name], data, rtol=0, atol=1e-6, err_msg=name)


def test_fan_in_fan_out_adapter_on_conv1d_weights_matches_peft(tmp_path: Path) -> None:
    base, adapter, merged = gpt2_with_conv1d_adapter(tmp_path)
    ckpt = _merged(base, [adapter])
    adapted = [n for n in ckpt.tensors if n.endswith(("c_attn.weight", "c_proj.weight"))]
    assert len(adapted) == 3
    for name in adapted:
        ref = ckpt.tensors[name]
        np.testing.assert_allclose(ref.read_rows(0, ref.shape[0]), merged[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_fan_in_fan_out_is_ignored_on_linear_weights_as_peft_does(world: World, tmp_path: Path) -> None:
    flagged = copy_adapter(world.style, tmp_path / "flagged", fan_in_fan_out=True)
    name = "model.layers.0.self_attn.q_proj.weight"  # square: a transposed delta would fit too
    plain, odd = (_merged(world.base, [a]).tensors[name] for a in (world.style, flagged))
    assert np.array_equal(odd.read_rows(0, 64), plain.read_rows(0, 64))
    runtime = [write_lora_adapter(a, tmp_path / f"{a.name}.gguf", progress=False) for a in (world.style, flagged)]
    plain_t, odd_t = ({t.name: np.asarray(t.data) for t in gguf.GGUFReader(p).tensors} for p in runtime)
    assert sorted(odd_t) == sorted(plain_t) and all(np.array_equal(odd_t[n], plain_t[n]) for n in plain_t)


def test_runtime_adapter_matches_the_merged_model(world: World, base_gguf: Path, style_merged_gguf: Path) -> None:
    adapter = write_lora_adapter(world.style, world.root / "style-lora-f16.gguf", progress=False)
    ids = [i for i in IDS if i < BASE_VOCAB]
    merged = gguf_logits(style_merged_gguf, ids)
    options = LoadOptions(n_ctx=64, n_threads=2, kv_f32=True, probe=False)  # the CLI test below probes
    with Engine(base_gguf, LoadOptions(**{**vars(options), "loras": [(adapter, 1.0)]})) as engine:
        with_adapter = engine.logits(ids)
    with Engine(base_gguf, options) as engine:
        without = engine.logits(ids)
    assert nmse(with_adapter, merged) < 1e-5  # f16 A and B
    assert nmse(without, merged) > 1e-2  # the adapter really changes the model
    fields = {k: f.contents() for k, f in gguf.GGUFReader(adapter).fields.items() if not k.startswith("GGUF.")}
    kinds = (fields["general.type"], fields["adapter.type"], fields["general.architecture"])
    assert kinds == ("adapter", "lora", "llama")
    assert fields["adapter.lora.alpha"] == pytest.approx(8 * 4 / 4**0.5)  # rsLoRA folded into alpha


def test_runtime_adapter_for_a_meta_base_equals_the_one_for_the_hf_base(
    world: World, meta_base: Path, tmp_path: Path
) -> None:
    from_meta = write_lora_adapter(world.style, tmp_path / "meta.gguf", base=meta_base, progress=False)
    from_hf = write_lora_adapter(world.style, tmp_path / "hf.gguf", base=world.base, progress=False)
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(from_hf).tensors}
    got = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(from_meta).tensors}
    assert sorted(got) == sorted(want) and all(np.array_equal(got[n], want[n]) for n in want)


def test_merged_chinese_alpaca_is_recognised_by_the_adapter_name(world: World) -> None:
    """The llama family picks Chinese-Alpaca-2's system prompt from the 55,296-token vocabulary and
    the model's name: for a merge, the adapters' names."""
    ckpt = _merged(world.base, [world.chinese_llama, world.chinese_alpaca])
    assert "chinese-alpaca-2-lora-tiny" in ckpt.config["_name_or_path"]
    assert variant(ckpt, CHINESE_LLAMA2_VOCAB).name == "Chinese-Alpaca-2"
    assert variant(open_checkpoint(world.base), CHINESE_LLAMA2_VOCAB).name == "Chinese-LLaMA-2"


def test_runtime_adapter_refuses_an_adapter_that_changes_embeddings(world: World, tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    with pytest.raises(UnsupportedModel, match=r"changes the embeddings.*edgellm quantize .* --lora .*chinese-llama"):
        write_lora_adapter(world.chinese_llama, out, progress=False)
    assert not out.exists()


def test_resized_vocabulary_without_tokenizer_names_both_sizes(world: World, tmp_path: Path) -> None:
    adapter = copy_adapter(world.chinese_llama, tmp_path / "no-tokenizer")
    (adapter / "tokenizer.model").unlink()
    with pytest.raises(VocabMismatch, match=f"from {BASE_VOCAB} to {CHINESE_VOCAB} tokens but ships no tokenizer"):
        prepare(world.base, [adapter])


def test_adapter_tokenizer_not_fitting_the_resized_embeddings_names_both_sizes(world: World, tmp_path: Path) -> None:
    adapter = copy_adapter(world.chinese_llama, tmp_path / "short-tokenizer")
    (adapter / "tokenizer.model").write_bytes(extend_spm(world.spm, 620))
    with pytest.raises(VocabMismatch, match=f"has 620 tokens but .* have {CHINESE_VOCAB} embedding rows"):
        prepare(world.base, [adapter])


def test_adapter_for_another_model_is_refused(world: World, tmp_path: Path) -> None:
    _, gpt2_adapter, _ = gpt2_with_conv1d_adapter(tmp_path)
    with pytest.raises(CheckpointError, match="trained for another base model"):
        prepare(world.base, [gpt2_adapter])


def test_dora_is_refused_and_an_adapter_is_not_a_model(world: World, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="DoRA adapters are not supported"):
        prepare(world.base, [copy_adapter(world.style, tmp_path / "dora", use_dora=True)])
    with pytest.raises(ConvertError, match=r"a PEFT LoRA adapter, not a model: .*--lora"):
        prepare(world.style)


def test_cli_merges_with_lora_and_runs_a_lora_only_adapter(world: World, base_gguf: Path, style_merged_gguf: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    merged = world.root / "cli-merged.gguf"
    assert main(["quantize", str(world.base), "--lora", str(world.style), "-t", "f32", "-o", str(merged)]) == 0
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(style_merged_gguf).tensors}
    assert all(np.array_equal(np.asarray(t.data), want[t.name]) for t in gguf.GGUFReader(merged).tensors)

    adapter = world.root / "cli-style.gguf"
    assert main(["quantize", str(world.style), "--lora-only", "-o", str(adapter)]) == 0
    capsys.readouterr()
    args = [str(base_gguf), "Tell me a story", "--temperature", "0", "--max-tokens", "12", "--ctx", "256"]
    assert main(["run", *args, "--lora", str(adapter), "--lora-scale", "1.0"]) == 0
    with_adapter = capsys.readouterr().out
    assert main(["run", *args]) == 0
    without = capsys.readouterr().out
    messages = [{"role": "user", "content": "Tell me a story"}]
    params = SamplingParams(temperature=0, max_tokens=12)
    with Engine(base_gguf, LoadOptions(n_ctx=256, loras=[(adapter, 1.0)])) as engine:
        assert with_adapter == engine.chat(messages, params).result() + "\n"
    assert with_adapter != without

    assert main(["run", *args, "--lora", str(world.root / "missing.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.gguf: no such LoRA adapter" in err[0]
    assert main(["run", *args, "--lora", str(world.style)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"convert it first: `edgellm quantize {world.style} --lora-only`" in err[0]


def test_lora_only_finds_the_base_config_in_the_hub_cache(world: World, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """base_model_name_or_path is usually a Hub id: its config.json is taken from the local Hugging Face
    cache (never downloaded), else the user is asked for --base."""
    from huggingface_hub import constants

    repo = "meta-llama/Llama-2-tiny-hf"
    adapter = copy_adapter(world.style, tmp_path / "hub-lora", base_model_name_or_path=repo)
    with pytest.raises(ConfigError, match="cannot find the base model's config.json .*pass --base"):
        write_lora_adapter(adapter, tmp_path / "none.gguf", progress=False)
    cache = tmp_path / "hub"
    snapshot = cache / "models--meta-llama--Llama-2-tiny-hf" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((world.base / "config.json").read_bytes())
    (cache / "models--meta-llama--Llama-2-tiny-hf" / "refs").mkdir()
    (cache / "models--meta-llama--Llama-2-tiny-hf" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    from_cache = write_lora_adapter(adapter, tmp_path / "cache.gguf", progress=False)
    explicit = write_lora_adapter(world.style, tmp_path / "explicit.gguf", base=world.base, progress=False)
    cached = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(from_cache).tensors}
    assert cached and all(np.array_equal(cached[t.name], t.data) for t in gguf.GGUFReader(explicit).tensors)


def test_lora_only_checks_the_adapter_against_the_base(world: World, tmp_path: Path) -> None:
    other = tmp_path / "Llama-2-wider"
    other.mkdir()
    config = json.loads((world.base / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))
    out = tmp_path / "x.gguf"
    with pytest.raises(CheckpointError, match=r"mlp\.(down|gate|up)_proj.* trained for another base model"):
        write_lora_adapter(world.style, out, base=other, progress=False)
    assert not out.exists()
