"""Issue 16 point 7: with the default sampling settings (what `run` and a new chat use) the default
model does not loop on the same sentence. Whatever the default model, its system prompt and the
defaults are (edgellm/data/models.toml, SamplingParams): the test reads them, it does not pin them."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from edgellm.runtime.engine import Engine, SamplingParams
from edgellm.tui.chat_settings import ChatSettings

OPEN_PROMPTS = [
    "Tell me about the ocean.",
    "Write a short story about a lighthouse keeper.",
    "What should I know before adopting a dog?",
    "Describe your ideal weekend.",
]
MAX_TOKENS = 320  # enough for a loop to show; bounded for a shared 2-core machine


def repeated_sentences(text: str) -> list[str]:
    """Sentences of at least four words that occur more than once (case and spacing ignored)."""
    sentences = [" ".join(s.lower().split()) for s in re.split(r"(?<=[.!?。！？])\s+|\n+", text)]
    counts = Counter(s.strip(" -*#>0123456789.") for s in sentences if len(s.split()) >= 4)
    return [s for s, n in counts.items() if n > 1]


def test_the_check_finds_a_loop() -> None:
    assert repeated_sentences("Yes, it is. It is blue and deep. Yes, it is.") == []  # too short to count
    looped = "The ocean covers most of the planet. Waves are made by the wind. " * 3
    assert repeated_sentences(looped) == ["the ocean covers most of the planet", "waves are made by the wind"]
    assert repeated_sentences("1. Feed it well every day.\n2. Feed it well every day.") == ["feed it well every day"]


def test_run_and_new_chats_use_the_same_defaults() -> None:
    assert ChatSettings().sampling() == SamplingParams()


@pytest.mark.parametrize("prompt", OPEN_PROMPTS)
def test_default_settings_do_not_loop_on_a_sentence(engine: Engine, prompt: str) -> None:
    params = SamplingParams(max_tokens=MAX_TOKENS)
    for seed in (1, 2):
        turn = engine.chat([{"role": "user", "content": prompt}], SamplingParams(**{**vars(params), "seed": seed}))
        text = "".join(turn)
        assert len(text.split()) > 20, text
        assert repeated_sentences(text) == [], f"seed {seed} looped:\n{text}"
