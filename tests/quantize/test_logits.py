"""Issue #3 point 5: the f32 GGUF computes what transformers computes (NMSE < 1e-9, same top-1
everywhere; an exact conversion scores ~1e-12), the f16 GGUF within NMSE 1e-5, for every layout."""

from __future__ import annotations

import pytest

from .builders import MULTILINGUAL
from .conftest import LAYOUTS
from .reference import gguf_logits, hf_logits, hf_tokenizer, nmse


@pytest.fixture(scope="module")
def reference(models):  # noqa: ANN001, ANN201
    """name → (token ids, transformers logits), computed once per layout."""
    cache = {}

    def get(name: str):  # noqa: ANN202
        if name not in cache:
            folder = models(name).folder
            ids = hf_tokenizer(folder)(MULTILINGUAL)["input_ids"]
            cache[name] = ids, hf_logits(folder, ids)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_f32_logits_match_transformers(models, reference, name: str) -> None:  # noqa: ANN001
    ids, ref = reference(name)
    got = gguf_logits(models(name).gguf("f32"), ids)
    assert got.shape == ref.shape
    assert nmse(got, ref) < 1e-9
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).all()


@pytest.mark.parametrize("name", ["llama2-chat", "llama2-70b", "alpaca", "chinese-alpaca-16k"])
def test_f16_logits_close_to_transformers(models, reference, name: str) -> None:  # noqa: ANN001
    ids, ref = reference(name)
    assert nmse(gguf_logits(models(name).gguf("f16"), ids), ref) < 1e-5


@pytest.mark.parametrize(
    "mistake",
    ["rope_theta 1% off", "rms_eps 10x off", "Q/K rows not un-permuted"],
)
def test_the_logits_check_sees_small_mistakes(models, reference, tmp_path, monkeypatch, mistake: str) -> None:  # noqa: ANN001
    """The NMSE < 1e-9 bar has teeth: each mistake, made on purpose, fails it."""
    import dataclasses

    from quantize import run
    from quantize.families.llama import LlamaFamily

    real = LlamaFamily.hparams
    if mistake == "Q/K rows not un-permuted":
        monkeypatch.setattr(LlamaFamily, "transform_for", lambda self, kind, hp, ckpt: None)
    else:
        field, factor = ("rope_theta", 1.01) if "rope" in mistake else ("rms_eps", 10.0)
        monkeypatch.setattr(
            LlamaFamily, "hparams", lambda self, ckpt: dataclasses.replace(
                real(self, ckpt), **{field: getattr(real(self, ckpt), field) * factor})
        )  # fmt: skip
    ids, ref = reference("llama2-chat")
    (out,) = run(models("llama2-chat").folder, "f32", outdir=tmp_path, progress=False)
    assert nmse(gguf_logits(out.path, ids), ref) > 1e-9
