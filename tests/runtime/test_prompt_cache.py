"""The server's host-memory prompt cache: idle slots' KV caches leave the context when the next
request comes (so they no longer widen its decodes), and a later turn of that conversation is
restored from memory, with the answer a full evaluation gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import llama_cpp
import pytest

from edgellm.runtime.batch import BatchEngine, BatchRequest
from edgellm.runtime.engine import Engine, LoadOptions
from edgellm.runtime.prompt_cache import DEFAULT_LIMIT, PromptCache, default_limit
from tests.runtime.test_batch import ENDLESS, GREEDY, Events, open_engine


def ask(engine: BatchEngine, text: str) -> tuple[list[int], Events]:
    """A raw prompt (no template, so conversations share no prefix), greedy."""
    prompt, events = engine.engine.tokenize(text), Events()
    engine.submit(events.key, BatchRequest(prompt, GREEDY), events)
    return prompt, events.wait()


def cells(engine: BatchEngine, seq: int) -> int:
    """Positions sequence ``seq`` holds in the context (0: none)."""
    return llama_cpp.llama_memory_seq_pos_max(engine.engine._memory, seq) + 1


def test_idle_slot_is_parked_then_restored_with_the_same_answer(default_model: Path) -> None:
    engine = open_engine(default_model, slots=2)
    fresh = open_engine(default_model, slots=2, cache_ram=0)
    try:
        prompt, first = ask(engine, "The capital of France is")
        seq = next(s.seq for s in engine._slots if s.cached)
        assert cells(engine, seq) > len(prompt)  # kept while nothing else comes
        ask(engine, "12, 13, 14, 15,")  # another conversation, in the other slot: the first one is parked
        assert cells(engine, seq) == 0 and len(engine._parked) == 1
        follow = "The capital of France is" + first.text + " The capital of Italy is"
        _, again = ask(engine, follow)
        _, reference = ask(fresh, follow)
    finally:
        engine.close()
        fresh.close()
    assert reference.done["cached_tokens"] == 0
    assert again.done["cached_tokens"] >= len(prompt)
    assert again.text == reference.text


def test_a_request_that_ends_while_others_stream_is_parked_at_once(default_model: Path) -> None:
    engine = open_engine(default_model, slots=2)
    try:
        running = Events()
        engine.submit(running.key, BatchRequest(engine.engine.tokenize("1, 2, 3, 4,"), ENDLESS), running)
        running.first_piece()
        _, events = ask(engine, "The capital of France is")
        seq = next(s.seq for s in engine._slots if s.job is None)
        assert cells(engine, seq) == 0 and len(engine._parked) == 1
        assert not running.ended.is_set()
        engine.cancel(running.key)
        running.wait()
    finally:
        engine.close()
    assert events.done["finish_reason"] in ("stop", "length")


def test_conversations_come_back_from_disk_after_a_restart(default_model: Path) -> None:
    """`serve --cache-size`: what the engine holds is written to the disk store when it closes;
    after a restart, the conversation's next turn is read back, with the answer a full evaluation
    gives. Off by default."""
    from edgellm.runtime.kv_store import default_folder

    text = "Here is a short story about a cat who lived in a library. " * 6 + "The capital of France is"
    on_disk = LoadOptions(n_ctx=2048, n_threads=1, probe=False, cache_size=10**9)
    engine = BatchEngine(default_model, on_disk, slots=2)
    try:
        prompt, first = ask(engine, text)
        ask(engine, "12, 13, 14, 15,")  # parked in memory: written too, but short (kv_store.MIN_TOKENS)
    finally:
        engine.close()
    assert len(list(default_folder().glob("*.kv"))) == 1
    follow = text + first.text + " The capital of Italy is"
    again_engine, fresh = BatchEngine(default_model, on_disk, slots=2), open_engine(default_model, slots=2)
    try:
        _, again = ask(again_engine, follow)
        _, reference = ask(fresh, follow)
    finally:
        again_engine.close()
        fresh.close()
    assert reference.done["cached_tokens"] == 0 and again.done["cached_tokens"] >= len(prompt)
    assert again.text == reference.text


def test_a_damaged_file_on_disk_is_evaluated_instead(default_model: Path) -> None:
    """The slot already holds part of the prompt; the disk store offers more, but its file is
    damaged: llama.cpp's load is refused, the file deleted, the sequence emptied and the whole
    prompt evaluated, with the answer a full evaluation gives."""
    from edgellm.runtime.kv_store import default_folder

    text = "Here is a short story about a cat who lived in a library. " * 6 + "The capital of France is"
    on_disk = LoadOptions(n_ctx=2048, n_threads=1, probe=False, cache_size=10**9)
    engine = BatchEngine(default_model, on_disk, slots=1)
    try:
        ask(engine, text)
    finally:
        engine.close()
    (saved,) = default_folder().glob("*.kv")
    engine = BatchEngine(default_model, on_disk, slots=1, cache_ram=0)  # no copy in memory to fall back on
    fresh = open_engine(default_model, slots=1)
    try:
        ask(engine, text[: len(text) // 2])  # the slot now holds the first half (read from the file)
        with open(saved, "r+b") as fh:  # then a byte of the file flips: its digest no longer matches
            fh.seek(saved.stat().st_size // 2)
            byte = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([byte[0] ^ 0xFF]))
        _, again = ask(engine, text + " Paris. The capital of Italy is")
        _, reference = ask(fresh, text + " Paris. The capital of Italy is")
    finally:
        engine.close()
        fresh.close()
    assert again.done["cached_tokens"] == 0  # none of the slot's cells is left to reuse
    assert again.text == reference.text and not saved.exists()


def test_without_cache_ram_idle_slots_keep_their_cells(default_model: Path) -> None:
    engine = open_engine(default_model, slots=2, cache_ram=0)
    try:
        ask(engine, "The capital of France is")
        seq = next(s.seq for s in engine._slots if s.cached)
        ask(engine, "12, 13, 14, 15,")
        assert cells(engine, seq) > 0 and len(engine._parked) == 0
    finally:
        engine.close()


def fill(eng: Engine, seq: int, tokens: list[int]) -> None:
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, False
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(eng._ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)


def test_bounded_and_prefixes_merged(default_model: Path) -> None:
    with Engine(default_model, LoadOptions(n_ctx=1024, n_threads=1, n_seq=2, probe=False)) as eng:
        tokens = eng.tokenize("one two three four five six seven eight nine ten " * 8)
        fill(eng, 0, tokens)
        size = llama_cpp.llama_state_seq_get_size(eng._ctx, 0)
        cache = PromptCache(limit=2 * size + size // 2)  # two such entries, not three
        assert cache.save(eng._ctx, 0, tokens[:40]) and cache.save(eng._ctx, 0, tokens)
        assert len(cache) == 1  # the shorter one is a prefix of the longer: dropped
        assert cache.save(eng._ctx, 0, tokens[:40]) and len(cache) == 1  # already held inside the longer
        for seq, other in ((1, "alpha beta gamma " * 20), (1, "red green blue " * 20)):
            more = eng.tokenize(other * 3)[: len(tokens)]  # as large as the first
            llama_cpp.llama_memory_seq_rm(eng._memory, seq, -1, -1)
            fill(eng, seq, more)
            assert cache.save(eng._ctx, seq, more)
        assert cache.used <= cache.limit and len(cache) == 2  # the least recently used went
        key, shared = cache.best(tokens[:50] + [1, 2, 3])
        assert key is None and shared == 0  # it was the oldest
        key, shared = cache.best(more + [1])
        assert shared == len(more)
        assert cache.restore(eng._ctx, key, 0) == more
        assert llama_cpp.llama_memory_seq_pos_max(eng._memory, 0) == len(more) - 1


def test_a_refused_restore_empties_the_sequence(default_model: Path) -> None:
    """llama.cpp refuses a state larger than the context: the entry is dropped, the sequence is
    empty, the prompt will simply be evaluated."""
    with Engine(default_model, LoadOptions(n_ctx=1024, n_threads=1, probe=False)) as big:
        text = "one two three four five six seven eight nine ten " * 60
        tokens = big.tokenize(text)[:400]  # one batch (512), more than the small context holds
        fill(big, 0, tokens)
        cache = PromptCache(limit=10**9)
        assert cache.save(big._ctx, 0, tokens)
    with Engine(default_model, LoadOptions(n_ctx=256, n_threads=1, probe=False)) as small:
        fill(small, 0, tokens[:10])
        key, _ = cache.best(tokens)
        assert cache.restore(small._ctx, key, 0) is None
        assert len(cache) == 0 and llama_cpp.llama_memory_seq_pos_max(small._memory, 0) == -1


def test_serve_takes_cache_ram_as_a_size(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from edgellm.cli import build_parser
    from edgellm.commands.serve import served_models
    from edgellm.runtime import planner

    args = build_parser().parse_args(["serve", "default", "--cache-ram", "500MB", "--parallel", "2", "--ctx", "512"])
    assert served_models(args)[0].options["cache_ram"] == 500_000_000
    assert served_models(args)[0].options["cache_size"] == 0  # the disk store: off unless asked
    args = build_parser().parse_args(["serve", "default", "--cache-size", "4GB", "--parallel", "2", "--ctx", "512"])
    assert served_models(args)[0].options["cache_size"] == 4 * 10**9
    machine = dataclasses.replace(planner.probe(), ram_available=4 * 10**9)
    monkeypatch.setattr(planner, "probe", lambda: machine)
    args = build_parser().parse_args(["serve", "default", "--parallel", "2", "--ctx", "512"])
    assert served_models(args)[0].options["cache_ram"] == 10**9  # a quarter of the free memory
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "default", "--cache-ram", "lots"])
    assert exit_.value.code == 2 and "'lots' is not a size" in capsys.readouterr().err


def test_default_limit_is_bounded_by_the_free_memory() -> None:
    assert default_limit(100 * 10**9) == DEFAULT_LIMIT
    assert default_limit(4 * 10**9) == 10**9  # a quarter of what is free
    assert default_limit(4 * 10**9, models=2) == 5 * 10**8  # shared by the models served


def test_common_prefix_counts_the_shared_leading_tokens() -> None:
    import os
    import random

    from edgellm.runtime.prompt_cache import common_prefix

    rng = random.Random(7)
    for _ in range(2000):
        a = [rng.randrange(3) for _ in range(rng.randrange(0, 40))]
        b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(0, 40))]
        assert common_prefix(a, b) == len(os.path.commonprefix([a, b])), (a, b)
