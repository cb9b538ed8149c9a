"""Continuous batching: many requests share one llama.cpp context, one decode step at a time.

`edgellm serve` answers several users at once from one model. Each request becomes one sequence
of a context opened with ``n_seq`` = slots and a unified KV cache, and one owner thread runs the
loop (a llama.cpp context is not thread-safe; callers never wait on a decode):

    admit queued requests into free slots, keeping the longest cached prefix (copied from
    another sequence, or restored from the host-memory prompt cache, when that holds more of
    it); idle slots' caches move to that prompt cache  ->  one batch: the last sampled token of
    every generating sequence, then prompt tokens up to one chunk  ->  llama_decode  ->
    each sequence samples in llama.cpp with its own chain (grammar included)  ->  emit pieces

A long prompt goes in chunks, so a stream waits at most one chunk per token; a cancel frees
its slot before the next step; beyond the slots requests wait in a bounded queue and further
ones are refused (QueueFull). llama-server's ``update_slots`` and Ollama's ``processBatch``
(../shared/ANCHORS.md) are the models; unlike llama-server, prompt chunks are capped per step so
a long prompt cannot stall the other streams for longer than one chunk."""

from __future__ import annotations

import codecs
import collections
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from edgellm.errors import ContextOverflow, EdgeLLMError
from edgellm.runtime import planner, prompt_cache
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, put_tokens
from edgellm.runtime.prompt_cache import PromptCache, common_prefix

DEFAULT_CHUNK = 256  # prompt tokens per step: a longer prompt waits, the streams do not
DEFAULT_QUEUE = 32  # requests waiting for a slot before further ones are refused
DEFAULT_STREAM_INTERVAL_S = 0.1  # pieces of one stream sent together within this window (see Outbox)
MAX_DEFAULT_SLOTS = 4  # batching pays from about 4 sequences on a laptop CPU (../shared/NOTES.md)

# event callback: emit(event, **payload) with event in "queued", "piece", "done", "error"
Emit = Callable[..., None]


class QueueFull(EdgeLLMError):
    """Every slot is busy and the waiting queue is full: try again later (HTTP 503)."""


class BadRequest(EdgeLLMError):
    """A request the engine cannot run as asked (a grammar llama.cpp refuses, ...): HTTP 400."""


@dataclass
class BatchRequest:
    """One generation: the prompt's token ids and how to sample the answer."""

    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF, root rule "root"
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; N: the sampled token's log-probability and the N likeliest
    embed: bool = False  # an embedding of the prompt instead of a completion


def grammar_for(response_format: dict[str, Any] | None) -> str | None:
    """OpenAI's ``response_format`` as GBNF: any JSON object, or JSON that validates against a
    schema (llama-cpp-python's port of llama.cpp's converter)."""
    from llama_cpp import llama_grammar

    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return llama_grammar.JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}  # type: ignore[union-attr]
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
        try:
            return llama_grammar.json_schema_to_gbnf(json.dumps(schema))
        except Exception as err:  # the converter raises bare Exceptions on schemas it cannot express
            raise BadRequest(f"response_format.json_schema: cannot turn the schema into a grammar: {err}") from None
    raise BadRequest(f"response_format.type {kind!r} is not one of text, json_object, json_schema")


def default_slots(path: str | os.PathLike[str], ctx_per_slot: int) -> int:
    """How many sequences to serve at once: up to MAX_DEFAULT_SLOTS, as many as memory holds
    with ``ctx_per_slot`` tokens of KV cache each (at least one)."""
    machine = planner.probe()
    for n in range(MAX_DEFAULT_SLOTS, 1, -1):
        _, _, est = planner.for_file(path, ctx_per_slot * n)
        if planner.verdict(est, machine):
            return n
    return 1


