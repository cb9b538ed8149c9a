"""The model store: names map to files inside it and nothing else; install/rm/list; `run` and
`show` accept names; a path is used in place."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm import paths
from edgellm.errors import EdgeLLMError
from edgellm.models.resolve import resolve_model
from edgellm.models.store import BadName, Ref, Store, parse_ref


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("EDGELLM_HOME", str(tmp_path / "home"))
    return Store()


@pytest.fixture()
def pulled(store: Store, default_model: Path) -> Path:
    """The default model, installed in the store as a model named `tiny`."""
    return store.install(default_model, Ref("tiny", "Q4_1"), {"parameters": 1}, move=False).path


def test_store_lives_in_the_data_dir(store: Store) -> None:
    assert store.root == paths.data_dir() / "models" == Path(os.environ["EDGELLM_HOME"]) / "models"


@pytest.mark.parametrize(
    "text",
    [
        "../x",
        "..",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "~root",
        ".hidden",
        "x\x00y",
        "tiny\x00",
        "",
        "A" * 80,
        "name with space",
    ],
)
def test_names_that_could_name_a_path_are_refused(store: Store, text: str) -> None:
    with pytest.raises(BadName):
        store.path_for(parse_ref(text + ":Q4_0"))


@pytest.mark.parametrize("text", ["tiny:../../etc", "tiny:/etc/passwd", "tiny:Q4_0/../../x", "tiny:\x00", "tiny:q9_9"])
def test_types_that_could_name_a_path_are_refused(text: str) -> None:
    with pytest.raises(BadName):
        parse_ref(text)


def test_a_ref_built_by_hand_is_checked_too(store: Store) -> None:
    with pytest.raises(BadName):
        store.path_for(Ref("../../x", "Q4_0"))
    with pytest.raises(BadName):
        store.path_for(Ref("x", "../../y"))


def test_install_links_list_and_remove(store: Store, pulled: Path, default_model: Path) -> None:
    assert pulled == store.root / "tiny" / "tiny-Q4_1.gguf"
    assert pulled.stat().st_ino == default_model.stat().st_ino or pulled.read_bytes() == default_model.read_bytes()
    [model] = store.models()
    assert (model.name, model.qtype, model.size) == ("tiny", "Q4_1", default_model.stat().st_size)
    assert resolve_model("tiny") == resolve_model("tiny:Q4_1") == resolve_model("TINY:q4_1") == pulled
    assert not list(store.staging().iterdir())  # nothing half-written left behind
    assert [m.qtype for m in store.remove(parse_ref("tiny"))] == ["Q4_1"]
    assert not pulled.exists() and default_model.exists() and not (store.root / "tiny").exists()


def test_several_types_need_a_choice(store: Store, pulled: Path, default_model: Path) -> None:
    store.install(default_model, Ref("tiny", "Q8_0"), {}, move=False)
    with pytest.raises(EdgeLLMError, match="several types"):
        resolve_model("tiny")
    assert resolve_model("tiny:Q8_0").name == "tiny-Q8_0.gguf"
    with pytest.raises(EdgeLLMError, match="not Q6_K"):
        resolve_model("tiny:Q6_K")


def test_symlinks_out_of_the_store_are_refused(store: Store, pulled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.gguf"
    secret.write_bytes(b"GGUF not yours")
    (store.root / "evil").symlink_to(outside, target_is_directory=True)  # a folder link
    (store.root / "tiny" / "tiny-Q8_0.gguf").symlink_to(secret)  # a file link
    with pytest.raises(BadName, match="outside the model store"):
        store.path_for(Ref("evil", "Q4_0"))
    with pytest.raises(BadName, match="outside the model store"):
        store.remove(parse_ref("evil"))
    with pytest.raises(BadName, match="outside the model store"):
        store.remove(parse_ref("tiny"))
    assert [m.path for m in store.models()] == [pulled]  # the links are not models
    assert resolve_model("tiny") == pulled
    with pytest.raises(EdgeLLMError):
        resolve_model("tiny:Q8_0")
    assert secret.read_bytes() == b"GGUF not yours" and pulled.exists()


def test_paths_are_used_in_place(default_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "my model.gguf"
    shutil.copyfile(default_model, copy)
    assert resolve_model(str(copy)) == copy
    assert resolve_model(str(default_model)) == default_model  # never copied into the store
    assert resolve_model("default") == default_model


def test_unknown_names_suggest_close_ones(store: Store) -> None:
    with pytest.raises(EdgeLLMError, match="did you mean qwen1.5-0.5b-chat"):
        resolve_model("qwen1.5-0.5-chat")
    with pytest.raises(EdgeLLMError, match="not downloaded yet: run `edgellm pull qwen1.5-0.5b-chat`"):
        resolve_model("qwen1.5-0.5b-chat")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True, timeout=120)


def test_cli_list_show_run_rm_by_name(store: Store, pulled: Path) -> None:
    listing = cli("list")
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "SIZE", "PARAMS", "MODIFIED", "LOCATION"]
    assert rows[0].split()[:2] == ["tiny", "Q4_1"] and rows[0].endswith("tiny-Q4_1.gguf")
    assert any(r.startswith("default") for r in rows)
    assert "Q4_1" in cli("show", "tiny").stdout
    run = cli("run", "tiny", "Say hi", "--max-tokens", "4", "--temperature", "0")
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    for bad in ("../tiny", "tiny:../../x"):  # (every traversal attempt is checked above, without a CLI)
        refused = cli("rm", bad)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert pulled.exists()
    assert cli("rm", "tiny", "nothere").returncode == 1 and pulled.exists()  # all names checked first
    assert cli("rm", "tiny").stdout.strip() == "deleted 'tiny:Q4_1'" and not pulled.exists()


def test_registry_template_applies_to_a_pulled_file_without_one(store: Store, tmp_path: Path) -> None:
    from edgellm.models import chat_templates
    from edgellm.runtime.engine import Engine, LoadOptions
    from tests.store.tiny_gguf import write_tiny_llama

    bare = write_tiny_llama(tmp_path / "bare.gguf")  # carries no tokenizer.chat_template
    template = chat_templates.llama2("Be brief.")
    model = store.install(bare, Ref("bare", "F16"), {"chat_template": template}, move=False)
    with Engine(model.path, LoadOptions(n_ctx=256, probe=False)) as engine:
        assert engine.template == template
    with Engine(bare, LoadOptions(n_ctx=256, probe=False)) as engine:  # the same file outside the store
        assert engine.template != template


def test_show_and_list_name_f32_as_llama_cpp_and_the_registry_do(store: Store, tmp_path: Path) -> None:
    """llama.cpp's quantizer writes LLAMA_FTYPE_ALL_F32; its tools, GGUF file names and NAME:TYPE say F32."""
    import json

    from edgellm.models.gguf_file import inspect
    from quantize import quantize
    from tests.store.tiny_gguf import write_tiny_llama

    f32 = quantize(write_tiny_llama(tmp_path / "tiny-F16.gguf"), "f32", progress=False).path
    shown = cli("show", str(f32))
    assert shown.returncode == 0 and "ALL_F32" not in shown.stdout, shown.stderr
    assert "quantization    F32" in shown.stdout
    assert json.loads(cli("show", str(f32), "--json").stdout)["file_type"] == "F32"
    ref = parse_ref(f"tiny:{inspect(f32).file_type}")  # what show prints is a type NAME:TYPE accepts
    store.install(f32, ref, {}, move=False)
    rows = cli("list").stdout.splitlines()[1:]
    assert any(r.split()[:2] == ["tiny", "F32"] for r in rows) and not any("ALL_F32" in r for r in rows)
