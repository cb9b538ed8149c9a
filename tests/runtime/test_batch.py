"""The continuous-batching engine in process: shared prefixes copied between sequences, a long
prompt interleaved with a running stream chunk by chunk, cancel, the bounded queue, stop strings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgellm.errors import ContextOverflow
from edgellm.runtime.batch import BatchEngine, BatchRequest, Outbox, QueueFull, StopMatcher
from edgellm.runtime.engine import LoadOptions, SamplingParams

SYSTEM = "You are a helpful assistant who answers briefly and precisely. " * 4
GREEDY = SamplingParams(temperature=0, max_tokens=16)
ENDLESS = SamplingParams(temperature=0, max_tokens=2000)


@dataclass
class Events:
    """What a request emitted, with arrival times."""

    key: object = field(default_factory=object)
    pieces: list[tuple[float, str]] = field(default_factory=list)
    done: dict = field(default_factory=dict)
    ended: threading.Event = field(default_factory=threading.Event)

    def __call__(self, event: str, **payload: object) -> None:
        if event == "piece":
            self.pieces.append((time.perf_counter(), payload["text"]))
        elif event in ("done", "error"):
            self.done = {"event": event, **payload}
            self.ended.set()

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.pieces)

    def wait(self) -> Events:
        assert self.ended.wait(300), "the request never ended"
        return self

    def first_piece(self) -> None:
        deadline = time.monotonic() + 300
        while not self.pieces:
            assert time.monotonic() < deadline and not self.ended.is_set(), self.done
            time.sleep(0.005)


def open_engine(model: Path, **kw: object) -> BatchEngine:
    return BatchEngine(model, LoadOptions(n_ctx=2048, n_threads=1, probe=False), **kw)


@pytest.fixture(scope="module")
def batch(default_model: Path) -> Iterator[BatchEngine]:
    engine = open_engine(default_model, slots=2, chunk=32, stream_interval=0)  # a piece per token, to count steps
    yield engine
    engine.close()


def submit(engine: BatchEngine, question: str, params: SamplingParams = GREEDY, **kw: object) -> Events:
    events = Events()
    prompt = engine.engine.prompt_tokens([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    engine.submit(events.key, BatchRequest(prompt, params, **kw), events)
    return events


def test_prefix_is_copied_from_a_running_sequence(default_model: Path, batch: BatchEngine) -> None:
    """B shares A's long system prompt; A still runs in slot 0, so B gets slot 1 with A's cells
    copied (unified KV cache): only B's own tokens are evaluated, and B's answer is the one a
    fresh engine gives."""
    fresh = open_engine(default_model, slots=2)
    try:
        reference = submit(fresh, "What is 2 + 2?").wait()
    finally:
        fresh.close()
    a = submit(batch, "Count from 1 to 50.", ENDLESS)
    a.first_piece()
    b = submit(batch, "What is 2 + 2?").wait()
    shared = len(batch.engine.prompt_tokens([{"role": "system", "content": SYSTEM}, {"role": "user", "content": ""}]))
    assert reference.done["cached_tokens"] == 0
    assert b.done["cached_tokens"] >= shared - 8  # the template's closing tokens differ
    assert b.text == reference.text
    batch.cancel(a.key)
    a.wait()
    assert a.done["finish_reason"] == "cancelled"


def test_long_prompt_is_interleaved_with_a_running_stream(batch: BatchEngine) -> None:
    """While a 300-token prompt is read 32 tokens per step, the running stream gets a token at
    every step: it never waits for the whole prompt."""
    a = submit(batch, "Count from 1 to 50.", ENDLESS)
    a.first_piece()
    t_submit = time.perf_counter()
    b = submit(batch, "Summarize: " + "the cat sat on the mat. " * 40, GREEDY)
    b.first_piece()
    t_first = b.pieces[0][0]
    during = [t for t, _ in a.pieces if t_submit < t < t_first]
    batch.cancel(a.key)
    a.wait()
    b.wait()
    steps = b.done["prompt_tokens"] // batch.chunk  # B's prompt took this many steps at least
    assert steps >= 8 and len(during) >= steps - 1, (len(during), steps)


def test_cancel_ends_a_request_at_the_next_step(batch: BatchEngine) -> None:
    a = submit(batch, "Count from 1 to 50.", ENDLESS)
    a.first_piece()
    batch.cancel(a.key)
    before = len(a.pieces)
    a.wait()
    assert a.done["finish_reason"] == "cancelled" and len(a.pieces) <= before + 1
    assert batch.busy() == (0, 0)


def test_queue_is_bounded(default_model: Path) -> None:
    engine = open_engine(default_model, slots=1, max_queue=1)
    try:
        running = submit(engine, "Count from 1 to 50.", ENDLESS)
        running.first_piece()
        waiting = submit(engine, "Hi")
        with pytest.raises(QueueFull, match="1 slots are busy and 1 requests are waiting"):
            submit(engine, "Hi")
        with pytest.raises(ContextOverflow, match="holds 2048"):
            submit(engine, "word " * 3000)
        engine.cancel(running.key)
        engine.cancel(waiting.key)
        assert running.wait().done["finish_reason"] == "cancelled"
        assert waiting.wait().done["finish_reason"] == "cancelled" and not waiting.pieces
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("pieces", "stops", "sent", "stopped"),
    [
        (["Hello", " wor", "ld"], ("world",), "Hello ", True),
        (["a", "b", "c"], ("bd",), "abc", False),
        (["x<", "|e", "nd|>y"], ("<|end|>",), "x", True),
        (["no stops"], (), "no stops", False),
    ],
)
def test_stop_matcher(pieces: list[str], stops: tuple[str, ...], sent: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            break
    if not hit:
        out += matcher.flush()
    assert (out, hit) == (sent, stopped)


def test_outbox_holds_a_piece_no_longer_than_the_interval() -> None:
    """Steps of 10 ms, interval 50 ms: the first piece goes at once, then pieces go together,
    and none waits past the interval; the flush at the end sends what is left."""
    sent: list[tuple[float, str, list]] = []
    box = Outbox(lambda event, text, logprobs=(): sent.append((now, text, list(logprobs))), interval=0.05)
    pieces = [(0.010 * i, f"t{i}") for i in range(1, 12)]
    for now, text in pieces:
        box.add(text, [{"token": text}], now, next_step=0.010)
    now = 0.125
    box.flush(now)
    assert sent[0] == (0.010, "t1", [{"token": "t1"}])  # at once
    assert "".join(t for _, t, _ in sent) == "".join(t for _, t in pieces)  # all of it, in order
    assert [e["token"] for _, _, lp in sent for e in lp] == [t for _, t in pieces]
    assert 3 <= len(sent) < len(pieces)  # together, yet not all at the end
    made = dict((t, at) for at, t in pieces)
    for at, text, _ in sent:  # no piece older than the interval when it goes
        assert all(at - made[t] <= 0.05 + 1e-9 for t in text.replace("t", " t").split())


def test_stream_interval_sends_the_same_text_in_fewer_pieces(default_model: Path) -> None:
    texts, counts = [], []
    for interval in (0.0, 2.0):
        engine = open_engine(default_model, slots=1, stream_interval=interval)
        try:
            events = submit(engine, "Count from one to twenty in words.", SamplingParams(temperature=0, max_tokens=24))
            events.wait()
        finally:
            engine.close()
        texts.append(events.text)
        counts.append((len(events.pieces), events.done["completion_tokens"]))
    assert texts[0] == texts[1]
    (every, tokens), (together, _) = counts
    assert every >= tokens - 2  # one piece per token (a token of half a character waits for the rest)
    assert 1 < together < every / 2  # the first piece at once, the rest together
