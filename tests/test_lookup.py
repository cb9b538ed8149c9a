"""Lookup decoding (edgellm.runtime.lookup): the drafts change how many positions one llama_decode
evaluates, never which tokens come out. Real llama.cpp on the default model and on a larger copy
of it (its weights dequantized to F16 by llama.cpp: 2.5x the bytes, other matmul kernels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.bench_lookup import CODE, PARAGRAPH, TASKS, parted_at, parting, sampled_logits
from edgellm.runtime import lookup
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams

PROMPTS = {name: prompt for name, (_, prompt) in TASKS.items()}  # copy-heavy and free writing

@pytest.fixture(scope="module")
def f16_engine(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from bench.bench_gpu_precision import rewritten

    path = rewritten(default_model, "F16", tmp_path_factory.mktemp("f16"))
    with Engine(path, LoadOptions(n_ctx=2048, probe=False)) as eng:
        yield eng


def answer(engine: Engine, prompt: str, **params: object) -> tuple[list[int], object]:
    engine.reset()
    turn = engine.chat([{"role": "user", "content": prompt}], SamplingParams(**params))  # type: ignore[arg-type]
    turn.result()
    return turn.tokens, turn.stats


# -- the pure parts ------------------------------------------------------------------------------
def test_accept_keeps_drafts_while_they_equal_the_sampled_tokens() -> None:
    rows = [5, 6, 9, 8]  # what the sampler draws at rows 0..3
    asked: list[int] = []

    def sample(i: int) -> int:
        asked.append(i)
        return rows[i]

    assert lookup.accept([5, 6, 7], sample) == [5, 6, 9]  # the third draft differs: the sampled 9 ends it
    assert asked == [0, 1, 2]  # row 3 (after a rejected draft) is never sampled: no random draw wasted
    asked.clear()
    assert lookup.accept([5, 6, 9], sample) == [5, 6, 9, 8]  # all accepted, plus the row after the last
    assert lookup.accept([], sample) == [5]  # no drafts: plain decoding


def test_auto_measures_how_long_the_copy_has_run() -> None:
    d = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO)
    text = list(range(100, 130))
    d.extend([*text, 7, *text[:20]])  # the first 20 tokens of the text again: a copy in progress
    assert d.draft(room=4) == text[20:24]  # a 20-token run: the copy goes on, drafted even before any cost is known
    assert d._last_match == lookup.MATCH_CAP  # the run was measured past the 6-token index key


def test_drafter_proposes_what_followed_the_longest_recent_match() -> None:
    d = lookup.LookupDrafter(setting=4)
    d.extend([1, 2, 3, 4, 5, 6, 9, 3, 4, 7, 8, 2, 3, 4])
    # [2, 3, 4] occurred at 1..3 (then 5, 6) and [3, 4] more recently at 7..8 (then 7): the longer match wins
    assert d.draft(room=3) == [5, 6, 9]
    assert d.draft(room=0) == []
    d.extend([10])  # [.., 4, 10] never seen: nothing to draft
    assert d.draft(room=4) == []
    off = lookup.LookupDrafter(setting=lookup.DRAFT_OFF)
    off.extend([1, 2, 3, 1, 2])
    assert off.draft(room=4) == []


def copying(drafter: lookup.LookupDrafter, answer: list[int]) -> list[tuple[list[int], int, int]]:
    """Replay ``answer`` through ``drafter`` as the engine does (draft, judge, keep the accepted
    drafts and the model's token): (drafts, how many kept, DraftStats key) of each step that drafted."""
    steps, pos = [], 1
    drafter.extend(answer[:1])
    while pos < len(answer):
        drafts = drafter.draft(len(answer) - pos)
        kept = 0
        while kept < len(drafts) and drafts[kept] == answer[pos + kept]:
            kept += 1
        drafter.result(len(drafts), kept)
        if drafts:
            steps.append((drafts, kept, drafter._last_match))
        drafter.extend(answer[pos : pos + kept + 1])
        pos += kept + 1
    return steps


def cheap_batches() -> lookup.BatchCosts:
    """Batch costs where drafting pays readily (F16 weights, a laptop's cores)."""
    costs = lookup.BatchCosts()
    costs.record(1, 1.0)
    for b in range(2, 18):
        costs.record(b, 1.0 + 0.05 * (b - 1))
    return costs


def test_a_copy_with_a_rename_is_drafted_through_the_renamed_tokens() -> None:
    """Code returned with `total` renamed: the rename is learned where the copy goes on after the
    model's token, and later drafts carry the new name, so they run past every other occurrence."""
    total, acc = 900, 901
    lines = [[1, 2, 3, 4, 5, 6, total], [7, 8, 9, 10, 11, 12, total], [13, 14, 15, 16, 17, 18, total, 19]]
    source = [t for line in lines for t in line]
    answer = [acc if t == total else t for t in source]
    d = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO, costs=cheap_batches())
    d.extend([50, *source, 51])
    steps = copying(d, answer)
    assert d._renamed == {total: acc}
    assert any(acc in drafts[:kept] for drafts, kept, _ in steps)  # a draft wrote the new name, and it was right
    assert sum(kept for _, kept, _ in steps) >= len(answer) - 10


