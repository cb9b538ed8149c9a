"""An engine that says what it is told: the TUI's edge cases (failures mid-answer, huge answers, a
conversation that outgrows the context) on demand, and deterministic screens for snapshots.

It speaks the Engine's interface (`edgellm.tui.engines.ChatEngine`): chat() returns a turn to
iterate for text pieces with TurnStats filled in place; cancel() from any thread stops it; fit()
drops the oldest turns like Engine.fit, counting one token per word."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgellm.errors import ContextOverflow
from edgellm.models import chat_templates
from edgellm.models.gguf_file import GGUFInfo
from edgellm.runtime.engine import LoadOptions, SamplingParams, TurnStats

INFO = GGUFInfo(
    path=Path("/models/scripted.gguf"),
    file_size=93_000_000,
    architecture="llama",
    name="Scripted 135M",
    file_type="Q4_1",
    parameters=135_000_000,
    context_length=8192,
    block_count=30,
    head_count=9,
    head_count_kv=3,
    embedding_length=576,
    vocab_size=49152,
    chat_template=None,
)


@dataclass
class Script:
    """One answer: its pieces, and optionally an exception raised before piece ``fail_at``."""

    pieces: list[str]
    fail_at: int | None = None
    error: BaseException | None = None
    delay: float = 0.0  # seconds before each piece
    stop_reason: str = "stop"


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) + 4 for m in messages)


class ScriptedTurn:
    def __init__(self, engine: ScriptedEngine, messages: list[dict[str, str]], script: Script) -> None:
        self.engine = engine
        self.script = script
        self.stats = TurnStats(prompt_tokens=words(messages))
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        s, stats = self.script, self.stats
        stats.prompt_seconds = 0.25  # 4 tokens/s per word: fixed numbers for the status bar
        stats.ttft_seconds = 0.3
        try:
            for i, piece in enumerate(s.pieces):
                if s.delay:
                    time.sleep(s.delay)
                if self.engine.cancelled.is_set():
                    stats.stop_reason = "cancelled"
                    return
                if s.fail_at == i and s.error is not None:
                    raise s.error
                self._parts.append(piece)
                stats.generated_tokens += 1
                yield piece
            stats.stop_reason = s.stop_reason
        finally:
            stats.generation_seconds = stats.generated_tokens / 50 if stats.generated_tokens else 0.0


class ScriptedEngine:
    """Answers from ``scripts`` in order (the last one repeats); records what it was asked."""

    def __init__(self, scripts: list[Script] | None = None, *, n_ctx: int = 512) -> None:
        self.scripts = scripts or [Script(["Hello", " there", "!"])]
        self.info = INFO
        self.options = LoadOptions(n_ctx=n_ctx)
        self.n_ctx = n_ctx
        self.template = chat_templates.chatml("You are a scripted assistant.")
        self.cancelled = threading.Event()
        self.asked: list[list[dict[str, str]]] = []
        self.closed = False

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> ScriptedTurn:
        self.cancelled.clear()
        self.asked.append(messages)
        script = self.scripts[min(len(self.asked) - 1, len(self.scripts) - 1)]
        return ScriptedTurn(self, messages, script)

    def fit(self, messages: list[dict[str, str]], reserve: int) -> tuple[list[dict[str, str]], int]:
        system = [m for m in messages[:1] if m["role"] == "system"]
        rest = messages[len(system) :]
        dropped = 0
        while words(system + rest) + reserve > self.n_ctx and len(rest) > 1:
            cut = 2 if len(rest) > 2 and rest[0]["role"] == "user" else 1
            rest, dropped = rest[cut:], dropped + cut
        if words(system + rest) >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {words(system + rest)} tokens but the context holds {self.n_ctx}: "
                "shorten it or raise --ctx"
            )
        return system + rest, dropped

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.closed = True
