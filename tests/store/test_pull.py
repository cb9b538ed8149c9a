"""`edgellm pull` end to end: the real CLI and the real huggingface_hub client against a loopback
server that answers like the Hub (tests/store/fake_hub.py). Nothing inside the client is mocked;
the CLI runs in a child process so HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE are read as a user's
shell would set them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.fake_hub import GOOD_TOKEN, FakeHub
from tests.store.tiny_gguf import write_tiny_llama

GGUF_REPO = "edgellm-test/Tiny-Chat-GGUF"
GATED_REPO = "edgellm-test/Tiny-Gated-GGUF"
CKPT_REPO = "edgellm-test/tiny-llama-hf"
USER_REGISTRY = f"""
[families.tiny]
architecture = "llama"
license = "apache-2.0"
recommended = "F16"
template = "llama2"

[shapes.tiny]
params = 300_000
layers = 2
embedding = 64
heads = 4
kv_heads = 2
ffn = 128
vocab = 512

[models.tiny-chat]
family = "tiny"
shape = "tiny"
repo = "edgellm-test/tiny-chat-hf"
context = 4096
gguf_repo = "{GGUF_REPO}"
gguf_file = "tiny-chat.{{TYPE}}.gguf"
gguf_types = ["F16", "Q8_0", "Q4_K_M"]

[models.big-chat]
family = "tiny"
shape = "tiny"
repo = "edgellm-test/big-chat-hf"
context = 4096
gguf_repo = "{GGUF_REPO}"
gguf_file = "big-chat.{{TYPE}}.gguf"
gguf_types = ["F16"]

[models.tiny-gated]
family = "tiny"
shape = "tiny"
repo = "edgellm-test/tiny-gated-hf"
gated = true
context = 4096
gguf_repo = "{GATED_REPO}"
gguf_file = "tiny-gated.{{TYPE}}.gguf"
gguf_types = ["F16"]