def test_a_phrase_met_again_teaches_no_rename() -> None:
    """A module returned as asked: `import json` then `import time` in the prompt. At the answer's
    `\\n import` the two-token match points at the later line, whose ` time` the model replaces
    by ` json`, and the newline after it matches again: a phrase, not a copy, so no rename. (Learned
    as one, every later `time.time()` was drafted as `json`, and missed: measured on
    Qwen2.5-Coder-1.5B, bench_lookup's module task.)"""
    fence, nl, imp, json_, time_, from_ = 90, 1, 2, 3, 4, 5
    module = [imp, json_, nl, imp, time_, nl, from_, 6, 7, 8, nl, 9, 10, 11, 12, nl, 13, time_, 14, time_, 15, nl]
    d = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO, costs=cheap_batches())
    d.extend([50, nl, *module, 51])
    steps = copying(d, [fence, nl, *module])
    assert d._renamed == {}
    last = steps[-2:]  # the copy runs on through ` time`, drafted as itself and kept
    assert len(last) == 2 and all(drafts[:kept] == drafts and time_ in drafts for drafts, kept, _ in last)


def test_a_copy_resyncs_after_an_insertion_in_its_own_source() -> None:
    """An inserted token: the copy is rejoined where the next token stands in its own source, not
    at the last occurrence of an n-gram elsewhere (two functions with the same body)."""
    body = [20, 21, 22, 23, 24, 25, 26, 27]
    first, second = [1, 2, *body, 3], [4, 5, *body, 6]
    answer = [1, 2, 20, 21, 22, 23, 24, 25, 77, 26, 27, 3]  # the first function, 77 inserted
    d = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO, costs=cheap_batches())
    d.extend([*first, *second, 99])
    steps = copying(d, answer)
    assert ([27, 3], 2, lookup.RESYNC) in steps  # after 77 and 26: from the first function (a 2-gram says 6)
    assert d._index[(26, 27)] > len(first)  # the 2-gram's last occurrence is in the second


def test_edit_drafts_stop_where_no_copy_runs() -> None:
    """In free writing a lucky match sets a cursor; a miss of an edit kind makes it unlikely
    for the rest of the turn, and its first try is short."""
    stats = lookup.DraftStats()
    assert stats.first_rate(lookup.SKIP) == lookup.EDIT_PRIORS[lookup.SKIP] and not stats.tried(lookup.SKIP)
    stats.add(lookup.SKIP, drafted=4, accepted=0)
    assert stats.tried(lookup.SKIP) and stats.first_rate(lookup.SKIP) < 0.5
    d = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO)
    d.extend([*range(100, 140), 7, *range(100, 110)])
    d.result(0, 0)
    d._cursor, d._cursor_at = 10, len(d.tokens)  # a copy of the first run, expecting its token 110
    d.extend([5])  # the model wrote 5 where the source has 110
    assert len(d.draft(room=16)) <= lookup.EDIT_PROBE and d._last_match == lookup.SKIP
    phrase = lookup.LookupDrafter(setting=lookup.DRAFT_AUTO)
    phrase.extend([*range(100, 140), 7, 8, 9, 104, 105])  # two tokens met again: a phrase, not a copy
    phrase._cursor, phrase._cursor_at = 6, len(phrase.tokens)
    phrase.extend([5])
    assert phrase._aligned() is None


