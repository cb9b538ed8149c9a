"""A chat as a Markdown file: written under a temporary name and renamed, never over an existing file."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from edgellm import durable
from edgellm.errors import EdgeLLMError
from edgellm.models.identity import model_label
from edgellm.tui.sessions import STATE_LABELS, Chat, Message

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant"}


def to_markdown(chat: Chat, messages: list[Message]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.created))
    lines = [f"# {chat.title}", "", f"*Model: {model_label(chat.model)} · started {when}*", ""]
    if chat.system is not None:
        lines += ["**System prompt**", "", *(f"> {ln}" for ln in chat.system.splitlines() or [""]), ""]
    for m in messages:
        if m.role == "notice":
            lines += [f"*{m.content}*", ""]
            continue
        author = ROLE_HEADINGS.get(m.role, m.role)
        if m.role == "assistant" and m.stats.get("model"):
            author = str(m.stats["model"])
        suffix = f" ({STATE_LABELS[m.state]})" if m.state in STATE_LABELS else ""
        lines += [f"## {author}{suffix}", "", m.content, ""]
    return "\n".join(lines).rstrip() + "\n"


def export_path(title: str, folder: Path) -> Path:
    """A file name from the title that does not exist yet in ``folder``."""
    stem = re.sub(r"[^\w\-]+", "-", title, flags=re.UNICODE).strip("-")[:60] or "chat"
    candidate = folder / f"{stem}.md"
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}.md"
        n += 1
    return candidate


def write_markdown(path: Path, chat: Chat, messages: list[Message]) -> Path:
    """Write the chat to ``path``, refusing to replace a file that exists."""
    if path.exists():
        raise EdgeLLMError(f"{path}: already exists; choose another file name")
    if not path.parent.is_dir():
        raise EdgeLLMError(f"{path.parent}: no such folder; create it or choose another")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(to_markdown(chat, messages), encoding="utf-8")
        durable.link(tmp, path)
    except FileExistsError:
        raise EdgeLLMError(f"{path}: already exists; choose another file name") from None
    except OSError as err:
        raise EdgeLLMError(f"{path}: cannot write ({err.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path