[models.tiny-llama]
family = "tiny"
shape = "tiny"
repo = "{CKPT_REPO}"
context = 4096
recommended = "Q8_0"
"""


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("gguf")
    f16 = write_tiny_llama(folder / "f16.gguf", seed=1).read_bytes()
    other = write_tiny_llama(folder / "other.gguf", seed=2).read_bytes()
    # over huggingface_hub's 10 MiB download chunk, so a cut mid-file leaves bytes to resume from
    big = write_tiny_llama(folder / "big.gguf", layers=1, embedding=256, vocab=24000, seed=3).read_bytes()
    return {"F16": f16, "other": other, "big": big}


@pytest.fixture()
def hub(gguf_bytes: dict[str, bytes]) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(
        GGUF_REPO,
        {
            "tiny-chat.F16.gguf": gguf_bytes["F16"],
            "tiny-chat.Q8_0.gguf": gguf_bytes["other"],
            "big-chat.F16.gguf": gguf_bytes["big"],
            "README.md": b"# tiny\n",
            ".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
        },
    )
    fake.add(GATED_REPO, {"tiny-gated.F16.gguf": gguf_bytes["F16"]}, gated=True)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture()
def env(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    home = tmp_path / "edgellm"
    (home / "config").mkdir(parents=True)
    (home / "config" / "models.toml").write_text(USER_REGISTRY)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {
        **base,
        "EDGELLM_HOME": str(home),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }


def edgellm(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgellm", *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line, no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgellm: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def stored(env: dict[str, str], name: str, qtype: str) -> Path:
    return Path(env["EDGELLM_HOME"]) / "models" / name / f"{name}-{qtype}.gguf"


def cdn_gets(hub: FakeHub) -> list[str | None]:
    return [r.range for r in hub.requests("GET", "/cdn/")]


def test_pull_fetches_only_the_listed_file_into_the_store(env: dict[str, str], hub: FakeHub, gguf_bytes) -> None:
    proc = edgellm(env, "pull", "tiny-chat:F16")
    assert proc.returncode == 0, proc.stderr
    path = stored(env, "tiny-chat", "F16")
    assert path.read_bytes() == gguf_bytes["F16"]
    assert len(cdn_gets(hub)) == 1  # the Q8_0 file and the README were never fetched
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source"]["repo"] == GGUF_REPO
    assert manifest["source"]["commit"] == hub.repos[GGUF_REPO].commit
    assert "[INST]" in manifest["chat_template"]  # the file has none: the registry's llama2 template
    assert not list(path.parent.parent.glob(".partial/*"))  # nothing half-written left behind

    listing = edgellm(env, "list")
    row = next(line for line in listing.stdout.splitlines() if line.startswith("tiny-chat"))
    assert row.split()[:2] == ["tiny-chat", "F16"]
    assert edgellm(env, "show", "tiny-chat", "--json").returncode == 0

    again = edgellm(env, "pull", "tiny-chat:F16")
    assert again.returncode == 0 and "already pulled" in again.stdout
    assert len(cdn_gets(hub)) == 1

    gone = edgellm(env, "rm", "tiny-chat")
    assert gone.returncode == 0 and gone.stdout.strip() == "deleted 'tiny-chat:F16'"
    assert not path.exists()


def hub_cache_download(env: dict[str, str], repo: str, filename: str, **extra: str) -> Path:
    """Another tool fetching a file into the Hugging Face cache (huggingface_hub itself)."""
    code = f"from huggingface_hub import hf_hub_download; print(hf_hub_download({repo!r}, {filename!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip())


def test_a_file_in_the_hub_cache_is_linked_not_downloaded(env: dict[str, str], hub: FakeHub) -> None:
    cached = hub_cache_download(env, GGUF_REPO, "tiny-chat.F16.gguf")
    before = len(cdn_gets(hub))
    proc = edgellm(env, "pull", "tiny-chat:F16")
    assert proc.returncode == 0, proc.stderr
    assert len(cdn_gets(hub)) == before
    path = stored(env, "tiny-chat", "F16")
    assert path.stat().st_ino == cached.resolve().stat().st_ino  # one copy on disk
    gone = edgellm(env, "rm", "tiny-chat")
    assert f"hf cache rm model/{GGUF_REPO}" in gone.stdout  # the bytes are still in the Hub cache: say so
    assert cached.exists()


def test_dropped_connection_resumes_with_a_range_request(env: dict[str, str], hub: FakeHub, gguf_bytes) -> None:
    hub.cut_once.add("big-chat.F16.gguf")
    proc = edgellm(env, "pull", "big-chat:F16")
    assert proc.returncode == 0, proc.stderr
    ranges = cdn_gets(hub)
    assert len(ranges) == 2 and ranges[0] is None, ranges
    resumed_at = int(ranges[1].removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at < len(gguf_bytes["big"])
    assert stored(env, "big-chat", "F16").read_bytes() == gguf_bytes["big"]


def test_a_pull_stopped_with_ctrl_c_resumes_next_time(env: dict[str, str], hub: FakeHub, gguf_bytes) -> None:
    hub.stall.add("big-chat.F16.gguf")  # the CDN sends half, then waits
    child = subprocess.Popen([sys.executable, "-m", "edgellm", "pull", "big-chat:F16"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    staging = Path(env["EDGELLM_HOME"]) / "models" / ".partial"
    deadline = time.monotonic() + 60
    while not [p for p in staging.glob("*.part") if p.stat().st_size] and time.monotonic() < deadline:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    hub.release()
    assert child.returncode == 130 and "Traceback" not in err, err
    [part] = staging.glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(gguf_bytes["big"])

    proc = edgellm(env, "pull", "big-chat:F16")
    assert proc.returncode == 0, proc.stderr
    assert "resuming big-chat.F16.gguf" in proc.stdout
    assert cdn_gets(hub)[-1] == f"bytes={kept}-"
    assert stored(env, "big-chat", "F16").read_bytes() == gguf_bytes["big"]
    assert not list(staging.iterdir())


def test_a_corrupt_partial_file_is_caught_by_the_checksum(env: dict[str, str], hub: FakeHub, gguf_bytes) -> None:
    import hashlib

    staging = Path(env["EDGELLM_HOME"]) / "models" / ".partial"
    staging.mkdir(parents=True)
    sha = hashlib.sha256(gguf_bytes["big"]).hexdigest()
    (staging / f"{sha}.part").write_bytes(b"\0" * (len(gguf_bytes["big"]) // 2))  # not a prefix of the file
    line = error_line(edgellm(env, "pull", "big-chat:F16"))
    assert "does not match the Hub's SHA-256" in line
    assert not list(staging.glob("*.part"))  # discarded: the next pull starts clean
    assert edgellm(env, "pull", "big-chat:F16").returncode == 0


def test_gated_repo_is_explained_in_one_line(env: dict[str, str], hub: FakeHub) -> None:
    line = error_line(edgellm(env, "pull", "tiny-gated"))
    assert GATED_REPO in line and "gated" in line and "no HF_TOKEN" in line
    line = error_line(edgellm(env, "pull", "tiny-gated", HF_TOKEN="hf_someone_else"))
    assert "not been granted" in line
    statuses = [r.authorization for r in hub.requests("HEAD", "/resolve/")]
    assert statuses[-1] == "Bearer hf_someone_else"  # HF_TOKEN reached the server
    assert edgellm(env, "pull", "tiny-gated", HF_TOKEN=GOOD_TOKEN).returncode == 0
    assert not list((Path(env["EDGELLM_HOME"]) / "models").glob(".partial/*"))


def test_missing_file_is_explained_in_one_line(env: dict[str, str], hub: FakeHub) -> None:
    line = error_line(edgellm(env, "pull", "tiny-chat:Q4_K_M"))  # listed in the registry, not in the repo
    assert f"{GGUF_REPO}/tiny-chat.Q4_K_M.gguf" in line and "no such file" in line
    assert hub.requests("HEAD", "tiny-chat.Q4_K_M.gguf")  # the Hub's own 404 (X-Error-Code: EntryNotFound)
    assert not stored(env, "tiny-chat", "Q4_K_M").exists()


def test_no_network_is_explained_in_one_line(env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    line = error_line(edgellm(env, "pull", "tiny-chat:F16", HF_ENDPOINT=dead))
    assert f"cannot reach {dead}" in line
    assert time.monotonic() - start < 30


def test_offline_mode_uses_the_hub_cache(env: dict[str, str], hub: FakeHub, gguf_bytes) -> None:
    hub_cache_download(env, GGUF_REPO, "tiny-chat.F16.gguf")
    before = len(hub.log)
    proc = edgellm(env, "pull", "tiny-chat:F16", HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    assert len(hub.log) == before  # not one request
    assert stored(env, "tiny-chat", "F16").read_bytes() == gguf_bytes["F16"]
    line = error_line(edgellm(env, "pull", "tiny-chat:Q8_0", HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE" in line and len(hub.log) == before


def test_pull_refuses_what_cannot_fit_before_downloading(env: dict[str, str], hub: FakeHub) -> None:
    line = error_line(edgellm(env, "pull", "llama-2-70b-chat:F16", HF_ENDPOINT=hub.endpoint))
    assert "of RAM" in line and "Try" in line
    assert hub.log == []


def test_unknown_and_unsafe_names_are_refused(env: dict[str, str], hub: FakeHub) -> None:
    assert "did you mean tiny-chat" in error_line(edgellm(env, "pull", "tiny-chta"))
    for bad in ("../x", "/etc/passwd", "a\\b", "tiny-chat:../../x"):
        line = error_line(edgellm(env, "pull", bad))
        assert "not a model name" in line or "unknown quantization type" in line, line
    assert hub.log == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny Llama-2 checkpoint in the Hub's layout (sharded safetensors + index + tokenizer), plus
    decoys a conversion must not download: a second copy of the weights as .bin, Meta's original."""
    from tests.quantize import builders

    folder = builders.build(
        tmp_path_factory.mktemp("hf") / "tiny-llama",
        builders.LLAMA2_CONFIG,
        builders.train_spm(600),
        layout="safetensors-sharded",
    )
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"decoy: a second copy of the weights"
    files["original/consolidated.00.pth"] = b"decoy: Meta's original checkpoint"
    files["README.md"] = b"# tiny llama\n"
    return files


