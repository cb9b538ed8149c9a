"""Saved KV caches (edgellm.runtime.kv_store): a reopened chat restored from disk answers token for
token as after evaluating its whole prompt; bad, stale or foreign files are ignored, never trusted;
disk use stays under the limit. Real llama.cpp, real files."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgellm.runtime import kv_store
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from edgellm.runtime.kv_store import KVStore

STORY = (
    "Mara kept a lighthouse on a small island. Every evening she climbed the ninety steps, wiped the "
    "lens, and lit the lamp. Ships passed far out at sea and never stopped. One winter a storm broke "
    "the radio, and for three weeks nobody knew whether she was well. "
)
CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Read this story carefully:\n\n" + STORY * 6},
    {"role": "assistant", "content": "I have read it. It is about Mara, who keeps a lighthouse on an island."},
]
REOPENED = [*CHAT, {"role": "user", "content": "How many steps did Mara climb every evening?"}]
GREEDY = SamplingParams(temperature=0, max_tokens=24, draft=0)


@pytest.fixture
def store(tmp_path: Path) -> KVStore:
    return KVStore(tmp_path / "kv", limit=10**9)


@pytest.fixture
def stored(engine: Engine, store: KVStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The session engine saving to and restoring from ``store``, closed chat already saved."""
    monkeypatch.setattr(engine, "kv_store", store)
    engine.reset()
    engine.chat(CHAT, SamplingParams(temperature=0, max_tokens=8)).result()
    assert engine.save_state()
    yield engine
    engine.reset()


def full_evaluation(engine: Engine, messages: list[dict[str, str]]) -> list[int]:
    saved = engine.kv_store
    engine.kv_store = None
    try:
        engine.reset()
        turn = engine.chat(messages, GREEDY)
        turn.result()
        assert turn.stats.cached_tokens == 0
        return turn.tokens
    finally:
        engine.kv_store = saved


def reopened(engine: Engine) -> tuple[list[int], object]:
    engine.reset()  # the chat was closed: nothing of it in memory
    turn = engine.chat(REOPENED, GREEDY)
    turn.result()
    return turn.tokens, turn.stats


def only_entry(store: KVStore) -> Path:
    (path,) = store.folder.glob("*" + kv_store.SUFFIX)
    return path


def test_restored_chat_answers_as_after_full_evaluation(stored: Engine, store: KVStore) -> None:
    expected = full_evaluation(stored, REOPENED)
    tokens, stats = reopened(stored)
    assert tokens == expected
    assert stats.restored_tokens == stats.cached_tokens > len(stored.prompt_tokens(CHAT)) // 2
    assert stats.evaluated_prompt_tokens < 64
    assert not list(store.folder.glob("*.tmp"))  # written under a temporary name, renamed when whole


def test_restore_into_a_fresh_engine_on_a_larger_model(default_model: Path, tmp_path: Path) -> None:
    """Another process's Engine (same file, same settings) on the F16 copy of the default model."""
    from bench.bench_gpu_precision import rewritten

    path = rewritten(default_model, "F16", tmp_path)
    store = KVStore(tmp_path / "kv")
    with Engine(path, LoadOptions(n_ctx=1024, probe=False)) as first:
        first.kv_store = store
        first.chat(CHAT, SamplingParams(temperature=0, max_tokens=4)).result()
        assert first.save_state()
        expected = full_evaluation(first, REOPENED)
    with Engine(path, LoadOptions(n_ctx=1024, probe=False)) as second:
        second.kv_store = store
        tokens, stats = reopened(second)
    assert tokens == expected and stats.restored_tokens > 0


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x40]))


def _foreign_key(path: Path) -> None:
    """A whole, self-consistent file, but saved under other settings (its footer says so)."""
    with open(path, "r+b") as fh:
        fh.seek(-kv_store._FOOTER.size, os.SEEK_END)
        key, digest, magic = kv_store._FOOTER.unpack(fh.read())
        fh.seek(-kv_store._FOOTER.size, os.SEEK_END)
        fh.write(kv_store._FOOTER.pack(bytes(32), digest, magic))


def _garbage_state(path: Path) -> None:
    """Footer and digest intact, llama.cpp's state inside scrambled: llama.cpp must refuse it."""
    import hashlib

    data = bytearray(path.read_bytes()[: -kv_store._FOOTER.size])
    key = path.read_bytes()[-kv_store._FOOTER.size :][:32]
    n_tokens = struct.unpack_from("<I", data, 8)[0]
    state = 12 + 4 * n_tokens  # after llama.cpp's magic, version, token count and tokens
    data[state : state + 64] = bytes(range(64))
    path.write_bytes(bytes(data) + kv_store._FOOTER.pack(key, hashlib.sha256(data).digest(), kv_store._MAGIC))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _foreign_key, _garbage_state])
def test_bad_file_is_ignored_and_removed(stored: Engine, store: KVStore, damage) -> None:  # noqa: ANN001
    expected = full_evaluation(stored, REOPENED)
    path = only_entry(store)
    damage(path)
    tokens, stats = reopened(stored)
    assert tokens == expected
    assert stats.restored_tokens == 0 and stats.cached_tokens == 0  # evaluated from scratch
    assert not path.exists()


def test_key_follows_the_weights_and_the_settings(default_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(default_model, copy)
    def key(**options: object) -> bytes | None:
        with Engine(copy, LoadOptions(**{"n_ctx": 512, "probe": False, **options})) as eng:  # type: ignore[arg-type]
            return eng.state_key

    first = key(n_threads=1)
    assert first is not None and key(n_threads=1) == first
    assert key(n_threads=2) == first  # threads do not change a number
    assert key(n_ctx=768) != first  # another context
    assert key(kv_f32=True) != first  # another KV cache type
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))  # the file was replaced
    assert key(n_threads=1) != first


