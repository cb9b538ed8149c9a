"""The thread governor: llama.cpp's thread count follows the cores other processes leave free.

Real llama.cpp contexts and real busy processes; the counts are read back from llama.cpp
(`llama_n_threads`). Speeds are measured in bench/bench_threads.py, never asserted here."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from edgellm.runtime import threads
from edgellm.runtime.engine import Engine, LoadOptions

BURN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"


@pytest.mark.parametrize(
    ("cores", "others_busy", "most", "threads_"),
    [
        (2, 0.0, 2, 2),  # idle: every core, as before
        (2, 0.3, 2, 2),  # a little background work takes no core
        (2, 0.67, 2, 1),  # a burner beside 2 spinning threads gets ~2/3 of a core
        (2, 1.0, 2, 1),
        (2, 2.0, 2, 1),  # never fewer than 1
        (8, 2.6, 8, 5),
        (8, 0.0, 4, 4),  # never more than asked
    ],
)
def test_threads_are_the_cores_other_work_leaves(cores: int, others_busy: float, most: int, threads_: int) -> None:
    assert threads.free_cores(cores, others_busy, most) == threads_


@pytest.fixture
def burner() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", BURN])
    yield proc
    proc.kill()
    proc.wait()


def test_the_cpu_watch_sees_a_busy_process(burner: subprocess.Popen) -> None:
    watch = threads.CpuWatch()
    time.sleep(1.0)
    assert watch.others_busy() >= 0.5  # the burner alone (it gets at least half a core of 2)


def until(condition, seconds: float = 10.0) -> bool:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(threads.physical_cores() < 2, reason="one core: nothing to lower")
def test_a_default_context_drops_to_the_free_cores_while_a_core_is_taken(
    default_model: Path, burner: subprocess.Popen
) -> None:
    with Engine(default_model, LoadOptions(n_ctx=512, probe=False)) as engine:
        assert engine.n_threads == threads.physical_cores()
        assert until(lambda: llama_cpp.llama_n_threads(engine._ctx) < engine.n_threads)
        assert llama_cpp.llama_n_threads_batch(engine._ctx) == llama_cpp.llama_n_threads(engine._ctx)
        text = engine.chat([{"role": "user", "content": "What is the capital of France?"}]).result()
        assert text  # it still answers with the lowered count


def test_threads_given_by_the_user_are_kept(default_model: Path, burner: subprocess.Popen) -> None:
    with Engine(default_model, LoadOptions(n_ctx=512, probe=False, n_threads=2)) as engine:
        assert getattr(engine, "_governor", None) is None
        time.sleep(2 * threads.INTERVAL + 0.5)
        assert llama_cpp.llama_n_threads(engine._ctx) == 2


def test_the_off_switch_keeps_the_count_fixed(default_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.OFF_SWITCH, "off")
    with Engine(default_model, LoadOptions(n_ctx=512, probe=False)) as engine:
        assert getattr(engine, "_governor", None) is None


@pytest.mark.skipif(threads.physical_cores() < 2 or not threads.adaptive(), reason="no governor: one core, or off")
def test_closing_stops_the_governor_before_the_context_goes(default_model: Path) -> None:
    engine = Engine(default_model, LoadOptions(n_ctx=512, probe=False))
    governor = engine._governor
    assert governor is not None
    engine.close()
    assert not governor._thread.is_alive()


def test_the_engine_answers_the_same_with_one_thread_as_with_two(default_model: Path) -> None:
    """Lowering the count mid-conversation must not change a greedy answer: each output of
    llama.cpp's CPU kernels is computed by one thread, whatever the count."""
    from edgellm.runtime.engine import SamplingParams

    question = [{"role": "user", "content": "Name three colours."}]
    answers = []
    for n in (1, 2):
        with Engine(default_model, LoadOptions(n_ctx=512, probe=False, n_threads=n)) as engine:
            answers.append(engine.chat(question, SamplingParams(temperature=0, max_tokens=40)).result())
    assert answers[0] == answers[1]
