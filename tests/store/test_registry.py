"""models.toml: the bundled registry is valid and complete, a bad entry is an error naming it, and
a user's models.toml adds and overrides entries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgellm import paths
from edgellm.models import registry
from edgellm.models.registry import RegistryError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = tomllib.loads(registry.BUNDLED.read_text())["models"]


def test_bundled_registry_loads_every_entry() -> None:
    reg = registry.load([registry.BUNDLED])
    assert {e.name for e in reg} == set(MODELS)
    for entry in reg:
        assert entry.shape.params > 0 and entry.context >= 2048
        assert entry.gguf_repo is None or entry.recommended in entry.gguf_files, entry.name


@pytest.mark.parametrize(
    "name",
    [
        *(f"llama-2-{s}{c}" for s in ("7b", "13b", "70b") for c in ("", "-chat")),
        "alpaca-7b",
        *(
            f"chinese-{f}-2-{s}"
            for f in ("llama", "alpaca")
            for s in ("1.3b", "7b", "13b", "7b-16k", "13b-16k", "7b-64k")
        ),
        "chinese-alpaca-2-7b-rlhf",
        *(f"qwen-{s}{c}" for s in ("1.8b", "7b", "14b", "72b") for c in ("", "-chat")),
        *(f"qwen1.5-{s}{c}" for s in ("0.5b", "1.8b", "4b", "7b", "14b", "72b") for c in ("", "-chat")),
    ],
)
def test_every_target_model_is_listed(name: str) -> None:
    assert name in MODELS


def test_facts_users_depend_on() -> None:
    reg = registry.load([registry.BUNDLED])
    llama = reg.lookup("llama-2-7b-chat")
    assert llama.gated and llama.repo == "meta-llama/Llama-2-7b-chat-hf" and llama.context == 4096
    assert llama.gguf_file("Q4_K_M") == "llama-2-7b-chat.Q4_K_M.gguf" and "[INST]" in (llama.chat_template() or "")
    assert reg.lookup("llama-2-70b").shape.kv_heads == 8  # grouped-query attention
    qwen = reg.lookup("qwen1.5-0.5b-chat")
    assert (
        qwen.gguf_repo == "Qwen/Qwen1.5-0.5B-Chat-GGUF" and qwen.gguf_file("Q4_K_M") == "qwen1_5-0_5b-chat-q4_k_m.gguf"
    )
    assert qwen.architecture == "qwen2" and qwen.modelscope == "qwen/Qwen1.5-0.5B-Chat"
    assert reg.lookup("qwen-7b-chat").chat_template() is not None  # Qwen v1 checkpoints carry none
    assert reg.lookup("chinese-alpaca-2-7b-64k").context == 65536
    assert reg.lookup("chinese-alpaca-2-7b").modelscope == "ChineseAlpacaGroup/chinese-alpaca-2-7b"
    assert not reg.lookup("qwen-14b").gated


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


GOOD = """
[families.f]
architecture = "llama"
license = "mit"
[shapes.s]
params = 1000
layers = 2
embedding = 64
heads = 4
kv_heads = 2
ffn = 128
vocab = 100
[models.m]
family = "f"
shape = "s"
repo = "o/m"
context = 2048
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("context = 2048", "context = 'long'"), "[models.m]: 'context' must be int"),
        (("context = 2048", "context = 2048\ncontxt = 1"), "[models.m]: unknown key 'contxt'"),
        (('repo = "o/m"', 'repo = "../../etc"'), "[models.m]: 'repo' must look like owner/name"),
        (('repo = "o/m"\n', ""), "[models.m]: missing 'repo'"),
        (('family = "f"', 'family = "nope"'), "[models.m]: family 'nope' is not defined"),
        (("kv_heads = 2", "kv_heads = 3"), "[shapes.s]: heads (4) must be a multiple of kv_heads (3)"),
        (("layers = 2", "layers = -2"), "[shapes.s]: 'layers' must be a positive integer"),
        (("[models.m]", "[models.M]"), "[models.M]: names are lowercase"),
        (("[models.m]", '[models."../m"]'), "names are lowercase"),
        (("context = 2048", 'context = 2048\nrecommended = "Q5_K_Z"'), "unknown quantization type 'Q5_K_Z'"),
        (("context = 2048", 'context = 2048\ngguf_repo = "o/g"\ngguf_file = "m.gguf"'), "gguf_file must contain"),
        (("context = 2048", 'context = 2048\ngguf_files = {Q8_0 = "x.gguf"}'), "lists GGUF files but no gguf_repo"),
        (
            ("context = 2048", 'context = 2048\ngguf_repo = "o/g"\ngguf_files = {Q8_0 = "../x.gguf"}'),
            "relative .gguf path",
        ),
        (("context = 2048", 'context = 2048\ntemplate = "vicuna"'), "template must be one of"),
        (("[models.m]", "[modles.m]"), "unknown section [modles]"),
        (("context = 2048", "context = 2048\n[["), "not valid TOML"),
    ],
)
def test_a_bad_entry_is_an_error_naming_it(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(RegistryError) as err:
        registry.load([path])
    assert str(path) in str(err.value) and expected in str(err.value)


def test_user_registry_adds_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGELLM_HOME", str(tmp_path))
    user = paths.config_dir() / "models.toml"
    user.parent.mkdir(parents=True)
    user.write_text(
        GOOD.replace("[families.f]", "[families.f]\nrecommended = 'Q8_0'")
        + '\n[models.qwen1.5-7b-chat]\nrecommended = "Q5_K_M"\n'.replace("qwen1.5-7b-chat", '"qwen1.5-7b-chat"')
    )
    reg = registry.load()
    assert reg.lookup("m").recommended == "Q8_0"  # added
    assert reg.lookup("qwen1.5-7b-chat").recommended == "Q5_K_M"  # one key overridden...
    assert reg.lookup("qwen1.5-7b-chat").repo == "Qwen/Qwen1.5-7B-Chat"  # ...the rest kept
    user.write_text('[models."qwen1.5-7b-chat"]\ncontext = 0\n')
    with pytest.raises(RegistryError, match=r"models\.toml: \[models\.qwen1\.5-7b-chat\]: context must be positive"):
        registry.load()