class StopMatcher:
    """OpenAI's ``stop`` strings over streamed text: text that might begin a stop string is held
    back until it cannot; text from a stop string on is never sent."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to send now, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        held = self.held + text
        cut = min((i for i in (held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            return held[:cut], True
        keep = max((k for s in self.stops for k in range(min(len(s) - 1, len(held)), 0, -1)
                    if held.endswith(s[:k])), default=0)  # fmt: skip
        self.held = held[len(held) - keep:]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


class Outbox:
    """A stream's pieces on their way out, sent together when they come faster than ``interval``.

    Every piece costs the same CPU however short: a pipe message, an event-loop wakeup, an SSE
    write, and the client's parse (the `openai` client's costs more than the server's). On a
    laptop that CPU is taken from llama.cpp's threads, so at 100+ tokens a second one piece per
    token slows every stream. The first piece goes at once (time to first token is untouched);
    after it, a piece waits only while the next step would still come within ``interval`` of
    the last send, so no text is ever held longer than that (100 ms: ten updates a second, faster
    than anyone reads; measured in docs/benchmarks.md, `edgellm serve`). vLLM's
    ``--stream-interval`` does the same by token count; ``--stream-interval 0`` sends every
    token at once."""

    def __init__(self, emit: Emit, interval: float) -> None:
        self.emit = emit
        self.interval = interval
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.sent_at = 0.0  # 0: nothing sent yet

    def add(self, text: str, logprobs: list[dict[str, Any]] | None, now: float, next_step: float) -> None:
        self.text.append(text)
        if logprobs:
            self.logprobs.extend(logprobs)
        if not self.sent_at or now + next_step - self.sent_at >= self.interval:
            self.flush(now)

    def flush(self, now: float) -> None:
        if not (self.text or self.logprobs):
            return
        payload: dict[str, Any] = {"logprobs": self.logprobs} if self.logprobs else {}
        self.emit("piece", text="".join(self.text), **payload)
        self.text, self.logprobs, self.sent_at = [], [], now


class _Job:
    """A request from submit to its last event."""

    def __init__(self, key: object, req: BatchRequest, emit: Emit, sampler: Any, interval: float) -> None:
        self.key = key
        self.req = req
        self.emit = emit
        self.out = Outbox(emit, interval)
        self.sampler = sampler
        self.cancelled = False
        self.slot: _Slot | None = None
        self.todo: list[int] = []  # prompt tokens still to evaluate
        self.generated: list[int] = []
        self.last: int | None = None  # sampled, to be evaluated next step
        self.row = -1  # this job's output row in the current batch
        self.cached = 0
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopMatcher(req.stop)
        self.embedding: np.ndarray | None = None
        self.t_submit = time.perf_counter()
        self.t_start = 0.0
        self.ttft = 0.0


@dataclass
class _Slot:
    """One llama.cpp sequence and the tokens its KV cache holds (kept after a request ends, then
    parked in the prompt cache when the next request comes, so the next turn of that
    conversation evaluates only what is new)."""

    seq: int
    cached: list[int] = field(default_factory=list)
    job: _Job | None = None
    last_used: float = 0.0


class BatchEngine:
    """``slots`` requests at once on one model; ``submit`` and ``cancel`` from any thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: LoadOptions | None = None,
        *,
        slots: int = 4,
        chunk: int = DEFAULT_CHUNK,
        max_queue: int = DEFAULT_QUEUE,
        stream_interval: float = DEFAULT_STREAM_INTERVAL_S,
        cache_ram: int = prompt_cache.DEFAULT_LIMIT,
    ) -> None:
        opts = options or LoadOptions()
        self.stream_interval = max(0.0, stream_interval)
        self._step_s = 0.0  # how long a step (decodes, sampling, events) takes lately: when a held piece goes
        self.slots_n = max(1, slots)
        self.engine = Engine(path, dataclasses.replace(opts, n_seq=self.slots_n))
        eng = self.engine
        self.n_ctx_seq = eng.n_ctx // self.slots_n  # every sequence fits at once: no KV eviction
        self.chunk = max(1, min(chunk, eng.n_batch))
        self.max_queue = max_queue
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(eng._vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(eng._model)
        self._slots = [_Slot(i) for i in range(self.slots_n)]
        self._parked = PromptCache(cache_ram)  # idle slots' caches, out of the decodes' way
        self._store = eng.kv_store if eng.state_key is not None else None  # `--cache-size`: kept on disk
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[object, _Job] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._batch = llama_cpp.llama_batch_init(eng.n_batch, 0, 1)
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgellm-batch")
        self._thread.start()

    # -- callers' side -----------------------------------------------------------------------
    def submit(self, key: object, req: BatchRequest, emit: Emit) -> None:
        """Queue a request; raises ContextOverflow, BadRequest or QueueFull at once. Events go
        to ``emit``: ``queued`` now, then ``piece``s, then one ``done`` or ``error``."""
        limit = self.n_ctx_seq if not req.embed else self.engine.n_batch
        if len(req.prompt) >= limit:
            what = "the context of one sequence" if not req.embed else "one embedding batch"
            raise ContextOverflow(
                f"the prompt is {len(req.prompt)} tokens but {what} holds {limit}: shorten it"
                + (" or raise --ctx" if not req.embed else "")
            )
        if not req.prompt:
            raise BadRequest("the prompt is empty")
        if req.embed and llama_cpp.llama_pooling_type(self.engine._ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE:
            raise BadRequest("this model pools its own embeddings, which edgellm serve does not read yet")
        sampler = None if req.embed else self._sampler(req)
        with self._cond:
            if self._closing:
                raise EdgeLLMError("the model is shutting down")
            free = sum(s.job is None for s in self._slots)
            if len(self._queue) >= free + self.max_queue:  # what waits beyond the free slots is bounded
                if sampler:
                    llama_cpp.llama_sampler_free(sampler)
                raise QueueFull(
                    f"all {self.slots_n} slots are busy and {len(self._queue)} requests are waiting: retry later"
                )
            job = _Job(key, req, emit, sampler, self.stream_interval)
            self._jobs[key] = job
            self._queue.append(job)
            emit("queued", prompt_tokens=len(req.prompt), waiting=len(self._queue))  # before any piece
            self._cond.notify()

    def cancel(self, key: object) -> None:
        """Stop a request: it ends (``done``, reason ``cancelled``) before the next decode step."""
        with self._cond:
            job = self._jobs.get(key)
            if job is not None:
                job.cancelled = True
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.engine.cancel()  # a decode in progress stops at its next graph node
        self._thread.join()
        self._save_to_disk()
        llama_cpp.llama_batch_free(self._batch)
        self.engine.close()

    def _save_to_disk(self) -> None:
        """Every conversation held, in the slots and parked, to the disk store (`--cache-size`),
        so that it comes back after a restart. Only now: a write of a long conversation's cache
        on the owner thread would stall every stream, and at shutdown it stalls nobody."""
        if self._store is None:
            return
        ctx, key = self.engine._ctx, self.engine.state_key
        for slot in self._slots:
            if slot.cached:
                self._store.save(ctx, key, slot.cached, seq=slot.seq)
        seq = self._slots[0].seq
        for parked in self._parked:
            tokens = self._parked.restore(ctx, parked, seq)
            if tokens:
                self._store.save(ctx, key, tokens, seq=seq)

    def busy(self) -> tuple[int, int]:
        """(slots in use, requests waiting)."""
        with self._cond:
            return sum(s.job is not None for s in self._slots), len(self._queue)

    def _sampler(self, req: BatchRequest) -> Any:
        """The request's sampler chain, all in llama.cpp: grammar first (it masks the tokens the
        grammar forbids), the penalties (OpenAI's presence/frequency, llama.cpp's repeat), then the
        Engine's usual chain."""
        eng = self.engine
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if req.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(eng._vocab, req.grammar.encode(), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise BadRequest("llama.cpp could not parse the grammar for this response_format")
            llama_cpp.llama_sampler_chain_add(chain, grammar)
        params = req.params
        if req.presence_penalty or req.frequency_penalty:  # one penalties sampler, one token history
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_penalties(
                self.n_vocab, params.repeat_last_n, params.repeat_penalty, req.frequency_penalty,
                req.presence_penalty))  # fmt: skip
            params = dataclasses.replace(params, repeat_penalty=1.0)
        llama_cpp.llama_sampler_chain_add(chain, eng._sampler(params))
        return chain

    # -- the owner thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._queue and not any(s.job for s in self._slots):
                    self._cond.wait()
                if self._closing:
                    break
                self._reap()
                self._admit()
            began = time.perf_counter()
            self._step()
            self._step_s += 0.2 * (time.perf_counter() - began - self._step_s)
        for job in [*self._queue, *(s.job for s in self._slots if s.job)]:
            self._finish(job, error=EdgeLLMError("the model was shut down"))

    def _reap(self) -> None:
        """End cancelled requests (under the lock)."""
        for job in [j for j in self._queue if j.cancelled]:
            self._queue.remove(job)
            self._finish(job, "cancelled")
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot.job, "cancelled")

    def _admit(self) -> None:
        """Move waiting requests into free slots, then park the idle slots' caches (under the lock)."""
        admitted = False
        while self._queue:
            free = [s for s in self._slots if s.job is None]
            if not free:
                break
            self._place(self._queue.popleft(), free)
            admitted = True
        if admitted and self._parked.limit:
            for slot in self._slots:
                if slot.job is None and slot.cached:
                    self._park(slot)

    def _park(self, slot: _Slot) -> None:
        """Move an idle slot's cells to the prompt cache, out of the running streams' attention."""
        self._parked.save(self.engine._ctx, slot.seq, slot.cached)
        llama_cpp.llama_memory_seq_rm(self.engine._memory, slot.seq, -1, -1)
        slot.cached = []

    def _place(self, job: _Job, free: list[_Slot]) -> None:
        """Give ``job`` the free slot that already holds the most of its prompt (else the least
        recently used), then reuse the longest prefix of its prompt held anywhere: that slot's
        cells, another sequence's (unified cache: the cells are shared, not recomputed), a parked
        cache or the disk store (restored). One prompt token is always left to evaluate, for its
        logits."""
        prompt = job.req.prompt
        ctx, mem = self.engine._ctx, self.engine._memory
        usable = 0 if job.req.embed else len(prompt) - 1
        slot = max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
        keep = min(common_prefix(slot.cached, prompt), usable)
        if keep == 0:
            slot = min(free, key=lambda s: s.last_used)
        if keep < len(slot.cached):  # what this prompt does not reuse is parked before it is overwritten
            self._parked.save(ctx, slot.seq, slot.cached)
        donor = max(self._slots, key=lambda s: common_prefix(s.cached, prompt))
        shared = min(common_prefix(donor.cached, prompt), usable)
        key, parked = self._parked.best(prompt)
        parked = min(parked, usable)
        loaded = 0
        if self._store is not None and usable > max(keep, shared, parked):  # a conversation from before a restart
            loaded = self._store.restore(ctx, self.engine.state_key, prompt[:usable], max(keep, shared, parked),
                                         seq=slot.seq)  # fmt: skip
            if not loaded and llama_cpp.llama_memory_seq_pos_max(mem, slot.seq) < 0:
                keep = 0  # a file was tried and failed: the sequence was emptied
        if loaded:
            keep = loaded
        elif key is not None and parked > max(keep, shared):
            restored = self._parked.restore(ctx, key, slot.seq)
            keep = parked if restored is not None else 0
            llama_cpp.llama_memory_seq_rm(mem, slot.seq, keep, -1)
        elif shared > keep and donor is not slot:
            llama_cpp.llama_memory_seq_rm(mem, slot.seq, 0, -1)
            llama_cpp.llama_memory_seq_cp(mem, donor.seq, slot.seq, 0, shared)
            keep = shared
        elif not llama_cpp.llama_memory_seq_rm(mem, slot.seq, keep, -1):
            llama_cpp.llama_memory_seq_rm(mem, slot.seq, 0, -1)
            keep = 0
        slot.cached = prompt[:keep]
        slot.job, job.slot = job, slot
        job.cached, job.todo = keep, prompt[keep:]
        job.t_start = time.perf_counter()

    def _step(self) -> None:
        """One llama_decode for every running request, then sampling. An embedding's chunk, if
        any, is a decode of its own first (llama_set_embeddings applies to a whole decode): the
        streams still advance every step."""
        running = [s.job for s in self._slots if s.job is not None]
        embedding = next((j for j in running if j.req.embed and j.todo), None)
        if embedding is not None:
            self._decode([(embedding, embedding.todo[: self.chunk], True)], embeddings=True)
        work = [(j, [j.last], True) for j in running if j.last is not None]
        budget = min(self.chunk, self.engine.n_batch - len(work))
        for job in sorted((j for j in running if j.todo and not j.req.embed), key=lambda j: j.t_start):
            if budget <= 0:
                break
            take = job.todo[:budget]
            work.append((job, take, len(take) == len(job.todo)))
            budget -= len(take)
        if work:
            self._decode(work, embeddings=False)

    def _fill(self, work: list[tuple[_Job, list[int], bool]]) -> int:
        """Put each job's tokens in the batch after what its sequence holds; logits for the last
        token where asked (all of them for an embedding). Returns the batch size."""
        batch, n = self._batch, 0
        for job, tokens, want_last in work:
            last = len(tokens) - 1
            n = put_tokens(batch, n, tokens, job.slot.seq, len(job.slot.cached),
                           lambda k: job.req.embed or (want_last and k == last))  # noqa: B023 (called at once)
            job.row = n - 1
        batch.n_tokens = n
        return n

    def _decode(self, work: list[tuple[_Job, list[int], bool]], *, embeddings: bool) -> None:
        eng = self.engine
        n = self._fill(work)
        if embeddings:
            llama_cpp.llama_set_embeddings(eng._ctx, True)
        try:
            rc = llama_cpp.llama_decode(eng._ctx, self._batch)
            if rc == 0 and embeddings:
                job, tokens, _ = work[0]
                rows = [np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(eng._ctx, i), shape=(self.n_embd,))
                        for i in range(len(tokens))]  # fmt: skip
                total = np.sum(rows, axis=0, dtype=np.float64)
                job.embedding = total if job.embedding is None else job.embedding + total
        finally:
            if embeddings:
                llama_cpp.llama_set_embeddings(eng._ctx, False)
        with self._cond:
            if rc != 0:
                err = EdgeLLMError(f"llama.cpp failed to evaluate a batch of {n} tokens (code {rc})")
                if eng.cancelled:
                    return  # closing
                for job, _, _ in work:
                    llama_cpp.llama_memory_seq_rm(eng._memory, job.slot.seq, len(job.slot.cached), -1)
                    self._finish(job, error=err)
                return
            for job, tokens, _ in work:
                job.slot.cached.extend(tokens)
                if job.todo:
                    del job.todo[: len(tokens)]
                    if job.todo:
                        continue
                    if job.req.embed:
                        self._finish_embedding(job)
                        continue
                self._sample(job)

    def _sample(self, job: _Job) -> None:
        """Sample the job's next token from its output row; emit its text; end it if done."""
        eng = self.engine
        token = llama_cpp.llama_sampler_sample(job.sampler, eng._ctx, job.row)
        if job.cancelled:
            self._finish(job, "cancelled")
            return
        if eng.is_end_of_turn(token):
            self._finish(job, "stop")
            return
        job.generated.append(token)
        text, stopped = job.stops.feed(job.utf8.decode(eng.piece(token)))
        logprobs = [self._logprobs(job.row, token, job.req.logprobs)] if job.req.logprobs is not None else None
        if text or logprobs:
            now = time.perf_counter()
            job.ttft = job.ttft or now - job.t_submit
            job.out.add(text, logprobs, now, self._step_s)
        if stopped:
            self._finish(job, "stop")
        elif len(job.generated) >= job.req.params.max_tokens > 0 or len(job.slot.cached) + 1 >= self.n_ctx_seq:
            self._finish(job, "length")
        else:
            job.last = token

    def _logprobs(self, row: int, token: int, top: int) -> dict[str, Any]:
        """OpenAI's per-token logprobs entry, from the model's raw distribution at ``row``."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.engine._ctx, row), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())

        def entry(t: int) -> dict[str, Any]:
            raw = self.engine.piece(int(t))
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": float(logp[t]), "bytes": list(raw)}

        best = np.argpartition(-logp, top)[:top] if top else []
        return {**entry(token), "top_logprobs": [entry(t) for t in sorted(best, key=lambda t: -logp[t])]}

    def _finish_embedding(self, job: _Job) -> None:
        vec = job.embedding / len(job.req.prompt)
        norm = float(np.linalg.norm(vec)) or 1.0
        job.emit("embedding", embedding=(vec / norm).astype(np.float32).tolist())
        llama_cpp.llama_memory_seq_rm(self.engine._memory, job.slot.seq, 0, -1)
        job.slot.cached = []  # an embedding's KV is of no use to a chat
        self._finish(job, "stop")

    def _finish(self, job: _Job, reason: str = "stop", *, error: BaseException | None = None) -> None:
        """The job's last event; its slot (and KV cache, kept for reuse) is free again. While
        other streams run, the cache is parked at once rather than at the next admission."""
        slot = job.slot
        if slot is not None:
            slot.job, slot.last_used = None, time.perf_counter()
            if self._parked.limit and slot.cached and any(s.job for s in self._slots):
                self._park(slot)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job.sampler:
            llama_cpp.llama_sampler_free(job.sampler)
            job.sampler = None
        if error is not None:
            job.emit("error", error=type(error).__name__, message=str(error))
            return
        tail = job.stops.flush() + job.utf8.decode(b"", final=True)
        if tail:
            job.out.text.append(tail)
        job.out.flush(time.perf_counter())
        job.emit(
            "done",
            finish_reason=reason,
            prompt_tokens=len(job.req.prompt),
            cached_tokens=job.cached,
            completion_tokens=len(job.generated),
            queue_seconds=(job.t_start or time.perf_counter()) - job.t_submit,
            ttft_seconds=job.ttft,
            seconds=time.perf_counter() - job.t_submit,
        )