def test_drafts_stop_at_the_end_of_the_turn() -> None:
    """A quoted message is followed in the prompt by the template's end of turn and the next
    header: a draft may end the answer, never run past it (measured: two wasted 16-token
    batches at the end of every quote on Qwen2.5-Coder-1.5B)."""
    end = 999
    d = lookup.LookupDrafter(setting=8, ends_turn=lambda t: t == end)
    d.extend([1, 2, 3, 4, end, 7, 8, 9, 10, 1, 2])
    assert d.draft(room=8) == [3, 4, end]


def test_auto_drafts_only_where_it_pays() -> None:
    def line(rho: float):  # noqa: ANN202 - a cost curve: a batch of b tokens costs 1 + rho * (b - 1)
        return lambda b: 1 + rho * (b - 1)

    assert lookup.best_length(a=0.3, cost=line(0.8), limit=16) == 0  # free writing on a small model: plain decoding
    assert lookup.best_length(a=0.99, cost=line(0.8), limit=16) >= 4  # copying: several tokens per batch
    assert lookup.best_length(a=0.99, cost=line(0.05), limit=16) == 16  # ... as many as allowed where batches are cheap
    assert 1 <= lookup.best_length(a=0.9, cost=line(0.1), limit=16) < 16
    assert lookup.best_length(a=0.99, cost=line(0.8), limit=0) == 0
    assert lookup.expected_tokens(0.5, 2) == pytest.approx(1.75)
    costs = lookup.BatchCosts()
    assert costs(1) == 1 and costs(5) == pytest.approx(1 + 4 * lookup.PRIOR_RHO)  # not measured: optimistic
    costs.record(1, 0.010)
    for _ in range(50):
        costs.record(5, 0.040)  # measured: a 5-token batch costs 4x one token here
    assert costs(5) == pytest.approx(4.0, rel=0.01)
    only_five = lambda b: costs(b) if b == 5 else 99  # noqa: E731
    assert lookup.best_length(a=0.85, cost=only_five, limit=16) == 0  # so 4 drafts do not pay


def test_costs_of_sizes_never_tried_follow_the_measured_line() -> None:
    """Measured batch costs of a small quantized model on 2 cores (a step up from one token,
    then ~0.45 of a token per token): sizes not measured are priced on the fitted line, not on
    the optimistic prior, so `auto` does not try a long draft that cannot pay."""
    costs = lookup.BatchCosts()
    costs.record(1, 0.010)
    for b in (2, 4, 8):
        costs.record(b, 0.010 * (1.0 + 0.45 * b))
    assert costs(16) == pytest.approx(1.0 + 0.45 * 16, rel=0.02)
    assert costs(3) == pytest.approx(lookup.UNTRIED_DISCOUNT * (1.0 + 0.45 * 3), rel=0.02)  # untried: see below
    assert costs(1) == 1.0
    # drafts right 60% of the time (first and later) do not pay at these prices; near-certain ones do
    assert lookup.best_length(a=0.6, cost=costs, limit=16, first=0.6) == 0
    assert lookup.best_length(a=0.98, cost=costs, limit=16, first=0.95) >= 6  # 7 tokens, untried, is a bargain


def test_costs_follow_a_curve_that_is_not_a_line() -> None:
    """What an engine had measured after five turns on Qwen2.5-Coder-1.5B Q4_K_M (2 cores): long
    batches mostly, and a curve that bends (8 tokens 7.8 steps, 16 tokens 8.6). A line through
    them priced a 2-token batch at ~3 steps where it costs 1.6-1.8 (measured on its own), so
    short drafts stopped paying. Each size is priced by its own measurement, sizes between by
    interpolation (from one token, 1.0, below the smallest measured; less UNTRIED_DISCOUNT), past
    the largest along the line's slope."""
    measured = {5: 3.75, 6: 4.17, 7: 4.74, 8: 7.79, 11: 8.57, 14: 8.5, 16: 8.57, 17: 10.57}
    costs = lookup.BatchCosts()
    costs.record(1, 1.0)
    for b, c in measured.items():
        costs.record(b, c)
    assert costs.line()[0] > 2.5  # the line's price of 2 tokens
    untried = lookup.UNTRIED_DISCOUNT
    assert costs(2) == pytest.approx(untried * (1.0 + (3.75 - 1.0) / 4))  # ~1.7: between one token and 5
    assert all(costs(b) == pytest.approx(c) for b, c in measured.items())
    assert costs(10) == pytest.approx(untried * (7.79 + (8.57 - 7.79) * 2 / 3))
    assert costs(18) == pytest.approx(10.57 + costs.line()[1])


