"""Issue 16 point 6: `edgellm import FILE.gguf [NAME]` adds a local file to the store; `edgellm ps`
lists the runners loaded now (a real runner process), with memory, CPU and where layers run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from edgellm.commands.import_gguf import name_from_file
from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import LoadOptions, SamplingParams
from edgellm.runtime.runner import status_file


def edgellm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "qwen2.5-0.5b-instruct"),
        ("llama-2-7b-chat.q8_0.gguf", "llama-2-7b-chat"),
        ("My Model (v2).gguf", "my-model-v2"),
        ("a..b-Q8_0.gguf", "a.b"),
        ("x" * 70 + "-" + "y" * 10 + ".gguf", "x" * 64),  # a store name is at most 64 characters
    ],
)
def test_names_from_gguf_file_names(file: str, name: str) -> None:
    assert name_from_file(Path(file)) == name


def test_import_then_run_list_and_rm_by_name(default_model: Path, tmp_path: Path) -> None:
    link = tmp_path / "my-smol.gguf"
    link.symlink_to(default_model)  # imported under the name it was given, not the target's
    done = edgellm("import", str(link))
    assert done.returncode == 0, done.stderr
    assert "imported my-smol:Q4_1 (98.4 MB)" in done.stdout
    listed = {r["name"]: r for r in json.loads(edgellm("list", "--json").stdout)}
    assert listed["my-smol"]["type"] == "Q4_1" and listed["my-smol"]["size"] == default_model.stat().st_size
    greedy = ("What is the capital of France?", "--system", "You are a helpful assistant.", "--temperature", "0",
              "--max-tokens", "16")  # fmt: skip
    answer = edgellm("run", "my-smol", *greedy)
    assert answer.returncode == 0 and answer.stdout.strip()
    assert answer.stdout == edgellm("run", "default", *greedy).stdout
    again = edgellm("import", str(default_model), "my-smol")
    assert again.returncode == 1 and "already in the store" in again.stderr and again.stderr.count("\n") == 1
    assert edgellm("import", str(default_model), "my-smol", "--force").returncode == 0
    assert edgellm("rm", "my-smol").returncode == 0 and default_model.is_file(), "the original stays"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["/no/such.gguf"], "no such file"),
        (["{model}", "../evil"], "is not a model name"),
        (["{model}", "x:Q8_0"], "is a Q4_1 file, not Q8_0"),
        (["{model}", "default"], "the bundled model's name"),
    ],
)
def test_import_refusals_are_one_line(default_model: Path, args: list[str], says: str) -> None:
    done = edgellm("import", *(a.format(model=default_model) for a in args))
    assert done.returncode == 1 and says in done.stderr and done.stderr.count("\n") == 1


def test_import_of_a_text_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("hello")
    done = edgellm("import", str(fake))
    assert done.returncode == 1 and "not a GGUF file" in done.stderr


def test_ps_lists_a_live_runner_and_forgets_a_dead_one(default_model: Path) -> None:
    assert json.loads(edgellm("ps", "--json").stdout) == []
    engine = RemoteEngine(default_model, LoadOptions(n_ctx=512), model="default")
    try:
        pid = engine.runner.proc.pid
        "".join(engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4)))
        (row,) = json.loads(edgellm("ps", "--json").stdout)
        assert row["pid"] == pid and row["parent_pid"] == os.getpid() and row["name"] == "SmolLM2-135M-Instruct"
        assert row["kind"] == "chat" and row["n_ctx"] == 512 and row["processor"] == "100% CPU"
        rss = psutil.Process(pid).memory_info().rss
        assert 0.5 * rss < row["rss"] < 2 * rss and row["cpu_percent"] >= 0
        table = edgellm("ps").stdout.splitlines()
        assert table[0].split() == ["NAME", "PID", "KIND", "MEMORY", "CPU", "PROCESSOR", "CONTEXT", "STARTED"]
        assert table[1].split()[:3] == ["SmolLM2-135M-Instruct", str(pid), "chat"] and "100% CPU" in table[1]
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = status_file(dead.pid)  # what a runner killed with -9 leaves
        stale.write_text(json.dumps({**json.loads(status_file(pid).read_text()), "pid": dead.pid}))
        assert [r["pid"] for r in json.loads(edgellm("ps", "--json").stdout)] == [pid]
        assert not stale.exists()
    finally:
        engine.close()
    assert json.loads(edgellm("ps", "--json").stdout) == [], "a closed runner is gone from the list"
