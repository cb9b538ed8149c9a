"""`edgellm run / show / --version` as a user runs them: a real process, real output."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
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


def test_options_may_stand_between_the_model_and_the_prompt() -> None:
    """`edgellm run default --temperature 0 "..."`, as Ollama takes it (argparse alone called the
    prompt "unrecognized" there); what is truly unknown is still one line and exit 2."""
    ask = ("--temperature", "0", "--max-tokens", "12")
    between = edgellm("run", "default", *ask, "What is the capital of France?")
    before = edgellm("run", *ask, "default", "What is the capital of France?")
    assert between.returncode == 0 and between.stdout == before.stdout and "Paris" in between.stdout
    for bad in (("--bogus", "1", "Hi"), ("Hi", "and", "more")):
        done = edgellm("run", "default", *bad)
        assert done.returncode == 2 and "unrecognized arguments" in done.stderr and len(done.stderr.splitlines()) == 1


def test_run_with_nothing_on_stdin_and_no_prompt_is_an_error() -> None:
    """`edgellm run default </dev/null` (a script, a cron job): no terminal, no text: one line, exit 1."""
    done = subprocess.run([sys.executable, "-m", "edgellm", "run", "default"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("edgellm: error: the prompt is empty")
    assert ">>>" not in done.stdout


def test_run_with_endless_stdin_is_one_line() -> None:
    """`edgellm run default </dev/zero`: stdin is read up to a bound, then one line, exit 1."""
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run([sys.executable, "-m", "edgellm", "run", "default"], stdin=zero,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("edgellm: error: stdin holds more than 16 MiB")
    assert len(done.stderr.splitlines()) == 1


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
    assert done.stderr == "edgellm: the answer was cut at --max-tokens 4 (raise it, or -1 for no limit)\n"
    stats = edgellm("run", "default", "Say hi.", "--max-tokens", "4", "--verbose")
    assert "llama_model_loader" not in stats.stderr, "--verbose is edgellm's statistics only"
    assert stats.stderr.splitlines()[-1].endswith("stop: length")
    for loud in (("--verbose", "--verbose"), ("-vv",), ("--log",)):
        assert "llama_model_loader" in edgellm("run", "default", "Say hi.", "--max-tokens", "4", *loud).stderr, loud


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
    assert too_long.returncode == 1 and "Traceback" not in too_long.stderr
    *warnings, error = too_long.stderr.splitlines()
    assert error.startswith("edgellm: error:") and "raise --ctx" in error
    assert warnings == ["edgellm: warning: --ctx 24 is below llama.cpp's minimum context: raised to 256"]


def test_piped_text_follows_the_prompt_and_json_is_for_scripts() -> None:
    """`echo CODE | edgellm run MODEL "Explain this:"` answers about both; --json carries the text,
    the stop reason and the statistics; an empty piped prompt is refused before loading."""
    greedy = ("--system", "You are a helpful assistant.", "--temperature", "0", "--max-tokens", "24", "--json")
    both = json.loads(edgellm("run", "default", "What is the capital of this country?", *greedy, stdin="France").stdout)
    alone = json.loads(edgellm("run", "default", "What is the capital of this country?", *greedy).stdout)
    joined = json.loads(edgellm("run", "default", "What is the capital of this country?\n\nFrance", *greedy).stdout)
    assert both["text"] == joined["text"] != alone["text"], "the piped text is appended after a blank line"
    assert "Paris" in both["text"]
    assert both["stop_reason"] in ("stop", "length")
    assert both["stats"]["prompt_tokens"] > alone["stats"]["prompt_tokens"]
    assert both["stats"]["generated_tokens"] <= 24
    empty = edgellm("run", "default", stdin="  \n")
    assert empty.returncode == 1 and empty.stderr == (
        "edgellm: error: the prompt is empty: give PROMPT, or pipe text into `edgellm run MODEL`\n"
    )


def test_ctrl_c_during_an_answer_exits_130() -> None:
    """Ctrl-C in a terminal signals the whole process group (the runner too)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgellm", "run", "default", "Write a long story about a dragon.",
                             "--max-tokens", "-1", "--verbose"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(8)  # the answer has started
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (first + out).strip(), "what was written so far stays on stdout"
    text = err.decode()
    assert "stop: cancelled" in text and text.rstrip().endswith("edgellm: interrupted")
    assert "Traceback" not in text


def test_show_system_names_the_prompt_a_conversation_gets(default_model: Path, tmp_path: Path) -> None:
    from edgellm.commands.run import _default_system

    assert _default_system(str(default_model)).startswith("You are a helpful assistant.")  # the registry's
    other = tmp_path / "mine.gguf"
    shutil.copyfile(default_model, other)  # a file the registry does not know
    assert _default_system(str(other)) == "(no system prompt: the model's template decides)"


def test_prompt_loop_commands() -> None:
    """The >>> loop's /help, /set, /show, /clear, multi-line input, Ctrl-C at an empty prompt, /bye."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "edgellm", "run", "default", "--max-tokens", "16",
                                  "--system", "You are a helpful assistant."])  # fmt: skip
    out = b""

    def send(text: bytes, marker: bytes = b">>> ", timeout: float = 120) -> str:
        """Type ``text``; what the loop prints until ``marker`` (bounded: a silent loop fails, not hangs)."""
        nonlocal out
        start = len(out)
        os.write(fd, text)
        deadline = time.time() + timeout
        while marker not in out[start:] and time.time() < deadline:
            if select.select([fd], [], [], max(deadline - time.time(), 0))[0]:
                out += os.read(fd, 4096)
        return out[start:].decode(errors="replace")

    try:
        send(b"", b">>> ")
        assert "/set parameter NAME VALUE" in send(b"/?\n")
        assert "Set parameter 'temperature' to '0.0'" in send(b"/set parameter temperature 0\n")
        assert "Couldn't set top_p: 7 is out of range" in send(b"/set parameter top_p 7\n")
        shown = send(b"/show parameters\n")
        assert re.search(r"temperature\s+0\.0", shown) and re.search(r"max_tokens\s+16", shown)
        assert "context      " in send(b"/show info\n")
        assert "Unknown command '/nope'" in send(b"/nope\n")
        assert "Use Ctrl + d or /bye to exit." in send(b"\x03")
        first = send(b'"""What is the capital\n', b"... ")
        answer = send(b'of France?"""\n')
        assert "Paris" in answer, first + answer
        assert "Cleared session context" in send(b"/clear\n")
        send(b"/bye\n", b"")
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
