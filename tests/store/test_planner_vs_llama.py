"""The planner's estimates against what llama.cpp really allocates, as its own log reports it
(`... buffer size = X MiB`): real loads of the default model and of tiny models of varied shapes
(grouped-query and multi-query attention, large vocabulary, wide FFN), with and without flash attention."""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp
import pytest

from edgellm.models.registry import Shape
from edgellm.runtime import planner
from edgellm.runtime.engine import Engine, LoadOptions
from tests.store.tiny_gguf import write_tiny_llama

MIB = 1 << 20
SHAPES = {
    "gqa": dict(layers=4, embedding=256, heads=8, kv_heads=2, ffn=512, vocab=1000),
    "big-vocab": dict(layers=2, embedding=128, heads=4, kv_heads=4, ffn=4096, vocab=32000),
    "many-heads": dict(layers=3, embedding=512, heads=16, kv_heads=16, ffn=1024, vocab=300),
    "mqa": dict(layers=2, embedding=1024, heads=8, kv_heads=1, ffn=2816, vocab=8000),
}


def allocated(path: Path, ctx: int, flash_attn: bool, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """Buffer sizes (bytes) llama.cpp logs while loading ``path`` with a ``ctx``-token context."""
    capsys.readouterr()
    with Engine(path, LoadOptions(n_ctx=ctx, flash_attn=flash_attn, verbose=True, probe=False)) as engine:
        model_size = llama_cpp.llama_model_size(engine._model)
    log = capsys.readouterr().err
    sizes: dict[str, float] = {"model_size": model_size}
    for kind, mib in re.findall(r"(model|KV|compute|output) buffer size =\s+([\d.]+) MiB", log):
        sizes[kind] = sizes.get(kind, 0.0) + float(mib) * MIB
    return sizes


def check(path: Path, ctx: int, flash_attn: bool, capsys: pytest.CaptureFixture[str]) -> None:
    real = allocated(path, ctx, flash_attn, capsys)
    _, _, est = planner.for_file(path, ctx, flash_attn=flash_attn)
    total = real["model"] + real["KV"] + real["compute"] + real.get("output", 0.0)
    assert est.weights == pytest.approx(real["model_size"], rel=0.01)
    assert est.weights == pytest.approx(real["model"], rel=0.01)
    assert est.kv_cache == pytest.approx(real["KV"], rel=0.01)
    if not flash_attn:  # flash attention's buffers are smaller and less regular: checked in the total
        assert est.compute == pytest.approx(real["compute"], rel=0.10)
    assert est.total == pytest.approx(total, rel=0.10), (est, real)


@pytest.mark.parametrize(("ctx", "flash_attn"), [(512, False), (2048, True), (8192, False), (8192, True)])
def test_default_model(default_model: Path, ctx: int, flash_attn: bool, capsys: pytest.CaptureFixture[str]) -> None:
    check(default_model, ctx, flash_attn, capsys)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    return {name: write_tiny_llama(folder / f"{name}.gguf", context=16384, **s) for name, s in SHAPES.items()}


@pytest.mark.parametrize("flash_attn", [False, True])
@pytest.mark.parametrize("ctx", [1000, 4096])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_tiny_shapes(
    tiny_models: dict[str, Path], shape: str, ctx: int, flash_attn: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    check(tiny_models[shape], ctx, flash_attn, capsys)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_registry_estimate_matches_the_file_estimate(tiny_models: dict[str, Path], shape: str) -> None:
    """A model not downloaded yet is sized from its registry shape; the file it becomes agrees."""
    geom, weights, est = planner.for_file(tiny_models[shape], 4096)
    s = SHAPES[shape]
    params = s["vocab"] * s["embedding"] * 2 + s["layers"] * (
        2 * s["embedding"] ** 2
        + 2 * s["embedding"] * s["kv_heads"] * (s["embedding"] // s["heads"])
        + 3 * s["embedding"] * s["ffn"]
    )
    registry_shape = Shape(
        params=params, **{k: s[k] for k in ("layers", "embedding", "heads", "kv_heads", "ffn", "vocab")}
    )
    from_shape = planner.estimate(
        planner.Geometry.from_shape(registry_shape, 16384), planner.Weights.from_params(registry_shape, "F16"), 4096
    )
    assert from_shape.kv_cache == est.kv_cache
    assert from_shape.compute == est.compute
    assert from_shape.weights == pytest.approx(weights.total, rel=0.02)
