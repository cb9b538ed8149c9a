"""The runtime on the real default model: answers, streaming, cancellation, statistics."""

from __future__ import annotations

import codecs
import subprocess
import sys
import threading
import time

import pytest

from edgellm.runtime.engine import Engine, SamplingParams, Turn

FRANCE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = SamplingParams(temperature=0, max_tokens=32)


def test_greedy_answer_knows_paris(engine: Engine) -> None:
    assert "Paris" in engine.chat(FRANCE, GREEDY).result()


def test_streamed_pieces_join_to_the_unstreamed_text(engine: Engine) -> None:
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, min_p=0.02, max_tokens=48, seed=1234)
    ask = [{"role": "user", "content": "Write a short poem about the sea."}]
    engine.reset()
    pieces = list(engine.chat(ask, params))
    engine.reset()
    whole = engine.chat(ask, params).result()
    assert len(pieces) > 5
    assert "".join(pieces) == whole


def test_same_seed_same_answer_and_other_seed_differs(engine: Engine) -> None:
    ask = [{"role": "user", "content": "Name a colour."}]
    answers = []
    for seed in (7, 7, 8, 9, 10):
        engine.reset()
        answers.append(engine.chat(ask, SamplingParams(temperature=1.5, max_tokens=24, seed=seed)).result())
    assert answers[0] == answers[1]
    assert len(set(answers[1:])) > 1


def _cancel_after(engine: Engine, turn: Turn, trigger: threading.Event, delay: float) -> dict[str, float]:
    """Cancel ``delay`` s after ``trigger``; return when cancel was called and when the turn ended."""
    times: dict[str, float] = {}

    def canceller() -> None:
        trigger.wait()
        time.sleep(delay)
        times["cancel"] = time.perf_counter()
        engine.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    return times


def test_cancel_during_generation_stops_within_half_a_second(engine: Engine) -> None:
    ask = [{"role": "user", "content": "Write a very long essay about the history of Rome."}]
    turn = engine.chat(ask, SamplingParams(temperature=0, max_tokens=-1))
    started = threading.Event()
    times = _cancel_after(engine, turn, started, 0.2)
    for _ in turn:
        started.set()
    ended = time.perf_counter()
    assert turn.stats.stop_reason == "cancelled"
    assert ended - times["cancel"] < 0.5
    assert turn.stats.generated_tokens < 200


def test_cancel_during_prompt_processing_stops_within_half_a_second(engine: Engine) -> None:
    # ~1800 prompt tokens: several seconds of prompt processing on a laptop CPU
    long = " ".join(f"item {i} is {i * 7 % 13};" for i in range(200))
    ask = [{"role": "user", "content": long + " What is item 3?"}]
    engine.reset()
    turn = engine.chat(ask, GREEDY)
    started = threading.Event()
    times = _cancel_after(engine, turn, started, 0.3)
    started.set()
    t0 = time.perf_counter()
    pieces = list(turn)
    ended = time.perf_counter()
    assert len(turn.prompt) > 1500
    assert pieces == [] and turn.stats.stop_reason == "cancelled"
    assert ended - t0 > 0.25, "the cancel arrived before prompt processing, the test proves nothing"
    assert ended - times["cancel"] < 0.5
    # the cache was rolled back: the next turn gives what a fresh engine gives
    after_cancel = engine.chat(FRANCE, GREEDY).result()
    engine.reset()
    assert after_cancel == engine.chat(FRANCE, GREEDY).result()


def test_statistics_match_the_tokenizer(engine: Engine) -> None:
    engine.reset()
    turn = engine.chat(FRANCE, GREEDY)
    text = turn.result()
    s = turn.stats
    rendered = engine.render(FRANCE)
    assert s.prompt_tokens == len(engine.tokenize(rendered, add_special=False)) == len(turn.prompt)
    assert s.cached_tokens == 0
    assert s.generated_tokens == len(turn.tokens) and engine.detokenize(turn.tokens) == text
    assert s.stop_reason == "stop" and s.generated_tokens < GREEDY.max_tokens
    assert s.prompt_tps > 0 and s.generation_tps > 0 and 0 < s.ttft_seconds < s.prompt_seconds + 1


def test_second_turn_reuses_the_cached_prefix(engine: Engine) -> None:
    engine.reset()
    first = engine.chat(FRANCE, GREEDY)
    answer = first.result()
    follow = [*FRANCE, {"role": "assistant", "content": answer}, {"role": "user", "content": "And of Italy?"}]
    second = engine.chat(follow, GREEDY)
    second.result()
    assert second.stats.cached_tokens >= first.stats.prompt_tokens
    assert second.stats.evaluated_prompt_tokens < second.stats.prompt_tokens - first.stats.prompt_tokens + 5


def test_max_tokens_stops_with_length(engine: Engine) -> None:
    ask = [{"role": "user", "content": "Tell me a long story."}]
    turn = engine.chat(ask, SamplingParams(temperature=0, max_tokens=5))
    turn.result()
    assert turn.stats.generated_tokens == 5 and turn.stats.stop_reason == "length"


def test_multibyte_characters_are_never_cut(engine: Engine) -> None:
    """A character split over several byte-level tokens is emitted whole, never as U+FFFD."""
    text = "北京是中国的首都。😀 Добрый день"
    tokens = engine.tokenize(text, add_special=False)
    partial = [engine.piece(t) for t in tokens]
    assert any(not _valid_utf8(p) for p in partial), "precondition: some character spans two tokens"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert "".join(decoder.decode(p) for p in partial) == text
    # and in a real streamed turn: the pieces decode exactly as the whole answer's bytes do
    # (a tiny model may itself emit invalid byte sequences; those show as U+FFFD in both)
    ask = [{"role": "user", "content": "请用中文回答：你好吗？"}]
    turn = engine.chat(ask, SamplingParams(temperature=0, max_tokens=40))
    pieces = list(turn)
    assert any(len(p.encode()) > len(p) for p in pieces), "the answer has multi-byte characters"
    assert "".join(pieces) == engine.detokenize(turn.tokens)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_context_overflow_drops_oldest_turns(engine: Engine) -> None:
    filler = "word " * 400
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"{i} {filler}"}, {"role": "assistant", "content": "ok"}]
    history.append({"role": "user", "content": "last question"})
    kept, dropped = engine.fit(history, reserve=64)
    assert dropped > 0 and kept[-1]["content"] == "last question"
    assert len(engine.prompt_tokens(kept)) + 64 <= engine.n_ctx


def test_fresh_process_decodes_with_the_built_llama_cpp(default_model: object) -> None:
    """The set-up's llama.cpp build decodes in a new process (an AMX/ISA crash would show here)."""
    done = subprocess.run(
        [sys.executable, "-m", "edgellm", "run", "default", "Say hi.", "--max-tokens", "8", "--temperature", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
