"""Lookup decoding: draft tokens the conversation already holds, let the model verify them in one batch.

Answers that repeat their prompt (code returned with one change, a quoted paragraph fixed) are
slow on a CPU one token at a time, yet the next tokens are right there in the context. Prompt
lookup (llama.cpp's `lookup` examples; Saxena's prompt-lookup decoding) finds the last few tokens
earlier in the conversation and proposes what followed them there; the model evaluates the
pending token and the drafts in one `llama_decode`, which costs less than evaluating them one by one.

Exactness. The drafts never touch a probability: row i of the batch holds the logits the model
gives after the pending token and drafts 1..i, the same logits plain decoding would compute at that
position: bit for bit on the default model while the KV cache view is within 256 cells
(tests/test_lookup.py). Elsewhere llama.cpp's CPU backend computes a batch row with other kernels
than one token, where that is faster, and so rounds differently: F16 weights from 2 rows
(llamafile's sgemm), weights repacked at load (Q4_K among them) from 4 rows, K-quants from 8 rows
(its tiled kernel); and past 256 cells flash attention splits one token's keys across threads but
not a batch's, with values summed in F16 either way. Measured here: up to 0.03 apart in logits
(F16), 0.5 (Q4_K_M), 0.9 (any weights past 256 cells); llama.cpp's own noise, its plain decoding
is no nearer the exact value. There a near tie may go either way, as in llama.cpp's own
speculative decoding. (Q4_K_M loaded without repacking, with GGML_CPU_TILED_MM=0, is bit-exact at
every batch size, but its one-token steps are ~25% slower: not worth it.) Each row is
sampled, in order, with the turn's own sampler chain, exactly as plain decoding would sample it,
and a draft counts only if it *equals* the sampled token; at the first difference the sampled token
is kept, the rows after it are thrown away unsampled (KV cache rolled back). So every kept token
was drawn from the model's own distribution with the sampler's own random stream, one draw per kept
token, in plain decoding's order: same seed, same tokens, greedy or sampled, repeat penalties
included. Drafts only decide how many positions one `llama_decode` evaluates.

When it pays. A batch of b tokens costs more than one token (on 2 CPU cores with the 135M default
model about 1 + 0.4 b tokens' worth, on F16 weights far less), so `auto` drafts only where it
expects to win: it measures what batches cost on this machine and model (`BatchCosts`, each size
tried, kept by the engine across turns) and, in this turn, how often the
first token after a match of each length is right and how often a copy runs on once it started
(`DraftStats`: copies are runs, so "each token right with probability a" undersells them), then
picks the draft length k with the most expected tokens per unit of time,
(1 + first * (1 + a + ... + a^(k-1))) / cost(k + 1), drafting nothing when no k beats plain
decoding by MIN_GAIN. The priors (a 2-token match is mostly a common phrase, a 6-token one mostly
a copy) were tuned by replaying recorded answers against measured batch costs, then checked with
`bench/bench_lookup.py`.

Copies with edits. Code returned with a variable renamed breaks every n-gram at each edit: after
`acc` (where the source had `total`) no recent tokens occur in the source until two tokens have
passed, and then the key (` =`, ` 0`) may point into the wrong one of several similar functions. So
the drafter follows the copy in progress with a cursor in its source, moved on by every token the
answer copies, drafted or not, and across edits (the idea of code editors' "speculative edits"):
where the model's token replaced one source token and the copy goes on after it, that is a rename,
learned for the turn and written into later drafts (`total` drafted as `acc`), and the token after
the edit is guessed at once (`SKIP`); where its last token stands just ahead in the source, an
insertion ended or a deletion happened (`RESYNC`). Only copies are followed (a run of EDIT_MIN_RUN
tokens, not a phrase met again), auto alone guesses, each kind of guess has its own learned
acceptance and is first tried short (free writing: bench/notes/lookup.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DRAFT_AUTO = -1  # `--draft auto`
DRAFT_OFF = 0  # `--draft off`
MAX_DRAFT = 16  # longest draft `auto` tries (and the cap of `--draft N`)
NGRAM_MIN, NGRAM_MAX = 2, 6  # match lengths looked up, longest first

# `auto`'s prior beliefs, replaced by measurements as it goes:
# P(the first drafted token is right) after a match of L tokens: in free text a 2-token match is
# mostly a common phrase that continues differently, the longer the match the likelier a copy in
# progress: 1 - (1 - FIRST_AT_2) * FIRST_DECAY^(L - 2), L counted up to MATCH_CAP
FIRST_AT_2, FIRST_DECAY, MATCH_CAP = 0.25, 0.7, 16
PRIOR_CONTINUE = 0.95  # P(the next draft is right | the one before was): copies run on
PRIOR_WEIGHT = 1.0  # how many observations a prior is worth
PRIOR_RHO = 0.3  # extra cost of each drafted token before any batch is measured (optimistic)
MIN_GAIN = 1.08  # draft only where the expected speed-up beats this (priors and measured costs are that uncertain)
# Following a copy across an edit (see "Copies with edits"): the keys its drafts are judged under
# in DraftStats (match lengths are >= NGRAM_MIN), with their priors
SKIP, RESYNC = -1, -2  # the model's token replaced the source's; its last token is just ahead in the source
EDIT_PRIORS = {SKIP: 0.9, RESYNC: 0.6}  # a copy rarely changes one token and then stops
EDIT_PROBE = 4  # the longest draft of a kind not yet tried this turn (a miss in free writing is cheap)
ALIGN_WINDOW = 8  # how far ahead of the cursor RESYNC looks for the last token
ALIGN_SPAN = 32  # tokens written since the copy last ran, after which the cursor is dropped
EDIT_MIN_RUN = 6  # tokens a copy must have run for an edit in it to be followed (not a phrase met again)
RENAME_MIN_RUN = 4  # tokens a copy must have run for a one-token replacement in it to be learned as a rename
# A batch size never measured, between measured ones, is priced this much below the line between them,
# so that auto tries it once: costs are not monotonic (Qwen2.5-Coder-1.5B Q4_K_M on 2 cores: 16 tokens
# 7.1 steps, 13 and 17 tokens 8.1 and 8.5; llama.cpp's kernels take rows in blocks), and a size priced
# by its neighbours alone would never be tried
UNTRIED_DISCOUNT = 0.9


def parse_draft(value: str) -> int:
    """`--draft auto|off|N` as SamplingParams.draft: DRAFT_AUTO, DRAFT_OFF or N (0..MAX_DRAFT; 0 is off)."""
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


def expected_tokens(a: float, k: int, first: float | None = None) -> float:
    """Tokens one batch of k drafts yields when the first draft is right with probability
    ``first`` (default ``a``) and each later one with probability ``a`` given the one before it
    was: 1 + first * (1 + a + ... + a^(k-1)); with first = a, 1 + a + a^2 + ... + a^k."""
    first = a if first is None else first
    run = float(k) if a >= 1.0 else (1.0 - a**k) / (1.0 - a)
    return 1.0 + first * run


def best_length(a: float, cost: Callable[[int], float], limit: int, first: float | None = None) -> int:
    """The draft length 0..limit with the most expected tokens per unit of time (0: do not draft);
    ``cost(b)``: what a batch of b tokens costs against one token; ``a``, ``first``: as in
    expected_tokens."""
    best, best_rate = 0, MIN_GAIN
    for k in range(1, limit + 1):
        rate = expected_tokens(a, k, first) / cost(k + 1)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


@dataclass
class BatchCosts:
    """What a batch of b tokens costs against one token, measured on this machine and model (kept
    by the engine across turns). Measured here: a step from one token to a batch (llama.cpp
    switches kernels), then rising with the size, steep on quantized weights (a 17-token batch
    costs 8x one token on 2 cores) and flat on F16 weights (matrix-matrix kernels), not along a
    line (see __call__). So each size measured is priced by its own moving average, sizes between by
    interpolation (a little below it, so that they get tried), sizes past the largest along the
    slope of a line fitted to all measured sizes;
    before two sizes are measured the slope is PRIOR_RHO: optimistic, so that `auto` tries a
    longer draft where acceptance is high, measures it, and stops if it does not pay."""

    one: float = 0.0  # seconds of a one-token step
    ratios: dict[int, float] = field(default_factory=dict)  # batch size -> cost / one-token cost
    draft_token: float = 0.0  # seconds per token of a draft model's greedy steps (draft_model), moving average
    alpha: float = 0.2
    _line: tuple[float, float] | None = None  # (cost at 2, slope per token), fitted to ratios

    def record(self, size: int, seconds: float) -> None:
        if size == 1:
            self.one = seconds if not self.one else self.one + self.alpha * (seconds - self.one)
        elif self.one:
            sample = seconds / self.one
            old = self.ratios.get(size)
            self.ratios[size] = sample if old is None else old + self.alpha * (sample - old)
            self._line = None

    def line(self) -> tuple[float, float]:
        """(cost of 2 tokens, cost of each token more) from the measured sizes (least squares)."""
        if self._line is None:
            points = sorted(self.ratios.items())
            if not points:
                self._line = (1.0 + PRIOR_RHO, PRIOR_RHO)
            elif len(points) == 1:
                (b, c), = points
                self._line = (max(1.0, c - PRIOR_RHO * (b - 2)), PRIOR_RHO)
            else:
                mb = sum(b for b, _ in points) / len(points)
                mc = sum(c for _, c in points) / len(points)
                slope = sum((b - mb) * (c - mc) for b, c in points) / sum((b - mb) ** 2 for b, _ in points)
                slope = max(slope, 0.0)
                self._line = (max(1.0, mc + slope * (2 - mb)), slope)
        return self._line

    def __call__(self, size: int) -> float:
        """A measured size's own cost; between measured sizes (and one token, 1.0) a straight line
        between its neighbours, less UNTRIED_DISCOUNT; past the largest, the fitted slope from
        there. Local, because the curve is not a line (Qwen2.5-Coder-1.5B Q4_K_M: 8 tokens cost 6.1
        steps, 16 cost 7.1): a line through sizes mostly tried long priced short batches ever
        higher as a chat went on, until `auto` stopped drafting. A size priced too cheap is tried
        and measured; one measured too dear weighs only on its neighbours."""
        if size <= 1:
            return 1.0
        if size in self.ratios:
            return self.ratios[size]
        below = max((b for b in self.ratios if b < size), default=None)
        above = min((b for b in self.ratios if b > size), default=None)
        if above is None:
            at2, slope = self.line()
            return at2 + slope * (size - 2) if below is None else self.ratios[below] + slope * (size - below)
        low, cost_low = (below, self.ratios[below]) if below is not None else (1, 1.0)
        between = cost_low + (self.ratios[above] - cost_low) * (size - low) / (above - low)
        return max(1.0, UNTRIED_DISCOUNT * between)


@dataclass
class _Acceptance:
    """How often a kind of draft token is right this turn: a Beta posterior's mean."""

    prior: float
    accepted: float = 0.0
    tried: float = 0.0

    def rate(self) -> float:
        return (self.accepted + self.prior * PRIOR_WEIGHT) / (self.tried + PRIOR_WEIGHT)

    def add(self, accepted: int, tried: int) -> None:
        self.accepted += accepted
        self.tried += tried