def test_a_size_never_tried_is_tried_once_then_priced_by_its_measurement() -> None:
    """Costs are not monotonic: on Qwen2.5-Coder-1.5B Q4_K_M (2 cores) a 16-token batch costs 7.1
    steps, 13 and 17 tokens 8.1 and 8.5 (llama.cpp's kernels take rows in blocks). Priced on the
    line between its neighbours, 16 was never drafted, and copies paid 17 tokens' price for one
    token more. Untried, it is priced a little below that line, so a copy tries it; measured, it
    keeps its own price, cheap or dear."""
    copy = {"a": 0.99, "first": 0.99}
    for measured_16, drafts in ((7.1, 15), (9.5, 16)):
        costs = lookup.BatchCosts()
        costs.record(1, 1.0)
        costs.record(13, 8.1)
        costs.record(17, 8.5)
        assert lookup.best_length(cost=costs, limit=16, **copy) == 15  # untried: worth a try
        costs.record(16, measured_16)
        assert costs(16) == measured_16
        assert lookup.best_length(cost=costs, limit=16, **copy) == drafts


def test_draft_stats_learn_which_matches_to_trust() -> None:
    stats = lookup.DraftStats()
    prior2, prior6, prior_cont = stats.first_rate(2), stats.first_rate(6), stats.cont.rate()
    assert prior2 < prior6 < stats.first_rate(16) < 1  # the longer the copy so far, the likelier it goes on
    for _ in range(10):  # free writing: two-token matches continue differently
        stats.add(2, drafted=4, accepted=0)
    for _ in range(10):  # a quote: six-token matches run on
        stats.add(6, drafted=8, accepted=8)
    assert stats.first_rate(2) < prior2 / 2
    assert stats.first_rate(6) > max(0.9, prior6) and stats.cont.rate() > prior_cont
    assert lookup.expected_tokens(0.5, 2, first=1.0) == pytest.approx(2.5)  # 1 + 1 * (1 + 0.5)
    tried, accepted = stats.cont.tried, stats.cont.accepted
    stats.add(6, drafted=8, accepted=3)  # a miss after three: three later tokens judged, two right
    assert (stats.cont.tried - tried, stats.cont.accepted - accepted) == (3, 2)


def test_parse_draft() -> None:
    assert (lookup.parse_draft("auto"), lookup.parse_draft("off"), lookup.parse_draft("7")) == (-1, 0, 7)
    for bad in ("-3", "many", str(lookup.MAX_DRAFT + 1)):
        with pytest.raises(ValueError, match="--draft takes"):
            lookup.parse_draft(bad)


# -- on llama.cpp ----------------------------------------------------------------------------------
EXACT_CELLS = 256  # KV cells up to which llama.cpp computes a default-model batch row as it computes one token
F16_ROUNDING = 0.05  # logits of an F16 batch row and of a one-token step differ by up to ~0.03 here
LONG_ROUNDING = 1.0  # ... and past EXACT_CELLS, any weights, by up to ~0.9 (flash attention's F16 sums, split or not)
COPIED = ("code", "quote")  # the prompts whose answers the default model copies from (the module it explains in prose)


def one_by_one_and_batched(eng: Engine, context: list[int], follow: list[int]) -> tuple[np.ndarray, np.ndarray]:
    eng.reset()
    eng.logits(context, first=len(context))
    one_by_one = np.concatenate([eng.logits([t]) for t in follow])
    eng.reset()
    eng.logits(context, first=len(context))
    return one_by_one, eng.logits(follow)


@pytest.mark.parametrize("model", ["default", "f16"])
def test_batch_rows_are_the_logits_of_one_token_steps(engine: Engine, f16_engine: Engine, model: str) -> None:
    """What exactness rests on: row i of a verified batch holds the logits that evaluating the same
    tokens one at a time gives at that position. Bit for bit on the default model (Q4_1: the same
    dot-product kernel for 1 and n rows). With F16 weights llama.cpp multiplies batches with another
    kernel than single tokens (measured: up to 0.03 apart in logits of magnitude ~10, flash attention
    and KV type make no difference), so there lookup decoding equals plain decoding unless two tokens
    tie within that rounding, as for llama.cpp's own speculative decoding and prompt batches."""
    eng = engine if model == "default" else f16_engine
    prompt = eng.prompt_tokens([{"role": "user", "content": PROMPTS["code"]}])
    one_by_one, batched = one_by_one_and_batched(eng, prompt, eng.tokenize(CODE, add_special=False)[:9])
    if model == "default":
        assert np.array_equal(batched, one_by_one)
    else:
        assert np.abs(batched - one_by_one).max() < 0.1
        assert np.array_equal(batched.argmax(-1), one_by_one.argmax(-1))


