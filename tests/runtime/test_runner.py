"""The runner process: whatever llama.cpp does, it is the runner that dies, never the caller.

Deaths are real: signals sent to the real runner at each stage (load, prompt, answer), and a real
file that makes llama.cpp abort at load. The caller must get a one-line error naming the file,
how the runner died and llama.cpp's last error line, and the next turn must work again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gguf
import psutil
import pytest

from edgellm.errors import BadModelFile
from edgellm.runtime import runner
from edgellm.runtime.client import RemoteEngine, RunnerDied, RunnerProcess
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from tests import gguf_edit

ASK = [{"role": "user", "content": "Name three colours."}]
GREEDY = SamplingParams(temperature=0, max_tokens=24)
LONG = SamplingParams(temperature=0, max_tokens=400)
ESSAY = [{"role": "user", "content": "Write a very long essay about the history of Rome."}]


@pytest.fixture
def fresh(default_model: Path):
    """A runner of its own, for tests that kill it."""
    eng = RemoteEngine(default_model, LoadOptions(n_ctx=1024))
    yield eng
    eng.close()


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_answers_as_the_in_process_engine_does(remote_engine: RemoteEngine, engine: Engine) -> None:
    assert remote_engine.n_ctx == engine.n_ctx and remote_engine.template == engine.template
    for messages in (ASK, [{"role": "user", "content": "What is 2 + 2?"}]):
        remote_engine.reset()
        engine.reset()  # both read the prompt whole: a reused cache prefix may part them at a near tie
        remote, local = remote_engine.chat(messages, GREEDY), engine.chat(messages, GREEDY)
        assert remote.result() == local.result()
        assert remote.stats.generated_tokens == local.stats.generated_tokens > 0
        assert remote.stats.prompt_tokens == local.stats.prompt_tokens
        assert remote.stats.stop_reason == local.stats.stop_reason


def test_fit_and_tokenize_are_the_engines(remote_engine: RemoteEngine, engine: Engine) -> None:
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 300} for i in range(9)]
    assert remote_engine.fit(history, 200) == engine.fit(history, 200)
    assert remote_engine.tokenize("Hello there") == engine.tokenize("Hello there")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT])
def test_death_mid_answer_fails_the_turn_and_the_next_turn_works(fresh: RemoteEngine, sig: signal.Signals) -> None:
    turn = fresh.chat(ESSAY, LONG)
    pieces = iter(turn)
    next(pieces)
    old = fresh.runner.proc.pid
    os.kill(old, sig)
    with pytest.raises(RunnerDied) as caught:
        for _ in pieces:
            pass
    message = str(caught.value)
    assert str(fresh.path) in message and sig.name in message and "\n" not in message
    assert turn.text  # what had arrived is kept
    assert fresh.chat(ASK, GREEDY).result()  # a fresh runner answers the next turn
    assert fresh.runner.proc.pid != old


def test_death_during_prompt_processing(fresh: RemoteEngine) -> None:
    long_prompt = [{"role": "user", "content": "Summarise: " + "the quick brown fox jumps over the lazy dog. " * 80}]
    turn = fresh.chat(long_prompt, GREEDY)
    threading.Timer(0.15, os.kill, (fresh.runner.proc.pid, signal.SIGKILL)).start()
    with pytest.raises(RunnerDied, match="SIGKILL"):
        turn.result()
    assert turn.text == ""


def test_llama_cpp_abort_at_load_names_its_assertion(default_model: Path, tmp_path: Path) -> None:
    """A real file that parses but makes llama.cpp abort when it loads (an impossible expert count)."""
    T = gguf.GGUFValueType
    bad = gguf_edit.with_metadata(default_model, tmp_path / "experts.gguf", {
        "llama.expert_count": (T.UINT32, 8), "llama.expert_used_count": (T.UINT32, 9)})
    with pytest.raises(RunnerDied, match=r"experts\.gguf: the model runner died \(SIGABRT\): .*n_expert_used"):
        RemoteEngine(bad, LoadOptions(n_ctx=256))


def test_a_clean_refusal_keeps_its_reason(default_model: Path, tmp_path: Path) -> None:
    """llama.cpp refusing a file (no crash) reaches the caller as BadModelFile with llama.cpp's reason."""
    bad = gguf_edit.with_metadata(default_model, tmp_path / "keylen.gguf", {
        "llama.attention.key_length": (gguf.GGUFValueType.UINT32, 128)})
    with pytest.raises(BadModelFile, match=r"keylen.gguf: llama.cpp could not load the model: .*invalid n_rot"):
        RemoteEngine(bad, LoadOptions(n_ctx=256))