@dataclass
class DraftStats:
    """How lookup drafts fared this turn: the first token after a match of each length, and
    every later token given the one before was right. Per turn, as what one answer copies says
    little about the next (a quote, then free writing)."""

    first: dict[int, _Acceptance] = field(default_factory=dict)  # by match length
    cont: _Acceptance = field(default_factory=lambda: _Acceptance(PRIOR_CONTINUE))

    def first_rate(self, match: int) -> float:
        return self._first(match).rate()

    def tried(self, match: int) -> bool:
        return match in self.first and self.first[match].tried > 0

    def _first(self, match: int) -> _Acceptance:
        if match not in self.first:
            prior = EDIT_PRIORS.get(match, 1.0 - (1.0 - FIRST_AT_2) * FIRST_DECAY ** (match - NGRAM_MIN))
            self.first[match] = _Acceptance(prior)
        return self.first[match]

    def add(self, match: int, drafted: int, accepted: int) -> None:
        self._first(match).add(min(accepted, 1), 1)
        if accepted:  # the later tokens were judged up to the first miss
            self.cont.add(accepted - 1, min(drafted - 1, accepted))


@dataclass
class LookupDrafter:
    """Drafts from n-grams of the turn's own tokens (prompt, then the answer as it grows).

    The index maps each n-gram (NGRAM_MIN..NGRAM_MAX tokens) to where it last ended, updated in O(1)
    per token, so a lookup costs a few dict probes whatever the conversation's length. ``setting``:
    DRAFT_AUTO (length chosen per step, see the module docstring) or a fixed N."""

    setting: int
    costs: BatchCosts = field(default_factory=BatchCosts)
    ends_turn: Callable[[int], bool] = lambda _: False  # the model's end-of-turn tokens
    stats: DraftStats = field(default_factory=DraftStats)
    tokens: list[int] = field(default_factory=list)
    drafted: int = 0  # draft tokens proposed this turn
    accepted: int = 0  # of which the model agreed with
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)
    _indexed: int = 0  # tokens[:_indexed] are in the index (built at the first draft, not before the first token)
    _last_match: int = 0  # DraftStats key of the last draft: its match length, SKIP or RESYNC
    _cursor: int = -1  # the source token the copy in progress expects next (-1: no copy)
    _cursor_at: int = 0  # len(tokens) when the answer was last in step with the source
    _resync: int = -1  # where the last RESYNC guessed the copy goes on
    _missed_at: int = -1  # where in ``tokens`` the model's token replaced a draft after the first
    _renamed: dict[int, int] = field(default_factory=dict)  # source token -> what the answer writes for it

    def extend(self, tokens: Sequence[int]) -> None:
        if self._cursor < 0:  # no copy followed (a prompt, free writing): nothing to step per token
            self.tokens.extend(tokens)
            return
        for token in tokens:  # _follow moves the cursor, never drops it
            self.tokens.append(token)
            self._follow(token)

    def _follow(self, token: int) -> None:
        """Keep the cursor in step with the answer while it copies, across one-token renames
        (learned here, inside a copy only: after a phrase met again, `import json` where the
        source has `import time`, " time" is not renamed " json" for the rest of the turn) and
        where a RESYNC guess proves right."""
        toks, cursor = self.tokens, self._cursor
        since = len(toks) - 1 - self._cursor_at  # tokens out of step before this one
        if since == 0 and token == self._source_token(cursor):
            self._step(cursor + 1)
        elif (since == 1 and cursor + 1 < self._cursor_at and token == self._source_token(cursor + 1)
              and self._run(cursor, self._cursor_at) >= RENAME_MIN_RUN):
            self._renamed[toks[cursor]] = toks[-2]  # the token before replaced the source's, then the copy went on
            if self._missed_at == len(toks) - 2:
                self.stats.cont.accepted += 1  # that miss was the rename, not the copy ending
            self._step(cursor + 2)
        elif self._resync >= 0 and token == self._source_token(self._resync):
            self._step(self._resync + 1)

    def _step(self, cursor: int) -> None:
        self._cursor, self._cursor_at, self._resync = cursor, len(self.tokens), -1

    def _source_token(self, pos: int) -> int:
        token = self.tokens[pos]
        return self._renamed.get(token, token)

    def _index_new(self) -> None:
        toks, index = self.tokens, self._index
        for end in range(max(self._indexed, NGRAM_MIN), len(toks)):  # n-grams ending before toks[end]
            for n in range(NGRAM_MIN, min(NGRAM_MAX, end) + 1):
                index[tuple(toks[end - n : end])] = end
        self._indexed = len(toks)

    def draft(self, room: int) -> list[int]:
        """Up to ``room`` tokens: where the copy in progress goes on (across an edit), else what
        followed the longest recent match of the last tokens."""
        if room <= 0 or self.setting == DRAFT_OFF:
            return []
        self._index_new()
        found = (self._aligned() if self.setting == DRAFT_AUTO else None) or self._matched()
        if found is None:
            return []
        start, match = found
        auto = self.setting == DRAFT_AUTO
        limit = min(room, len(self.tokens) - start, MAX_DRAFT if auto else self.setting)
        # a copy of a message runs into the chat template's end of turn: not past it
        limit = next((i + 1 for i in range(limit) if self.ends_turn(self.tokens[start + i])), limit)
        if auto:
            if match in EDIT_PRIORS and not self.stats.tried(match):
                limit = min(limit, EDIT_PROBE)
            limit = best_length(self.stats.cont.rate(), self.costs, limit, first=self.stats.first_rate(match))
        self._last_match = match
        return [self._source_token(p) for p in range(start, start + limit)]

    def _aligned(self) -> tuple[int, int] | None:
        """(where to draft from, DraftStats key) following the copy in progress, or None."""
        toks, cursor = self.tokens, self._cursor
        if cursor < 0:
            return None
        since = len(toks) - self._cursor_at  # tokens written out of step
        if since > ALIGN_SPAN:
            self._cursor = -1
            return None
        if since == 0:
            return cursor, max(self._run(cursor), NGRAM_MIN)  # in step: the copy goes on
        if self._run(cursor, self._cursor_at) < EDIT_MIN_RUN:
            return None  # a phrase met again, not a copy: nothing to follow across an edit
        for p in range(cursor, min(cursor + ALIGN_WINDOW, self._cursor_at)):
            if toks[p] == toks[-1]:  # an insertion ends, or a deletion: the copy goes on after p
                self._resync = p + 1
                return p + 1, RESYNC
        return (cursor + 1, SKIP) if since == 1 else None  # one token replaced the cursor's?

    def _matched(self) -> tuple[int, int] | None:
        """(what followed the longest recent n-gram match, its run length), or None; the copy to
        follow from there on, unless only a phrase matched while a copy is being followed."""
        toks = self.tokens
        for n in range(min(NGRAM_MAX, len(toks)), NGRAM_MIN - 1, -1):
            start = self._index.get(tuple(toks[-n:]))
            if start is not None:
                run = self._run(start)
                if self._cursor < 0 or run >= EDIT_MIN_RUN:  # a phrase met again leaves a copy's cursor
                    self._step(start)
                return start, run
        return None

    def _run(self, start: int, end: int | None = None) -> int:
        """How long the copy that reached ``start`` has run: tokens before ``start`` equal to those
        before ``end`` (default: the last ones), renames applied (up to MATCH_CAP; the index keys
        stop at NGRAM_MAX)."""
        toks, match, end = self.tokens, 0, len(self.tokens) if end is None else end
        while (match < MATCH_CAP and start - match > 0
               and self._source_token(start - match - 1) == toks[end - match - 1]):
            match += 1
        return match

    def result(self, n_drafts: int, n_accepted: int) -> None:
        """How the model judged the last draft: ``n_accepted`` of its ``n_drafts`` tokens kept."""
        if not n_drafts:
            return
        self.drafted += n_drafts
        self.accepted += n_accepted
        self.stats.add(self._last_match, n_drafts, n_accepted)
        if 0 < n_accepted < n_drafts:
            self._missed_at = len(self.tokens) + n_accepted