def test_batch_rows_past_256_cells_differ_by_llama_cpps_rounding(default_model: Path) -> None:
    """Where exactness ends on the default model too: once the KV cache view passes 256 cells,
    llama.cpp's flash attention on the CPU splits a one-token step's keys across its threads (from
    512 cells) but not a batch's, and sums values in F16 in both: rows differ by up to ~0.9 in
    logits (one thread has nothing to split: exact; so two, fixed, not the governor's choice).
    That is llama.cpp's own numerical noise (its plain decoding is no nearer the exact value), so
    past 256 cells answers equal plain decoding's unless the top two tokens are that close."""
    with Engine(default_model, LoadOptions(n_ctx=2048, n_threads=2)) as eng:
        text = eng.tokenize(PARAGRAPH * 6, add_special=True)
        short, long = (one_by_one_and_batched(eng, text[:n], text[n : n + 6]) for n in (EXACT_CELLS - 6, EXACT_CELLS))
    assert np.array_equal(*short)
    assert 0 < np.abs(long[0] - long[1]).max() < LONG_ROUNDING


def assert_parted_at_a_tie(eng: Engine, prompt: str, plain: list[int], tokens: list[int], within: float) -> None:
    """Answers may part where the top two tokens tie ``within`` the batch kernels' rounding
    (the tests above), and only there: the logits as the greedy sampler saw them, after the
    repeat penalty on the answer's last tokens."""
    i = parted_at(plain, tokens)
    row = sampled_logits(eng, prompt, plain, i)
    assert abs(row[plain[i]] - row[tokens[i]]) < within, f"parted at token {i} without a tie"
    assert set(np.argsort(row)[-2:]) == {plain[i], tokens[i]}


def test_benchmarks_say_where_answers_part_and_how_near_a_tie(engine: Engine) -> None:
    """bench_lookup's "same tokens" column: "" for equal answers, else the token where they part
    and how far apart the sampler saw its two candidates (greedy took the higher: >= 0)."""
    prompt = PROMPTS["quote"]
    plain, _ = answer(engine, prompt, temperature=0, max_tokens=12, draft=lookup.DRAFT_OFF)
    other = [*plain[:5], plain[4], *plain[6:]]
    assert parting(engine, prompt, plain, list(plain)) == ""
    said = parting(engine, prompt, plain, other)
    gap = float(said.split("tokens ")[1].split(" apart")[0])
    row = sampled_logits(engine, prompt, plain, 5)
    assert said.startswith("**parted at token 5**") and gap == pytest.approx(row[plain[5]] - row[plain[4]], abs=0.01)
    assert row[plain[5]] == row.max()  # what greedy decoding chose, penalties applied


@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("model", ["default", "f16"])
def test_greedy_answer_identical_with_lookup(engine: Engine, f16_engine: Engine, model: str, prompt: str) -> None:
    """Bit for bit where batch rows are (the default model within 256 cells: every prompt but the
    33-line module); elsewhere parted only at a tie within the kernels' rounding."""
    eng = engine if model == "default" else f16_engine
    max_tokens = 96
    cells = len(eng.prompt_tokens([{"role": "user", "content": PROMPTS[prompt]}])) + max_tokens
    within = LONG_ROUNDING if cells > EXACT_CELLS else F16_ROUNDING if model == "f16" else 0.0
    plain, plain_stats = answer(eng, PROMPTS[prompt], temperature=0, max_tokens=max_tokens, draft=lookup.DRAFT_OFF)
    assert plain_stats.draft_tokens == 0
    for draft in (8, lookup.DRAFT_AUTO):
        tokens, stats = answer(eng, PROMPTS[prompt], temperature=0, max_tokens=max_tokens, draft=draft)
        if within and tokens != plain:
            assert_parted_at_a_tie(eng, PROMPTS[prompt], plain, tokens, within)
            continue
        assert tokens == plain, f"draft={draft}"
        assert stats.stop_reason == plain_stats.stop_reason
        if draft == 8 and prompt in COPIED:
            assert stats.accepted_tokens > 0  # the drafts were used: this compared something
            assert 0 < stats.acceptance_rate <= 1


