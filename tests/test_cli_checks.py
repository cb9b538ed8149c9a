"""Issue 16: options checked up front in one line, helpful errors worded the same by every verb, one
size convention, help that shows defaults. The real CLI in a child process, as a user runs it."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.cli import build_parser
from tests.store.tiny_gguf import write_tiny_llama

GPU_WARNING = "edgellm: warning: no GPU in this llama.cpp build or machine: --gpu-layers changes nothing"


def edgellm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], input=stdin, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_edgellm_alone_prints_the_help() -> None:
    done = edgellm()
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: edgellm") and "run" in done.stdout and "pull" in done.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--temperature", "-3"], "--temperature: -3 is out of range: it must be at least 0"),
        (["--top-p", "7"], "--top-p: 7 is out of range: it must be at least 0 and at most 1"),
        (["--min-p", "nan"], "--min-p: nan is out of range"),
        (["--threads", "0"], "--threads: 0 is out of range: it must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens: 0 is out of range: it must be at least 1 (or -1)"),
        (["--ctx", "-5"], "--ctx: -5 is out of range: it must be at least 1"),
        (["--top-k", "many"], "--top-k: 'many' is not a whole number"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_loading(args: list[str], says: str) -> None:
    done = edgellm("run", "default", "hi", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and says in done.stderr and "edgellm run --help" in done.stderr


def test_warnings_for_threads_and_context_name_both_numbers() -> None:
    import psutil

    cpus = psutil.cpu_count()
    done = edgellm("run", "default", "Say hi.", "--max-tokens", "2", "--threads", str(cpus + 6), "--ctx", "9000")
    assert done.returncode == 0, done.stderr
    assert f"--threads {cpus + 6} is more than this machine's {cpus} CPUs" in done.stderr
    assert "--ctx 9000 is more than the 8192 tokens this model was trained for" in done.stderr
    assert "--ctx 8192 or less" in done.stderr
    small = edgellm("run", "default", "Say hi.", "--max-tokens", "2", "--ctx", "24")
    assert small.returncode == 0 and "--ctx 24 is below llama.cpp's minimum context: raised to 256" in small.stderr


def test_every_option_of_every_verb_shows_its_default() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for verb, p in sub.choices.items():
        formatter = p._get_formatter()
        for action in p._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS, []) or not action.help:
                continue
            if "default" not in formatter._get_help_string(action):  # what --help prints for it
                missing.append(f"{verb} {action.option_strings[-1]}")
    assert not missing
    run_help = sub.choices["run"].format_help()
    assert "randomness; 0 = greedy (default: 0.8)" in re.sub(r"\s+", " ", run_help)
    for verb in ("run", "chat", "plan", "show", "bench"):
        assert "all or auto" in re.sub(r"\s+", " ", sub.choices[verb].format_help()), verb


def test_typo_in_a_model_name_suggests_default_and_list_all_has_it() -> None:
    done = edgellm("run", "defualt", "hi")
    assert done.returncode == 1 and "unknown model 'defualt' (did you mean default?)" in done.stderr
    assert done.stderr.count("\n") == 1
    rows = json.loads(edgellm("list", "--all", "--json").stdout)
    assert rows[0]["name"] == "default" and rows[0]["pulled"] == ["Q4_1"] and rows[0]["context"] == 8192
    assert re.search(r"^default\s+134\.5M\s+8192\s+apache-2.0\s+bundled\s+Q4_1$", edgellm("list", "--all").stdout,
                     re.M)  # fmt: skip


def test_a_checkpoint_folder_is_pointed_to_quantize(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    done = edgellm("run", str(tmp_path), "hi")
    assert done.returncode == 1 and f"`edgellm quantize {tmp_path}`" in done.stderr and "Traceback" not in done.stderr


def test_plan_honours_the_type_and_says_the_context() -> None:
    one = json.loads(edgellm("plan", "qwen1.5-0.5b-chat:Q5_K_M", "--json").stdout)
    assert [r["type"].removesuffix(" *") for r in one["rows"]] == ["Q5_K_M"]
    every = json.loads(edgellm("plan", "qwen1.5-0.5b-chat", "--json").stdout)
    assert len(every["rows"]) > 1 and one["rows"][0] in every["rows"]
    assert edgellm("plan", "default").stdout.splitlines()[0].endswith(
        ": context 4096 of 8192 (the default; --ctx N plans another)"
    )
    assert ": context 2048 of 8192" in edgellm("plan", "default", "--ctx", "2048").stdout


def test_one_size_for_one_file_everywhere(default_model: Path) -> None:
    """show, plan, list and bench print the same file at the same size, in the same units."""
    size = f"{default_model.stat().st_size / 1e6:.1f} MB"
    assert f"file size       {size} " in edgellm("show", "default").stdout
    assert re.search(rf"^Q4_1\s+{size}\s", edgellm("plan", "default").stdout, re.M)
    assert re.search(rf"^default\s+Q4_1\s+{size}\s", edgellm("list").stdout, re.M)
    bench = edgellm("bench", "default", "-p", "16", "-n", "4", "-r", "1", "--gpu-layers", "0,all,2")
    assert bench.returncode == 0, bench.stderr
    assert f"| {size} |" in bench.stdout
    rows = [line for line in bench.stdout.splitlines() if line.startswith("| llama")]
    assert len(rows) == 1, "one CPU run, not three labels of the same run"
    assert bench.stderr.count(GPU_WARNING) == 1


def test_gpu_layers_without_a_gpu_warns_the_same_in_every_verb() -> None:
    for args in (["show", "default"], ["plan", "default"], ["run", "default", "hi", "--max-tokens", "1"]):
        done = edgellm(*args, "--gpu-layers", "2")
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(GPU_WARNING) == 1, args
        assert GPU_WARNING not in edgellm(*args).stderr


def test_eval_checks_the_vocabularies_before_scoring(tmp_path: Path) -> None:
    other = write_tiny_llama(tmp_path / "tiny.gguf")
    done = edgellm("eval", "default", "--ref", str(other))
    assert done.returncode == 1 and "different vocabularies" in done.stderr
    assert "chunk" not in done.stderr, "refused before the reference was scored"


def test_bench_interrupted_prints_what_it_measured_and_exits_130() -> None:
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "edgellm", "bench", "default", "--threads", "1,2", "-p", "16",
                             "-n", "4", "-r", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stderr is not None
    seen = ""
    while "benchmark 2/2" not in seen:  # the first setting is measured, the second has started
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: 1 of 2 settings measured" in err and "Traceback" not in err
    rows = [line for line in out.splitlines() if line.startswith("| llama")]
    assert len(rows) == 1 and "|       1 |" in rows[0], out
