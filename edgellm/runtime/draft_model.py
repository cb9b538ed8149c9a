"""A draft model: a small model of the same vocabulary proposes tokens where lookup finds none.

Lookup decoding (edgellm.runtime.lookup) drafts only what the conversation already holds. For new
text a small model of the same family (the registry's `draft`, e.g. Qwen1.5-0.5B-Chat for
Qwen1.5-7B-Chat) guesses the next tokens greedily; the big model verifies them exactly as it
verifies lookup drafts (same `lookup.accept`, same exactness argument: the drafts only decide how
many positions one batch evaluates). Where the conversation does hold a match, lookup's draft is
used: it costs nothing to make.

The draft model keeps its own KV cache of the conversation, trimmed to the common prefix before
each draft (llama.cpp's speculative example does the same).

When it pays. A draft model pays only when its tokens cost a small fraction of a target step and
mostly agree with it; a pair that misses either makes decoding slower. `auto` picks the draft
length from the measured acceptance and per-token cost (the cost kept by the engine across turns,
so a model that cannot pay on this machine is not tried again), and also times whole rounds (drafting,
catching the draft model up on what lookup or the target wrote, verifying, sampling): once the
model's rounds yield fewer tokens per second than plain rounds, it stops drafting with the model
for the rest of the turn. Measured in bench/bench_draft_model.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np

from edgellm.errors import BadModelFile
from edgellm.runtime import lookup

if TYPE_CHECKING:
    from edgellm.runtime.engine import Engine

VOCAB_SLACK = 128  # llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE: padded embedding rows may differ
AUTO_FIRST = 4  # draft length `auto` starts from, before it has measured anything
MODEL_PRIOR = 0.85  # per-token acceptance of a draft model's tokens until measured
PLAIN_PROBES = 2  # plain rounds timed before the model drafts (`auto`): the rate to beat
MODEL_PROBES = 4  # model rounds timed before `auto` judges whether they pay


def check_vocabulary(target: Engine, draft: Engine) -> None:
    """The draft's tokens must mean the same to the target: same ids for the same pieces, same
    BOS/EOS; sizes may differ by padding. One line naming both files otherwise."""
    n_target = llama_cpp.llama_vocab_n_tokens(target._vocab)
    n_draft = llama_cpp.llama_vocab_n_tokens(draft._vocab)
    why = ""
    if abs(n_target - n_draft) > VOCAB_SLACK:
        why = f"{n_draft} tokens against {n_target}"
    elif (target.bos_token, target.eos_token) != (draft.bos_token, draft.eos_token):
        why = f"other BOS/EOS tokens ({draft.bos_token!r}/{draft.eos_token!r})"
    else:
        first = next((i for i in range(min(n_target, n_draft))
                      if target.piece(i, special=True) != draft.piece(i, special=True)), None)
        if first is not None:
            theirs, ours = draft.piece(first, special=True), target.piece(first, special=True)
            why = f"token {first} is {theirs!r} there, {ours!r} here"
    if why:
        raise BadModelFile(draft.path, f"cannot draft for {target.path.name}: another vocabulary ({why})")


@dataclass
class Rounds:
    """Tokens per second of a kind of round (draft, verify, sample), over this turn."""

    rounds: int = 0
    seconds: float = 0.0
    tokens: int = 0

    def add(self, seconds: float, tokens: int) -> None:
        self.rounds += 1
        self.seconds += seconds
        self.tokens += tokens

    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ModelDrafter(lookup.LookupDrafter):
    """Lookup first; the draft model where lookup has nothing. ``setting`` as LookupDrafter's
    (DRAFT_AUTO: the model's draft length follows its measured acceptance and cost)."""

    model: Engine | None = None
    _model_stats: lookup._Acceptance = field(default_factory=lambda: lookup._Acceptance(MODEL_PRIOR))
    _from_model: bool = False
    _began: float = 0.0  # when this round's draft started
    _plain: Rounds = field(default_factory=Rounds)  # rounds without drafts
    _by_model: Rounds = field(default_factory=Rounds)  # rounds the model drafted
    _model_off: bool = False  # `auto` found the model's rounds slower than plain ones

    def draft(self, room: int) -> list[int]:
        self._from_model = False
        self._began = time.perf_counter()
        drafts = super().draft(room)
        if drafts or room <= 0 or self.model is None or self.setting == lookup.DRAFT_OFF or self._model_off:
            return drafts
        if self.setting == lookup.DRAFT_AUTO and self._plain.rounds < PLAIN_PROBES:
            return []  # a plain round: what the model's rounds must beat
        k = self._model_length(room)
        if not k:
            return []
        self._from_model = True
        return self._greedy(k)

    def _model_length(self, room: int) -> int:
        limit = min(room, lookup.MAX_DRAFT)
        if self.setting != lookup.DRAFT_AUTO:
            return min(limit, self.setting)
        if not (self.costs.draft_token and self.costs.one):
            return min(limit, AUTO_FIRST)
        drafting = self.costs.draft_token / self.costs.one  # per drafted token, against one step of this model
        return lookup.best_length(self._model_stats.rate(), lambda b: self.costs(b) + drafting * (b - 1), limit)

    def _greedy(self, k: int) -> list[int]:
        """k tokens the draft model finds most likely after the conversation so far."""
        eng = self.model
        assert eng is not None
        n_vocab = llama_cpp.llama_vocab_n_tokens(eng._vocab)
        out: list[int] = []
        began = 0.0
        with eng._lock:
            eng._reuse_prefix(self.tokens)
            pending = self.tokens[len(eng._cached):]  # catching up first: not the cost of drafting
            for _ in range(k):
                if not eng._decode(pending) or len(eng._cached) + 1 >= eng.n_ctx:
                    break
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(eng._ctx, -1), shape=(n_vocab,))
                token = int(row.argmax())
                out.append(token)
                pending = [token]
                began = began or time.perf_counter()
        if len(out) > 1:  # seconds per drafted token: the one-token steps after the catch-up
            seconds = (time.perf_counter() - began) / (len(out) - 1)
            old = self.costs.draft_token
            self.costs.draft_token = seconds if not old else old + 0.2 * (seconds - old)
        return out

    def result(self, n_drafts: int, n_accepted: int) -> None:
        seconds = time.perf_counter() - self._began
        if self._from_model and n_drafts:
            self._model_stats.add(n_accepted, n_accepted + (n_accepted < n_drafts))  # judged up to the first miss
            self.drafted += n_drafts
            self.accepted += n_accepted
            self._by_model.add(seconds, n_accepted + 1)
            if (self.setting == lookup.DRAFT_AUTO and self._by_model.rounds >= MODEL_PROBES
                    and self._by_model.rate() < self._plain.rate() * lookup.MIN_GAIN):  # fmt: skip
                self._model_off = True
            return
        if not n_drafts:
            self._plain.add(seconds, 1)
        super().result(n_drafts, n_accepted)
