"""Lookup decoding: draft tokens the conversation already holds, let the model verify them in one batch.

Answers that repeat their prompt (code returned with one change, a quoted paragraph fixed) are
slow on a CPU one token at a time, yet the next tokens are right there in the context. Prompt
lookup (llama.cpp's `lookup` examples; Saxena's prompt-lookup decoding) finds the last few tokens
earlier in the conversation and proposes what followed them there; the model evaluates the
pending token and the drafts in one `llama_decode`, which costs less than evaluating them one by one.

Exactness. The drafts never touch a probability: row i of the batch holds the logits the model
gives after the pending token and drafts 1..i, the same logits plain decoding would compute at that
position (checked bit for bit in tests/test_lookup.py). Each row is sampled, in order, with the
turn's own sampler chain, exactly as plain decoding would sample it, and a draft counts only if it
*equals* the sampled token; at the first difference the sampled token is kept, the rows after it are
thrown away unsampled (KV cache rolled back). So every kept token was drawn from the model's own
distribution with the sampler's own random stream, one draw per kept token, in plain decoding's
order: same seed, same tokens, greedy or sampled, repeat penalties included. Drafts only decide how
many positions one `llama_decode` evaluates.

When it pays. A batch of b tokens costs more than one token (on 2 CPU cores with the 135M default
model close to b times as much, on larger, memory-bound models far less), so `auto` drafts only
where it expects to win: it measures the cost of each batch size on this machine and model as it
goes (`BatchCosts`, kept by the engine across turns) and the acceptance of drafts per match length
in this turn (`LookupDrafter`), and picks the draft length k that maximises expected tokens per
unit of time, sum(a^i, i=0..k) / cost(k+1), drafting nothing when no k beats plain decoding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DRAFT_AUTO = -1  # `--draft auto`
DRAFT_OFF = 0  # `--draft off`
MAX_DRAFT = 16  # longest draft `auto` tries (and the cap of `--draft N`)
NGRAM_MIN, NGRAM_MAX = 2, 6  # match lengths looked up, longest first

# `auto`'s prior beliefs, replaced by measurements as the turn goes:
PRIOR_ACCEPT = 0.85  # per-token acceptance of a fresh match length, worth PRIOR_WEIGHT drafts
PRIOR_WEIGHT = 2.0
PRIOR_RHO = 0.3  # extra cost of each drafted token until measured, relative to one decode (optimistic)
MIN_GAIN = 1.02  # draft only where the expected speed-up beats this


def parse_draft(value: str) -> int:
    """`--draft auto|off|N` as SamplingParams.draft: DRAFT_AUTO, DRAFT_OFF or N (1..MAX_DRAFT)."""
    named = {"auto": DRAFT_AUTO, "off": DRAFT_OFF}
    if value in named:
        return named[value]
    if not value.isdigit() or not 0 <= int(value) <= MAX_DRAFT:
        raise ValueError(f"--draft takes auto, off or a number of tokens 0..{MAX_DRAFT}, not {value!r}")
    return int(value)


def accept(drafts: Sequence[int], sample: Callable[[int], int]) -> list[int]:
    """The tokens one verified batch yields: ``sample(i)`` draws row i (the position after the
    pending token and ``drafts[:i]``); drafts are kept while they equal the sampled token, and the
    first sampled token that differs (or the one after the last draft) ends the list. Always
    1..len(drafts)+1 tokens; the rows after the first difference are never sampled."""
    out = []
    for i, draft in enumerate(drafts):
        token = sample(i)
        out.append(token)
        if token != draft:
            return out
    out.append(sample(len(drafts)))
    return out


def expected_tokens(a: float, k: int) -> float:
    """Tokens one batch of k drafts yields when each draft is accepted with probability a
    (given the ones before it were): 1 + a + a^2 + ... + a^k."""
    return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def best_length(a: float, cost: Callable[[int], float], limit: int) -> int:
    """The draft length 0..limit with the most expected tokens per unit of time (0: do not draft);
    ``cost(b)``: what a batch of b tokens costs against one token."""
    best, best_rate = 0, MIN_GAIN
    for k in range(1, limit + 1):
        rate = expected_tokens(a, k) / cost(k + 1)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


@dataclass
class BatchCosts:
    """What a batch of b tokens costs against one token, measured on this machine and model (a
    moving average per batch size; kept by the engine across turns). It is not a straight line: on
    a small quantized model two tokens cost nearly twice one, on an F16 one sixteen cost a few times
    one (llama.cpp switches to matrix-matrix kernels). A size not measured yet is assumed to cost
    1 + PRIOR_RHO * (b - 1): optimistic, so that `auto` tries it once where acceptance is high,
    measures it, and drops it if it does not pay."""

    one: float = 0.0  # seconds of a one-token step
    ratios: dict[int, float] = field(default_factory=dict)  # batch size -> cost / one-token cost
    alpha: float = 0.2

    def record(self, size: int, seconds: float) -> None:
        if size == 1:
            self.one = seconds if not self.one else self.one + self.alpha * (seconds - self.one)
        elif self.one:
            sample = seconds / self.one
            old = self.ratios.get(size)
            self.ratios[size] = sample if old is None else old + self.alpha * (sample - old)

    def __call__(self, size: int) -> float:
        return 1.0 if size <= 1 else self.ratios.get(size, 1.0 + PRIOR_RHO * (size - 1))


@dataclass
class _Acceptance:
    """Per-token acceptance of drafts from one match length: a Beta posterior's mean."""

    accepted: float = 0.0
    tried: float = 0.0

    def rate(self) -> float:
        return (self.accepted + PRIOR_ACCEPT * PRIOR_WEIGHT) / (self.tried + PRIOR_WEIGHT)


