"""The answer being generated: filled on a worker thread, drained by the UI a few times a second.

The worker never waits for the UI (which would slow generation down to the speed of repainting):
it appends pieces to a list, and the UI's timer takes what has arrived, saves it, then shows it.
Appending to a list and reading its length are atomic in CPython, so no lock is needed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgellm.runtime.engine import LoadOptions, TurnStats
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import ChatEngine, EngineSlot


@dataclass
class Answer:
    """Shared between the worker (writes) and the UI (reads); see `produce`."""

    model: str
    options: LoadOptions
    history: list[dict[str, str]]
    settings: ChatSettings
    pieces: list[str] = field(default_factory=list)
    engine: ChatEngine | None = None
    dropped: int = 0  # oldest messages left out to fit the context
    dropped_noted: bool = False
    first_piece_at: float = 0.0
    stats: TurnStats | None = None
    error: BaseException | None = None
    stop_requested: bool = False
    done: bool = False
    _taken: int = 0

    def drain(self) -> str:
        """The text that arrived since the last call (UI thread only)."""
        end = len(self.pieces)
        text = "".join(self.pieces[self._taken : end])
        self._taken = end
        return text

    def stop(self) -> None:
        """Stop as soon as possible, whatever the worker is doing (loading, reading the prompt, writing)."""
        self.stop_requested = True
        if self.engine is not None:
            self.engine.cancel()

    @property
    def live_tps(self) -> float:
        """Pieces per second so far (a piece is a token, give or take a split UTF-8 character)."""
        elapsed = time.perf_counter() - self.first_piece_at
        return len(self.pieces) / elapsed if self.first_piece_at and elapsed > 0 else 0.0

    @property
    def activity(self) -> str:
        if self.engine is None:
            return "loading model…"
        return "reading prompt…" if not self.pieces else "writing…"


def produce(answer: Answer, slot: EngineSlot) -> None:
    """Worker thread body: load the model if needed, fit the history to the context, stream."""
    try:
        with slot.use(answer.model, answer.options) as engine:
            answer.engine = engine
            if answer.stop_requested:
                return
            messages, answer.dropped = engine.fit(answer.history, answer.settings.reserve(engine.n_ctx))
            turn = engine.chat(messages, answer.settings.sampling())
            answer.stats = turn.stats  # filled in place as the turn runs, even if it fails midway
            if answer.stop_requested:  # Esc came before chat() reset the engine's cancel flag
                engine.cancel()
            pieces = answer.pieces
            for piece in turn:
                if not pieces:
                    answer.first_piece_at = time.perf_counter()
                pieces.append(piece)
    except Exception as err:  # shown in the chat; the app never dies of a failed answer
        answer.error = err
    finally:
        answer.done = True
