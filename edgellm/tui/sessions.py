"""The chat store: chats and their messages in one SQLite file in the data directory.

WAL journal with synchronous=NORMAL: every write is one short transaction that survives a killed
process (not a power cut), so a partial answer saved while streaming is never lost to kill -9.
The schema carries its version in `PRAGMA user_version`; MIGRATIONS[i] takes it from i to i+1."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgellm import paths
from edgellm.errors import EdgeLLMError

MIGRATIONS: list[str] = [
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system TEXT,                         -- NULL: the model family's own default
        settings TEXT NOT NULL DEFAULT '{}', -- JSON of ChatSettings
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL,                  -- user, assistant, notice
        content TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'done',  -- done, streaming, stopped, error
        stats TEXT,                          -- JSON of the turn's statistics
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_chat ON messages(chat_id, id);
    CREATE TABLE prefs (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
NEW_CHAT_TITLE = "New chat"  # replaced by the first message's opening words
# How a message that did not finish is labelled (on screen and in exports); "done" has none.
STATE_LABELS = {"stopped": "stopped", "error": "failed", "streaming": "interrupted"}


def default_path() -> Path:
    return paths.data_dir() / "chats.db"


@dataclass
class Chat:
    id: int
    title: str
    model: str
    system: str | None
    settings: dict[str, object]
    created: float
    updated: float


@dataclass
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    state: str = "done"
    stats: dict[str, object] = field(default_factory=dict)
    created: float = 0.0


def _chat(row: sqlite3.Row) -> Chat:
    return Chat(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system=row["system"],
        settings=json.loads(row["settings"] or "{}"),
        created=row["created"],
        updated=row["updated"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        chat_id=row["chat_id"],
        role=row["role"],
        content=row["content"],
        state=row["state"],
        stats=json.loads(row["stats"]) if row["stats"] else {},
        created=row["created"],
    )


def _snippet(content: str, text: str, width: int = 60) -> str:
    """One line of ``content`` around the first place ``text`` occurs."""
    flat = " ".join(content.split())
    at = max(flat.lower().find(text.lower()), 0)
    start = max(0, at - width // 3)
    if start:  # begin at a word
        start = flat.find(" ", start, at) + 1 or start
    return ("…" if start else "") + flat[start : start + width] + ("…" if start + width < len(flat) else "")


class SessionStore:
    """All reads and writes of chats; one connection, used from the UI thread only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise EdgeLLMError(
                f"{self.path}: not a usable chat database ({err}); move it away to start with no chats"
            ) from None
        except OSError as err:
            raise EdgeLLMError(f"{self.path}: cannot open the chat database ({err.strerror})") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EdgeLLMError(
                f"{self.path}: written by a newer edgellm (chat schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade edgellm"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # executescript commits first; BEGIN inside the script keeps each step all-or-nothing.
            self._db.executescript(f"BEGIN; {MIGRATIONS[target - 1]}; PRAGMA user_version={target}; COMMIT;")

    def close(self) -> None:
        self._db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- chats ---------------------------------------------------------------------------------
    def chats(self) -> list[Chat]:
        """Most recently used first."""
        rows = self._db.execute("SELECT * FROM chats ORDER BY updated DESC, id DESC").fetchall()
        return [_chat(r) for r in rows]

    def chat(self, chat_id: int) -> Chat:
        row = self._db.execute("SELECT * FROM chats WHERE id = ?", (chat_id,)).fetchone()
        if row is None:
            raise KeyError(chat_id)
        return _chat(row)

    def new_chat(
        self, model: str, *, title: str = NEW_CHAT_TITLE, system: str | None = None, settings: dict | None = None
    ) -> Chat:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO chats (title, model, system, settings, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (title, model, system, json.dumps(settings or {}), now, now),
        )
        return self.chat(int(cur.lastrowid))

    def update_chat(
        self, chat_id: int, *, title: str | None = None, model: str | None = None, settings: dict | None = None
    ) -> Chat:
        """Change the fields given (None: unchanged)."""
        changes = {k: v for k, v in (("title", title), ("model", model)) if v is not None}
        if settings is not None:
            changes["settings"] = json.dumps(settings)
        changes["updated"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._db.execute(f"UPDATE chats SET {assignments} WHERE id = ?", (*changes.values(), chat_id))
        return self.chat(chat_id)

    def set_system(self, chat_id: int, system: str | None) -> Chat:
        """The chat's system prompt; None: whatever the model family uses by default."""
        self._db.execute("UPDATE chats SET system = ?, updated = ? WHERE id = ?", (system, time.time(), chat_id))
        return self.chat(chat_id)

    def touch(self, chat_id: int) -> None:
        """Mark a chat as the one the user was last in (it reopens there)."""
        self._db.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat_id))

    def delete_chat(self, chat_id: int) -> None:
        self._db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))
        self._db.execute("DELETE FROM prefs WHERE key = ?", (f"draft:{chat_id}",))

    def search(self, text: str, limit: int = 50) -> list[tuple[Chat, str]]:
        """Chats whose title or messages contain ``text`` (any case), most recent first, each with
        the first matching message's words around the match (or "" for a title match)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT chats.*, (SELECT content FROM messages WHERE chat_id = chats.id AND content LIKE ? ESCAPE '\\' "
            "ORDER BY id LIMIT 1) AS hit FROM chats WHERE title LIKE ? ESCAPE '\\' OR hit IS NOT NULL "
            "ORDER BY updated DESC, id DESC LIMIT ?",
            (pattern, pattern, limit),
        ).fetchall()
        return [(_chat(r), _snippet(r["hit"], text) if r["hit"] else "") for r in rows]

    def discard_blank(self, keep: int | None = None) -> int:
        """Delete the chats nothing was ever written in (the untitled ones without messages or a
        draft), except ``keep``: opening and leaving the app must not pile up empty "New chat"
        entries. Returns how many went."""
        rows = self._db.execute(
            "SELECT id FROM chats WHERE title = ? AND id IS NOT ? AND NOT EXISTS "
            "(SELECT 1 FROM messages WHERE messages.chat_id = chats.id) AND NOT EXISTS "
            "(SELECT 1 FROM prefs WHERE prefs.key = 'draft:' || chats.id AND trim(prefs.value) != '')",
            (NEW_CHAT_TITLE, keep),
        ).fetchall()
        for (chat_id,) in rows:
            self.delete_chat(chat_id)
        return len(rows)

    # -- messages ------------------------------------------------------------------------------
    def messages(self, chat_id: int) -> list[Message]:
        rows = self._db.execute("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)).fetchall()
        return [_message(r) for r in rows]

    def add_message(
        self, chat_id: int, role: str, content: str, *, state: str = "done", stats: dict | None = None
    ) -> Message:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO messages (chat_id, role, content, state, stats, created) VALUES (?, ?, ?, ?, ?, ?)",
            (chat_id, role, content, state, json.dumps(stats) if stats else None, now),
        )
        self._db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
        return Message(int(cur.lastrowid), chat_id, role, content, state, stats or {}, now)

    def save_progress(self, message_id: int, content: str) -> None:
        """The answer so far; called before each repaint so nothing shown is ever unsaved."""
        self._db.execute("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))

    def finish_message(self, message_id: int, content: str, state: str, stats: dict | None) -> None:
        self._db.execute(
            "UPDATE messages SET content = ?, state = ?, stats = ? WHERE id = ?",
            (content, state, json.dumps(stats) if stats else None, message_id),
        )

    def delete_messages_from(self, chat_id: int, message_id: int) -> None:
        """Forget a message and everything after it (regenerate, edit and resend)."""
        self._db.execute("DELETE FROM messages WHERE chat_id = ? AND id >= ?", (chat_id, message_id))

    # -- preferences ---------------------------------------------------------------------------
    def pref(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM prefs WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_pref(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO prefs (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
