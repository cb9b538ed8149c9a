"""The chat store: schema version, WAL, what a crash or a newer version leaves behind; Markdown export."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgellm import paths
from edgellm.errors import EdgeLLMError
from edgellm.tui import sessions
from edgellm.tui.export import export_path, to_markdown, write_markdown
from edgellm.tui.sessions import SCHEMA_VERSION, SessionStore


def test_new_store_has_the_schema_version_and_wal(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "chats.db")
    assert store.schema_version == SCHEMA_VERSION == len(sessions.MIGRATIONS)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = SessionStore(tmp_path / "chats.db")  # reopening migrates nothing twice
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_default_location_is_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert sessions.default_path() == tmp_path / "xdg" / "edgellm" / "chats.db"
    monkeypatch.setenv("EDGELLM_HOME", str(tmp_path / "home"))
    assert sessions.default_path() == tmp_path / "home" / "chats.db" == paths.data_dir() / "chats.db"


def test_chats_messages_and_order(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "chats.db")
    a = store.new_chat("default", settings={"temperature": 0.2})
    b = store.new_chat("other.gguf", title="B")
    assert [c.id for c in store.chats()] == [b.id, a.id]
    store.add_message(a.id, "user", "你好，世界")
    assert [c.id for c in store.chats()] == [a.id, b.id]  # most recently used first
    m = store.add_message(a.id, "assistant", "", state="streaming")
    store.save_progress(m.id, "部分")
    store.finish_message(m.id, "部分回答", "done", {"generated_tokens": 3})
    got = store.messages(a.id)
    assert [(x.role, x.content, x.state) for x in got] == [
        ("user", "你好，世界", "done"),
        ("assistant", "部分回答", "done"),
    ]
    assert got[1].stats == {"generated_tokens": 3} and store.chat(a.id).settings == {"temperature": 0.2}
    store.delete_messages_from(a.id, m.id)
    assert len(store.messages(a.id)) == 1
    store.set_system(a.id, "Be brief.")
    assert store.update_chat(a.id, title="Renamed").system == "Be brief."
    store.delete_chat(a.id)
    assert store.messages(a.id) == [] and [c.id for c in store.chats()] == [b.id]
    store.close()


def test_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    SessionStore(db).close()
    with sqlite3.connect(db) as con:
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(EdgeLLMError, match=r"chats\.db: written by a newer edgellm .*upgrade edgellm"):
        SessionStore(db)


def test_a_file_that_is_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EdgeLLMError, match=r"chats\.db: not a usable chat database .*move it away"):
        SessionStore(db)
    assert db.read_bytes() == b"this is not sqlite" * 100  # left as it was


def test_export_never_overwrites_and_reads_well(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "chats.db")
    chat = store.new_chat("default", title="Fox: a story?")
    store.add_message(chat.id, "user", "Tell me about 狐狸")
    store.add_message(chat.id, "assistant", "```python\nprint('fox')\n```", stats={"model": "SmolLM2"})
    store.add_message(chat.id, "assistant", "Partial", state="stopped")
    messages = store.messages(chat.id)
    target = export_path(chat.title, tmp_path)
    assert target.name == "Fox-a-story.md"
    write_markdown(target, chat, messages)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Fox: a story?\n") and "## You\n\nTell me about 狐狸" in text
    assert "## SmolLM2\n\n```python\nprint('fox')\n```" in text and "## Assistant (stopped)" in text
    assert export_path(chat.title, tmp_path).name == "Fox-a-story-2.md"
    with pytest.raises(EdgeLLMError, match="already exists"):
        write_markdown(target, chat, messages[:1])
    assert target.read_text(encoding="utf-8") == text
    with pytest.raises(EdgeLLMError, match="no such folder"):
        write_markdown(tmp_path / "missing" / "x.md", chat, messages)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".tmp")) == ["Fox-a-story.md"]
    assert to_markdown(chat, messages) == text
    store.close()