def test_sampled_answer_identical_with_lookup(engine: Engine) -> None:
    """Same seed, same tokens: each kept token is the sampler's own draw, in plain decoding's order
    (repeat penalty included), so the distribution cannot differ."""
    params = dict(temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=1234, max_tokens=80)
    plain, _ = answer(engine, PROMPTS["quote"], draft=lookup.DRAFT_OFF, **params)
    drafted, stats = answer(engine, PROMPTS["quote"], draft=8, **params)
    assert drafted == plain
    assert stats.accepted_tokens > 0
    other_seed, _ = answer(engine, PROMPTS["quote"], draft=lookup.DRAFT_OFF, **{**params, "seed": 99})
    assert other_seed != plain  # the seed matters: the comparison above is not trivially true


def test_limits_stop_where_plain_decoding_stops(default_model: Path) -> None:
    """Drafts never run past the context or max_tokens: same tokens, same stop reason."""
    with Engine(default_model, LoadOptions(n_ctx=256, probe=False)) as eng:
        text = "Repeat this exactly: " + " ".join(["one two three four five"] * 30)
        n_prompt = len(eng.prompt_tokens([{"role": "user", "content": text}]))
        assert 150 < n_prompt < 240
        for max_tokens in (7, 0):  # 0: until the context is full (no repeat penalty: the model keeps repeating)
            greedy = dict(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens)
            plain, plain_stats = answer(eng, text, **greedy, draft=lookup.DRAFT_OFF)
            drafted, stats = answer(eng, text, **greedy, draft=16)
            assert drafted == plain
            assert stats.stop_reason == plain_stats.stop_reason
            assert stats.accepted_tokens > 0
        assert plain_stats.stop_reason == "context" and n_prompt + len(plain) == eng.n_ctx


def test_cache_after_a_lookup_turn_holds_only_accepted_tokens(engine: Engine) -> None:
    """Rejected drafts are rolled back: a second turn that reuses the cache answers as after a reset."""
    first = [{"role": "user", "content": PROMPTS["code"]}]
    engine.reset()
    turn = engine.chat(first, SamplingParams(temperature=0, max_tokens=48, draft=8))
    reply = turn.result()
    assert turn.stats.draft_tokens > turn.stats.accepted_tokens > 0  # some drafts were rejected, some kept
    full = engine.prompt_tokens(first) + turn.tokens
    assert len(engine._cached) <= len(full) and engine._cached == full[: len(engine._cached)]
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "Now rename it back."}]
    turn = engine.chat(second, SamplingParams(temperature=0, max_tokens=48, draft=8))
    reused = turn.result()
    assert turn.stats.cached_tokens > len(engine.prompt_tokens(first)) // 2
    engine.reset()
    assert engine.chat(second, SamplingParams(temperature=0, max_tokens=48, draft=lookup.DRAFT_OFF)).result() == reused


# -- a draft model ---------------------------------------------------------------------------------
def test_draft_model_answers_as_plain_decoding(default_model: Path, f16_engine: Engine) -> None:
    """The default model's F16 copy (same vocabulary) drafts for the default model where lookup
    finds nothing: free writing. The target is the default model, whose batch rows are its
    one-token steps bit for bit (test above), so its answer must equal plain decoding's whatever
    the draft lengths (with an F16 target a near-tie may part them: see the test above). The
    model's drafts were used."""
    with Engine(default_model, LoadOptions(n_ctx=2048, probe=False)) as alone:
        plain, _ = answer(alone, PROMPTS["free"], temperature=0, max_tokens=64, draft=lookup.DRAFT_OFF)
    with Engine(default_model, LoadOptions(n_ctx=2048, probe=False, draft_model=str(f16_engine.path))) as eng:
        assert eng.draft_engine is not None
        for draft in (lookup.DRAFT_AUTO, 4):  # auto first: once it has measured this pair, it stops using it
            tokens, stats = answer(eng, PROMPTS["free"], temperature=0, max_tokens=64, draft=draft)
            assert tokens == plain, f"draft={draft}"
            assert stats.accepted_tokens > 0