@dataclass
class LookupDrafter:
    """Drafts from n-grams of the turn's own tokens (prompt, then the answer as it grows).

    The index maps each n-gram (NGRAM_MIN..NGRAM_MAX tokens) to where it last ended, updated in O(1)
    per token, so a lookup costs a few dict probes whatever the conversation's length. ``setting``:
    DRAFT_AUTO (length chosen per step, see the module docstring) or a fixed N."""

    setting: int
    costs: BatchCosts = field(default_factory=BatchCosts)
    tokens: list[int] = field(default_factory=list)
    drafted: int = 0  # draft tokens proposed this turn
    accepted: int = 0  # of which the model agreed with
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)
    _stats: dict[int, _Acceptance] = field(default_factory=dict)
    _indexed: int = 0  # tokens[:_indexed] are in the index (built at the first draft, not before the first token)
    _last_n: int = 0

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)

    def _index_new(self) -> None:
        toks, index = self.tokens, self._index
        for end in range(max(self._indexed, NGRAM_MIN), len(toks)):  # n-grams ending before toks[end]
            for n in range(NGRAM_MIN, min(NGRAM_MAX, end) + 1):
                index[tuple(toks[end - n : end])] = end
        self._indexed = len(toks)

    def draft(self, room: int) -> list[int]:
        """Up to ``room`` tokens that followed the longest recent match of the last tokens."""
        if room <= 0 or self.setting == DRAFT_OFF:
            return []
        self._index_new()
        toks = self.tokens
        for n in range(min(NGRAM_MAX, len(toks)), NGRAM_MIN - 1, -1):
            start = self._index.get(tuple(toks[-n:]))
            if start is None:
                continue
            auto = self.setting == DRAFT_AUTO
            limit = min(room, len(toks) - start, MAX_DRAFT if auto else self.setting)
            k = best_length(self._stats.setdefault(n, _Acceptance()).rate(), self.costs, limit) if auto else limit
            self._last_n = n
            return toks[start : start + k]
        return []

    def result(self, n_drafts: int, n_accepted: int) -> None:
        """How the model judged the last draft: ``n_accepted`` of its ``n_drafts`` tokens kept."""
        if not n_drafts:
            return
        self.drafted += n_drafts
        self.accepted += n_accepted
        stats = self._stats.setdefault(self._last_n, _Acceptance())
        stats.accepted += n_accepted
        stats.tried += n_accepted + (n_accepted < n_drafts)  # positions judged: up to the first miss
