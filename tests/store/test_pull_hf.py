"""Issue 16 point 6: `edgellm pull hf.co/ORG/REPO[:QUANT]` fetches a GGUF file from any Hub
repository (the convention Ollama and llama.cpp's -hf share): the real CLI and the real
huggingface_hub client against the loopback Hub of tests/store/fake_hub.py."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from edgellm.commands.pull import HubRef, parse_hub_ref, pick_hub_file
from edgellm.models.store import parse_ref
from edgellm.units import human_bytes
from tests.store.fake_hub import FakeHub
from tests.store.test_pull import edgellm, env, error_line, gguf_bytes, hub, stored  # noqa: F401 (fixtures)
from tests.store.tiny_gguf import write_tiny_llama

REPO = "someone/Newer-Model-GGUF"


@pytest.fixture()
def repo(hub: FakeHub, gguf_bytes: dict[str, bytes], tmp_path: Path) -> dict[str, bytes]:  # noqa: F811
    q8 = write_tiny_llama(tmp_path / "q8.gguf", dtype=gguf.GGMLQuantizationType.Q8_0).read_bytes()
    files = {"Newer-Model-F16.gguf": gguf_bytes["F16"], "Newer-Model-Q8_0.gguf": q8, "README.md": b"# newer\n"}
    hub.add(REPO, files)
    hub.add("someone/Single-GGUF", {"single.Q8_0.gguf": q8})
    hub.add("someone/Split-GGUF", {"big-Q8_0-00001-of-00002.gguf": q8, "big-Q8_0-00002-of-00002.gguf": q8})
    hub.add("someone/no-gguf", {"model.safetensors": b"x" * 100, "config.json": b"{}"})
    return files


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m", HubRef("bartowski/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M")),
        ("huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF", HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF", None)),
        ("https://huggingface.co/org/repo:Q8_0", HubRef("org/repo", "Q8_0")),
        ("qwen1.5-0.5b-chat:Q8_0", None),
    ],
)
def test_hub_references(text: str, ref: HubRef | None) -> None:
    assert parse_hub_ref(text) == ref


def test_store_names_and_file_choice() -> None:
    assert HubRef("bartowski/Qwen2.5-0.5B-Instruct-GGUF", None).store_name == "qwen2.5-0.5b-instruct"
    assert HubRef("org/" + "A" * 63 + "-B-GGUF", None).store_name == "a" * 63  # at most 64, no dangling '-'
    parse_ref(HubRef("org/" + "A" * 80 + "-GGUF", None).store_name)  # always a valid store name
    files = {"a-Q4_K_M.gguf": 1, "a-Q8_0.gguf": 1, "a-Q4_K_S.gguf": 1, "mmproj-a-f16.gguf": 1}
    assert pick_hub_file(HubRef("o/a", None), files) == ("a-Q4_K_M.gguf", "Q4_K_M")  # Ollama's default
    assert pick_hub_file(HubRef("o/a", "Q4_K_S"), files) == ("a-Q4_K_S.gguf", "Q4_K_S")
    assert pick_hub_file(HubRef("o/a", None), {"one.q8_0.gguf": 1}) == ("one.q8_0.gguf", "Q8_0")


def test_pull_a_quant_of_any_hub_repo_then_run_it(env: dict[str, str], hub: FakeHub, repo: dict[str, bytes]) -> None:  # noqa: F811
    done = edgellm(env, "pull", f"hf.co/{REPO}:q8_0")
    assert done.returncode == 0, done.stderr
    path = stored(env, "newer-model", "Q8_0")
    assert path.read_bytes() == repo["Newer-Model-Q8_0.gguf"]
    assert len(hub.requests("GET", "/cdn/")) == 1, "only the Q8_0 file was fetched"
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source"]["repo"] == REPO and manifest["source"]["file"] == "Newer-Model-Q8_0.gguf"
    assert f"pulled newer-model:Q8_0 ({human_bytes(len(repo['Newer-Model-Q8_0.gguf']))})" in done.stdout
    ran = edgellm(env, "run", "newer-model", "hi", "--max-tokens", "2", "--temperature", "0")
    assert ran.returncode == 0, ran.stderr
    again = edgellm(env, "pull", f"hf.co/{REPO}:Q8_0")
    assert again.returncode == 0 and "already pulled" in again.stdout
    single = edgellm(env, "pull", "hf.co/someone/Single-GGUF")
    assert single.returncode == 0 and stored(env, "single", "Q8_0").is_file()


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        (f"hf.co/{REPO}", "has no Q4_K_M file; it has F16, Q8_0: pull hf.co/someone/Newer-Model-GGUF:F16"),
        (f"hf.co/{REPO}:Q2_K", "has no Q2_K file"),
        ("hf.co/someone/no-gguf", "has no .gguf files"),
        ("hf.co/someone/Split-GGUF:Q8_0", "split into several files"),
        ("hf.co/someone/missing-GGUF", "no such repository"),
        ("hf.co/../etc", "is not hf.co/ORG/REPO[:QUANT]"),
    ],
)
def test_hub_pull_refusals_are_one_line(env: dict[str, str], repo: dict[str, bytes], ref: str, says: str) -> None:  # noqa: F811
    assert says in error_line(edgellm(env, "pull", ref))


def test_run_pulls_a_registry_model_it_does_not_have(env: dict[str, str], hub: FakeHub) -> None:  # noqa: F811
    """As `ollama run`: the download size and the memory plan first (on stderr), then the answer."""
    refused = edgellm(env, "run", "tiny-chat:Q8_0", "hi", "--no-pull")
    assert "not downloaded yet" in error_line(refused) and not hub.requests("GET", "/cdn/")
    done = edgellm(env, "run", "tiny-chat:Q8_0", "hi", "--max-tokens", "2", "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert "tiny-chat is not downloaded yet: pulling tiny-chat:Q8_0" in done.stderr
    assert "MEMORY" in done.stderr and "pulled tiny-chat:Q8_0" in done.stderr, "plan and pull talk on stderr"
    assert stored(env, "tiny-chat", "Q8_0").is_file() and len(hub.requests("GET", "/cdn/")) == 1
    again = edgellm(env, "run", "tiny-chat:Q8_0", "hi", "--max-tokens", "2", "--temperature", "0")
    assert again.stdout == done.stdout and "pulling" not in again.stderr and len(hub.requests("GET", "/cdn/")) == 1
