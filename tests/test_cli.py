"""`edgellm run / show / --version` as a user runs them: a real process, real output."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

from edgellm import __version__


def edgellm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], input=stdin, capture_output=True, text=True,
                          timeout=180)


def test_version() -> None:
    done = edgellm("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"edgellm {__version__}"


def test_run_with_prompt_streams_the_answer_and_exits_0() -> None:
    done = edgellm("run", "default", "What is the capital of France?", "--system", "You are a helpful assistant.",
                   "--temperature", "0", "--max-tokens", "24", "--verbose")
    assert done.returncode == 0
    assert "Paris" in done.stdout
    stats = done.stderr.strip().splitlines()[-1]
    assert stats.startswith("prompt:") and "tok/s" in stats and "first token" in stats


def test_run_reads_the_prompt_from_stdin() -> None:
    done = edgellm("run", "default", "--system", "You are a helpful assistant.", "--temperature", "0",
                   "--max-tokens", "24", stdin="What is the capital of France?")
    assert done.returncode == 0 and "Paris" in done.stdout


def test_run_prompt_loop_in_a_terminal() -> None:
    """Without a prompt, in a terminal: a multi-turn loop that remembers the conversation."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the real CLI on a pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "edgellm", "run", "default", "--temperature", "0",
                                  "--max-tokens", "24", "--system", "You are a helpful assistant.", "--verbose"])
    out = b""

    def read_until(marker: bytes, count: int, timeout: float = 60) -> None:
        nonlocal out
        deadline = time.time() + timeout
        while out.count(marker) < count and time.time() < deadline:
            out += os.read(fd, 4096)

    read_until(b">>> ", 1)
    os.write(fd, b"What is the capital of France?\n")
    read_until(b">>> ", 2)
    os.write(fd, b"And of Italy?\n")
    read_until(b">>> ", 3)
    os.write(fd, b"/bye\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "Paris" in text.split(">>> ")[1]
    stats = re.findall(r"prompt: (\d+) tokens \((\d+) cached\)", text)
    assert len(stats) == 2
    (first, _), (second, cached) = [(int(a), int(b)) for a, b in stats]
    assert second > first + 5 and cached >= first, "the second turn carries (and reuses) the first"


def test_show_prints_the_model_card(default_model: Path) -> None:
    done = edgellm("show", "default")
    assert done.returncode == 0
    for word in ("architecture", "llama", "parameters", "Q4_1", "context length", "layers", "vocabulary",
                 "chat template", "<|im_start|>"):
        assert word in done.stdout


def test_show_json_matches_the_file(default_model: Path) -> None:
    import gguf

    info = json.loads(edgellm("show", str(default_model), "--json").stdout)
    reader = gguf.GGUFReader(default_model)
    field = lambda key: reader.get_field(key).contents()  # noqa: E731
    assert info["architecture"] == field("general.architecture") == "llama"
    assert info["block_count"] == field("llama.block_count")
    assert info["head_count"] == field("llama.attention.head_count")
    assert info["head_count_kv"] == field("llama.attention.head_count_kv")
    assert info["context_length"] == field("llama.context_length")
    assert info["vocab_size"] == len(reader.get_field("tokenizer.ggml.tokens").data)
    assert info["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    assert info["file_size"] == default_model.stat().st_size
    assert info["file_type"] == "Q4_1"
    assert info["chat_template"] == field("tokenizer.chat_template")


def test_llama_cpp_is_silent_without_verbose() -> None:
    done = edgellm("run", "default", "Say hi.", "--max-tokens", "4")
    assert done.returncode == 0 and done.stdout.strip()
    assert done.stderr == ""
    loud = edgellm("run", "default", "Say hi.", "--max-tokens", "4", "--verbose")
    assert "llama_model_loader" in loud.stderr, "--verbose shows llama.cpp's own log"


def test_show_reports_where_layers_run() -> None:  # the wording itself: tests/tui/test_parts.py
    info = json.loads(edgellm("show", "default", "--gpu-layers", "12", "--json").stdout)
    assert info["gpu_layers"] == 12 and info["processor"] == "100% CPU"  # CI has no GPU build
    auto = edgellm("show", "default", "--gpu-layers", "auto", "--json")
    assert json.loads(auto.stdout)["gpu_layers"] == 0
    assert auto.stderr.strip() == (
        "edgellm: --gpu-layers auto: 0 layers on the GPU (this llama.cpp build has no GPU offload)"
    )
    bad = edgellm("show", "default", "--gpu-layers", "many")
    assert bad.returncode == 1 and "--gpu-layers takes" in bad.stderr and "Traceback" not in bad.stderr


def test_show_advises_against_q4_1_and_q5_1_on_cuda(default_model: Path) -> None:
    from edgellm.runtime.placement import offload_note

    assert "prefer Q4_K_M" in offload_note("Q4_1", ["CUDA0"], 12)
    assert "on Q5_1" in offload_note("q5_1", ["CUDA0", "CUDA1"], -1)
    assert offload_note("Q4_1", ["CUDA0"], 0) is None, "nothing offloaded"
    assert offload_note("Q4_K_M", ["CUDA0"], -1) is None
    assert offload_note("Q4_1", ["Metal"], -1) is None, "measured on CUDA only"
    shown = edgellm("show", "default", "--gpu-layers", "all").stdout
    assert "processor       100% CPU" in shown and "note" not in shown  # CI has no GPU build


def test_small_context_never_aborts() -> None:
    """llama.cpp caps its batch at a small context: a prompt longer than that batch is fed in
    pieces (an over-long batch is a GGML_ASSERT abort), and one longer than the context is a
    one-line error."""
    fits = edgellm("run", "default", "word " * 200, "--ctx", "24", "--max-tokens", "4")
    assert fits.returncode == 0, fits.stderr
    too_long = edgellm("run", "default", "word " * 400, "--ctx", "24", "--max-tokens", "4")
    assert too_long.returncode == 1 and "raise --ctx" in too_long.stderr and too_long.stderr.count("\n") == 1