def test_pull_converts_a_checkpoint_downloading_only_what_conversion_reads(
    env: dict[str, str], hub: FakeHub, checkpoint: dict[str, bytes]
) -> None:
    hub.add(CKPT_REPO, checkpoint)
    proc = edgellm(env, "pull", "tiny-llama")  # registry: no GGUF repo, recommended Q8_0
    assert proc.returncode == 0, proc.stderr
    assert f"`hf cache rm model/{CKPT_REPO}` frees it" in proc.stdout
    fetched = {r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in hub.requests("HEAD", "/resolve/")}
    assert fetched == {n for n in checkpoint if n.endswith((".safetensors", ".json", ".model"))}
    assert not hub.requests(contains="pytorch_model.bin") and not hub.requests(contains="consolidated")
    path = stored(env, "tiny-llama", "Q8_0")
    from edgellm.models.gguf_file import inspect

    info = inspect(path)
    assert info.file_type == "Q8_0" and info.architecture == "llama"
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source"] == {
        "endpoint": hub.endpoint,
        "repo": CKPT_REPO,
        "commit": hub.repos[CKPT_REPO].commit,
        "converted_to": "Q8_0",
    }
    run = edgellm(env, "run", "tiny-llama", "Hello", "--max-tokens", "4", "--temperature", "0")
    assert run.returncode == 0, run.stderr
    assert not list((Path(env["EDGELLM_HOME"]) / "models" / ".partial").iterdir())