def test_cli_survives_a_runner_death_with_one_line_and_exit_1(default_model: Path, tmp_path: Path) -> None:
    T = gguf.GGUFValueType
    bad = gguf_edit.with_metadata(default_model, tmp_path / "experts.gguf", {
        "llama.expert_count": (T.UINT32, 8), "llama.expert_used_count": (T.UINT32, 9)})
    done = subprocess.run([sys.executable, "-m", "edgellm", "run", str(bad), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIGABRT" in lines[0] and "experts.gguf" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_frozen_runner_is_ended(default_model: Path) -> None:
    eng = RemoteEngine(default_model, LoadOptions(n_ctx=512), stall_timeout=2.0)
    try:
        turn = eng.chat(ESSAY, LONG)
        pieces = iter(turn)
        next(pieces)
        os.kill(eng.runner.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(RunnerDied, match="stopped answering for 2 s"):
            for _ in pieces:
                pass
        assert time.monotonic() - t0 < 6
        assert eng.chat(ASK, GREEDY).result()
    finally:
        eng.close()


def test_cancel_stops_prompt_processing_within_half_a_second(fresh: RemoteEngine) -> None:
    long_prompt = [{"role": "user", "content": "Summarise: " + "the quick brown fox jumps over the lazy dog. " * 90}]
    turn = fresh.chat(long_prompt, GREEDY)
    time.sleep(0.1)
    t0 = time.perf_counter()
    fresh.cancel()
    turn.result()
    assert turn.stats.stop_reason == "cancelled"
    assert time.perf_counter() - t0 < 0.5
    assert fresh.chat(ASK, GREEDY).result()  # the runner is still good


def test_a_cancel_sent_before_the_turn_starts_counts(fresh: RemoteEngine) -> None:
    busy = fresh.chat(ESSAY, SamplingParams(temperature=0, max_tokens=30))
    queued = fresh.chat(ASK, GREEDY)  # waits behind the first turn in the runner
    fresh.cancel()  # cancels the queued turn before it starts
    busy.result()
    queued.result()
    assert queued.stats.stop_reason == "cancelled" and busy.stats.stop_reason == "length"


def test_no_orphan_when_the_parent_is_killed(default_model: Path) -> None:
    code = (
        "import sys, time\n"
        "from edgellm.runtime.client import RemoteEngine\n"
        f"e = RemoteEngine({str(default_model)!r})\n"
        "print(e.runner.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()
    parent.wait()
    assert _gone(child, within=5.0)


def test_a_live_runner_is_listed_and_unlisted(default_model: Path) -> None:
    proc = RunnerProcess("chat", default_model, {"n_ctx": 256}, model="default")
    status = runner.status_file(proc.proc.pid)
    info = json.loads(status.read_text())
    assert info["model"] == "default" and info["pid"] == proc.proc.pid and info["parent_pid"] == os.getpid()
    assert info["n_ctx"] == 256 and info["kind"] == "chat"
    proc.close()
    assert not status.exists()


def test_unknown_op_is_an_error_not_a_death(remote_engine: RemoteEngine) -> None:
    with pytest.raises(Exception, match="unknown op 'nonsense'"):
        remote_engine.runner.request("nonsense").wait()
    assert remote_engine.runner.alive