def test_disk_use_stays_under_the_limit_least_recently_used_first(engine: Engine, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    chats = [[{"role": "user", "content": f"Chat number {i}. " + STORY * 2}] for i in range(3)]
    sizes = []
    store = KVStore(tmp_path / "kv", limit=10**12)
    monkeypatch.setattr(engine, "kv_store", store)
    paths = []
    for chat in chats:
        engine.reset()
        engine.chat(chat, SamplingParams(temperature=0, max_tokens=2)).result()
        assert engine.save_state()
        paths.append(max(store.folder.glob("*.kv"), key=lambda p: p.stat().st_mtime_ns))
        sizes.append(paths[-1].stat().st_size)
    for i, p in enumerate(paths):
        os.utime(p, ns=(i * 10**9, i * 10**9))  # saved in this order, a second apart
    store.limit = sizes[0] + sizes[1] + sizes[2] // 2  # room for two
    # reopening chat 0 makes it the most recently used ...
    engine.reset()
    turn = engine.chat([*chats[0], {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}],
                       SamplingParams(temperature=0, max_tokens=1))
    turn.result()
    assert turn.stats.restored_tokens > 0
    # ... so a new save evicts chat 1, the least recently used, and keeps the total under the limit
    engine.reset()
    engine.chat([{"role": "user", "content": "Chat number 3. " + STORY * 2}], SamplingParams(max_tokens=2)).result()
    assert engine.save_state()
    assert paths[0].exists() and not paths[1].exists()
    assert store.usage() <= store.limit


def test_saving_never_fails_the_caller(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.reset()
    engine.chat(CHAT, SamplingParams(temperature=0, max_tokens=2)).result()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(engine, "kv_store", KVStore(blocked / "kv"))
    assert not engine.save_state()  # the disk refused: no exception, nothing written
    tiny = KVStore(tmp_path / "tiny", limit=1000)
    monkeypatch.setattr(engine, "kv_store", tiny)
    assert not engine.save_state()  # larger than the whole cache: not saved
    assert not tiny.folder.exists() or not any(tiny.folder.iterdir())
    monkeypatch.setattr(engine, "kv_store", None)
    assert not engine.save_state()  # --cache-size 0


def test_switching_chats_saves_the_one_left(engine: Engine, store: KVStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No call needed: a turn of another conversation saves the cache it is about to overwrite."""
    monkeypatch.setattr(engine, "kv_store", store)
    engine.reset()
    engine.chat(CHAT, SamplingParams(temperature=0, max_tokens=4)).result()
    assert not store.folder.exists()
    other = [{"role": "user", "content": "A different chat: " + STORY}]
    turn = engine.chat(other, SamplingParams(temperature=0, max_tokens=4))
    turn.result()
    assert turn.stats.restored_tokens == 0
    only_entry(store)  # the first chat, saved on the switch
    back = engine.chat(REOPENED, GREEDY)  # switching back: the second chat saved, the first restored
    back.result()
    assert back.stats.restored_tokens > len(engine.prompt_tokens(CHAT)) // 2
    assert len(list(store.folder.glob("*.kv"))) == 2
    assert back.tokens == full_evaluation(engine, REOPENED)


def test_a_chat_trimmed_to_fit_is_not_saved_every_turn(engine: Engine, store: KVStore,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A long chat whose oldest turns `fit` dropped shares only the system prompt with the cache,
    yet it is the same chat: no full cache write before its turn (one no reopen could use)."""
    monkeypatch.setattr(engine, "kv_store", store)
    engine.reset()
    later = [{"role": "user", "content": "Now tell me about the storm. " + STORY},
             {"role": "assistant", "content": "The storm broke the radio and nobody heard from Mara for weeks."}]
    engine.chat([*CHAT, *later], SamplingParams(temperature=0, max_tokens=4)).result()
    trimmed = [CHAT[0], *later, {"role": "user", "content": "What happened next?"}]  # the story turns dropped
    engine.chat(trimmed, SamplingParams(temperature=0, max_tokens=4)).result()
    assert not store.folder.exists()
    engine.chat([{"role": "user", "content": "A different chat: " + STORY}], SamplingParams(max_tokens=4)).result()
    only_entry(store)  # another conversation still saves the one it replaces


def test_runner_saves_on_close_and_the_next_runner_restores(default_model: Path) -> None:
    """Through the real runner process: quitting saves the chat, a new runner reopens it from disk."""
    from edgellm.runtime.client import RemoteEngine

    options = LoadOptions(n_ctx=1024, cache_size=10**9)
    with RemoteEngine(default_model, options) as first:
        first.chat(CHAT, SamplingParams(temperature=0, max_tokens=4)).result()
    assert any(kv_store.default_folder().glob("*.kv"))  # saved in the (test's own) XDG cache folder
    with RemoteEngine(default_model, options) as second:
        turn = second.chat(REOPENED, GREEDY)
        text = turn.result()
        assert turn.stats.restored_tokens > 0
    with RemoteEngine(default_model, LoadOptions(n_ctx=1024)) as plain:  # no cache: the whole prompt evaluated
        fresh = plain.chat(REOPENED, GREEDY)
        assert fresh.result() == text and fresh.stats.restored_tokens == 0