def test_auto_stops_drafting_with_a_model_whose_rounds_are_slower_than_plain_ones() -> None:
    """`auto` times two plain rounds first, then judges the model's rounds after MODEL_PROBES of
    them: slower than plain (a draft that costs too much or misses) -> no more model drafts this
    turn; faster -> it goes on."""
    import time

    from edgellm.runtime import draft_model

    def drafter_after(model_round_s: float, tokens: int) -> draft_model.ModelDrafter:
        d = draft_model.ModelDrafter(lookup.DRAFT_AUTO, model=object())  # type: ignore[arg-type]
        d.extend([1, 2, 3, 4, 5, 6, 7])  # no n-gram repeats: lookup finds nothing
        for _ in range(draft_model.PLAIN_PROBES):
            assert d.draft(8) == []  # plain rounds: the rate to beat
            d._began = time.perf_counter() - 0.010
            d.result(0, 0)
        d._greedy = lambda k: [9] * k  # type: ignore[method-assign]
        for _ in range(draft_model.MODEL_PROBES):
            assert d.draft(8) and d._from_model
            d._began = time.perf_counter() - model_round_s
            d.result(tokens, tokens - 1)
        return d

    slow = drafter_after(0.050, 2)  # 2 tokens in 50 ms against 1 in 10 ms
    assert slow._model_off and slow.draft(8) == []
    fast = drafter_after(0.012, 3)  # 3 tokens in 12 ms
    assert not fast._model_off and fast.draft(8)


def test_a_draft_model_measured_too_slow_is_not_tried_again_next_turn() -> None:
    """The draft model's step cost is kept by the engine across turns (in its BatchCosts): once a
    turn has measured that a drafted token costs half a target step (the 0.5B for the 1.5B on 2
    cores), where a two-token batch costs 1.7 steps, the next turn drafts nothing with it, without
    probing again; a draft 20x cheaper than a step is used."""
    from edgellm.runtime import draft_model

    def costs(draft_token: float) -> lookup.BatchCosts:
        c = lookup.BatchCosts()
        c.record(1, 1.0)
        for b in range(2, 18):
            c.record(b, 1.0 + 0.45 * (b - 1))  # Q4_K_M on 2 cores (bench/notes/lookup.md)
        c.draft_token = draft_token
        return c

    def model_drafts(shared: lookup.BatchCosts) -> list[int]:
        d = draft_model.ModelDrafter(lookup.DRAFT_AUTO, shared, model=object())  # type: ignore[arg-type]
        d._plain.rounds = draft_model.PLAIN_PROBES  # the plain rounds are timed
        d.extend([1, 2, 3, 4, 5, 6, 7])  # lookup finds nothing
        d._greedy = lambda k: [9] * k  # type: ignore[method-assign]
        return d.draft(8)

    assert model_drafts(costs(0.5)) == []
    assert model_drafts(costs(0.05))
    assert model_drafts(lookup.BatchCosts()) == [9] * draft_model.AUTO_FIRST  # nothing measured yet: a first probe


def test_draft_model_of_another_vocabulary_is_refused(default_model: Path, tmp_path: Path) -> None:
    import gguf

    from edgellm.errors import BadModelFile
    from tests.gguf_edit import with_metadata

    other = with_metadata(default_model, tmp_path / "other-vocab.gguf",
                          {"tokenizer.ggml.bos_token_id": (gguf.GGUFValueType.UINT32, 5)})
    with (Engine(default_model, LoadOptions(n_ctx=512, probe=False, draft_model=str(other))) as eng,
          pytest.raises(BadModelFile, match="another vocabulary")):
        eng.draft_engine  # noqa: B018


def test_registry_names_drafts_of_the_same_vocabulary(tmp_path: Path) -> None:
    from edgellm.models import registry

    bundled = registry.load([registry.BUNDLED])
    assert bundled.lookup("qwen1.5-7b-chat").draft == "qwen1.5-0.5b-chat"
    for entry in bundled:  # every bundled draft is a smaller model of the same family
        if entry.draft:
            assert bundled.lookup(entry.draft).shape.params < entry.shape.params
    user = tmp_path / "models.toml"
    user.write_text('[models."qwen1.5-7b-chat"]\ndraft = "llama-2-7b-chat"\n')
    with pytest.raises(registry.RegistryError, match="another vocabulary"):
        registry.load([registry.BUNDLED, user])
