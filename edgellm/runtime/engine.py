"""The runtime: one GGUF model in llama.cpp, chat turns streamed token by token.

Built on llama-cpp-python's C bindings rather than its `Llama` class so that the token loop is
ours: KV-cache reuse across turns, cancellation from any thread within one graph node, UTF-8
safe streaming, and exact per-turn statistics."""

from __future__ import annotations

import array
import codecs
import ctypes
import ctypes.util
import dataclasses
import functools
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from edgellm.errors import BadModelFile, ContextOverflow, EdgeLLMError
from edgellm.models import chat_templates, gguf_file, identity, store
from edgellm.runtime import llama_log, lookup, planner, probe, threads
from edgellm.runtime.kv_store import KVStore, key_digest

# Architectures whose own tokenizers NFC-normalize input (llama.cpp does not).
_NFC_ARCHITECTURES = frozenset({"qwen", "qwen2"})
_FALLBACK_TEMPLATE = chat_templates.chatml()

_backend_ready = threading.Lock()
_backend_done = False


def default_threads() -> int:
    """The most threads a context gets (edgellm.runtime.threads lowers it while cores are taken)."""
    return threads.default_threads()


def _init_backend(verbose: bool) -> None:
    global _backend_done
    llama_log.install(verbose)
    with _backend_ready:
        if not _backend_done:
            llama_cpp.llama_backend_init()
            _backend_done = True


def _libc_strlen() -> ctypes.c_void_p:
    """libc's strlen as llama.cpp's abort callback: `strlen(flag) != 0` reads a byte we own,
    so ggml polls cancellation at every graph node without taking Python's GIL."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    return ctypes.cast(libc.strlen, ctypes.c_void_p)


_STRLEN = _libc_strlen()


@dataclass
class LoadOptions:
    """How to load a model; None means "from the model / this machine"."""

    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0
    use_mmap: bool = True
    flash_attn: bool | None = None  # None: llama.cpp decides (on where the backend supports it)
    kv_f32: bool = False  # f32 KV cache (exactness tests); f16 otherwise
    n_batch: int = 512
    n_seq: int = 1  # sequences sharing the context (edgellm serve's slots); >1 unifies their KV cache
    repack: bool = True  # llama.cpp's extra (repacked / AMX) weight buffers
    op_offload: bool = True  # GPU builds: big batches of CPU layers still multiply on the GPU
    probe: bool = True  # load once in a child process first, so a llama.cpp crash cannot kill us
    verbose: bool = False
    loras: list[tuple[Path, float]] = field(default_factory=list)
    # ggml graph callback (llama_context_params.cb_eval), e.g. the importance-matrix collector
    eval_callback: object | None = None
    rpc: tuple[str, ...] = ()  # llama.cpp RPC workers (HOST:PORT); n_gpu_layers then counts the layers they hold
    cache_size: int = 0  # bytes of disk for closed chats' KV caches (edgellm.runtime.kv_store; run/chat: 4 GB); 0: none
    draft_model: str | None = None  # GGUF of a small model with the same vocabulary (edgellm.runtime.draft_model)


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1  # as Ollama: 1.0 let the default model loop on a sentence (tests/test_repetition.py)
    repeat_last_n: int = 64
    max_tokens: int = 1024
    seed: int | None = None
    draft: int = lookup.DRAFT_AUTO  # lookup decoding: DRAFT_AUTO, DRAFT_OFF or N tokens (edgellm.runtime.lookup)


@dataclass
class TurnStats:
    """Counts and timings of one chat turn."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    ttft_seconds: float = 0.0
    stop_reason: str = ""  # "stop" (end of turn), "length", "context", "cancelled"
    restored_tokens: int = 0  # of the cached tokens, how many came from a KV cache saved on disk
    draft_tokens: int = 0  # tokens drafted by lookup decoding / a draft model
    accepted_tokens: int = 0  # of which the model kept

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def evaluated_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def prompt_tps(self) -> float:
        return self.evaluated_prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds else 0.0


class Engine:
    """A loaded model and its context. One turn runs at a time; `cancel` works from any thread."""

    def __init__(self, path: str | os.PathLike[str], options: LoadOptions | None = None) -> None:
        self.options = options or LoadOptions()
        self.info = gguf_file.inspect(path)
        self.path = self.info.path
        if self.options.probe:
            probe.probe(self.path, self.options.n_gpu_layers)
        _init_backend(self.options.verbose)
        self._model = self._load_model()
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._ctx = None
        try:
            self._ctx = self._new_context()
            self._loras = self._apply_loras()
        except BaseException:
            self.close()
            raise
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._cancel_flag = ctypes.create_string_buffer(2)
        llama_cpp.llama_set_abort_callback(
            self._ctx, llama_cpp.ggml_abort_callback(_STRLEN.value), ctypes.cast(self._cancel_flag, ctypes.c_void_p)
        )
        self._lock = threading.Lock()
        self._cached: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._batch_costs = lookup.BatchCosts()  # what a verified batch costs here (lookup decoding), kept across turns
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_batch = llama_cpp.llama_n_batch(self._ctx)  # llama.cpp caps n_batch at n_ctx
        self.n_threads = self.options.n_threads or default_threads()
        self.template = self.info.chat_template or store.chat_template_for(self.path) or _FALLBACK_TEMPLATE
        self.system = identity.default_system(self.path)  # the registry's, for conversations that give none
        self.bos_token = self._special_text(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_token = self._special_text(llama_cpp.llama_vocab_eos(self._vocab))
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.normalize_nfc = self.info.architecture in _NFC_ARCHITECTURES

    # -- loading -------------------------------------------------------------------------------
    def _refusal(self, what: str, marker: int) -> BadModelFile:
        errors = llama_log.errors_since(marker)
        why = errors[0] if errors else "no reason given (rerun with --verbose)"
        return BadModelFile(self.path, f"llama.cpp could not {what}: {why.strip()}")

    def _load_model(self) -> ctypes.c_void_p:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = self.options.n_gpu_layers
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if self.options.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = self.options.repack
        if self.options.rpc:  # offload to the workers' devices, split by their free memory (llama.cpp's rule)
            from edgellm.runtime import rpc

            devices = rpc.device_array(rpc.client_devices(self.options.rpc))
            params.devices = ctypes.cast(devices, ctypes.c_void_p)  # NULL would keep every layer here
        marker = llama_log.mark()
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not model:
            raise self._refusal("load the model", marker)
        return model

    def _new_context(self) -> ctypes.c_void_p:
        opts = self.options
        params = llama_cpp.llama_context_default_params()
        train_ctx = llama_cpp.llama_model_n_ctx_train(self._model)
        params.n_ctx = opts.n_ctx or planner.default_context(train_ctx)
        params.n_batch = params.n_ubatch = opts.n_batch
        params.n_threads = params.n_threads_batch = opts.n_threads or default_threads()
        params.flash_attn_type = {
            None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[opts.flash_attn]
        params.op_offload = opts.op_offload
        params.n_seq_max = opts.n_seq
        params.kv_unified = opts.n_seq > 1  # one cache for all sequences: a shared prefix is copied, not recomputed
        if opts.kv_f32:
            params.type_k = params.type_v = 0  # GGML_TYPE_F32
        params.no_perf = True
        if opts.eval_callback is not None:
            params.cb_eval = opts.eval_callback
        marker = llama_log.mark()
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            raise self._refusal(f"create a {params.n_ctx}-token context (try a smaller --ctx)", marker)
        if opts.n_threads is None and params.n_threads > 1 and threads.adaptive():  # fewer while cores are taken
            self._governor = threads.Governor(ctx, params.n_threads)
        return ctx

    def _apply_loras(self) -> list[ctypes.c_void_p]:
        """Load the runtime LoRA adapters (GGUF) and enable them all on the context."""
        adapters = []
        for path, _scale in self.options.loras:
            marker = llama_log.mark()
            adapter = llama_cpp.llama_adapter_lora_init(self._model, str(path).encode())
            if not adapter:
                errors = llama_log.errors_since(marker)
                raise BadModelFile(path, f"llama.cpp refused the LoRA adapter: {errors[0] if errors else '?'}")
            adapters.append(adapter)
        if adapters:
            n = len(adapters)
            scales = (ctypes.c_float * n)(*(s for _, s in self.options.loras))
            array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*adapters)
            llama_cpp.llama_set_adapters_lora(self._ctx, array, n, scales)
        return adapters

    def close(self) -> None:
        """Free llama.cpp's memory now rather than at garbage collection."""
        draft = self.__dict__.pop("draft_engine", None)  # loaded at first use, if ever
        if draft is not None:
            draft.close()
        if getattr(self, "_governor", None):
            self._governor.stop()  # it sets the context's thread count: before the context goes
            self._governor = None
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- vocabulary ----------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (cached: the token loop asks for the same ids again and again)."""
        key = token if not special else ~token
        cached = self._pieces.get(key)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
            cached = self._pieces[key] = buf.raw[:n]
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _special_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def is_end_of_turn(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    # -- prompts -------------------------------------------------------------------------------
    def prepare(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Messages as the model sees them: the registry's system prompt first where the conversation
        has none (as Ollama sends a Modelfile's SYSTEM), NFC-normalized for Qwen."""
        if self.system and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": self.system}, *messages]
        if not self.normalize_nfc:
            return messages
        return [{**m, "content": unicodedata.normalize("NFC", m["content"])} for m in messages]

    def render(self, messages: list[dict[str, str]]) -> str:
        return chat_templates.render(
            self.template, self.prepare(messages), bos_token=self.bos_token, eos_token=self.eos_token
        )

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the rendered prompt; BOS added once, whether or not the template wrote it."""
        text = self.render(messages)
        add_bos = self._add_bos and not (self.bos_token and text.startswith(self.bos_token))
        return self.tokenize(text, add_special=add_bos)

    def fit(self, messages: list[dict[str, str]], reserve: int) -> tuple[list[dict[str, str]], int]:
        """Drop the oldest turns (never the system prompt or the last message) until the prompt
        plus ``reserve`` generated tokens fits the context. Returns (messages, how many dropped)."""
        system = [m for m in messages[:1] if m["role"] == "system"]
        rest = messages[len(system) :]
        dropped = 0
        while True:
            candidate = system + rest
            n = len(self.prompt_tokens(candidate))
            if n + reserve <= self.n_ctx or len(rest) <= 1:
                break
            cut = 2 if len(rest) > 2 and rest[0]["role"] == "user" else 1
            rest, dropped = rest[cut:], dropped + cut
        if n >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {n} tokens but the context holds {self.n_ctx}: shorten it or raise --ctx"
            )
        return candidate, dropped

    # -- generation ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the KV cache: the next turn evaluates its whole prompt."""
        with self._lock:
            llama_cpp.llama_memory_clear(self._memory, True)
            self._cached.clear()

    def cancel(self) -> None:
        """Stop the running turn (prompt processing included) as soon as possible."""
        self._cancel_flag[0] = b"\x01"

    @property
    def cancelled(self) -> bool:
        return self._cancel_flag[0] != b"\x00"

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> Turn:
        """Start a turn; iterate the result for text pieces. Cancels made after this call count."""
        self._cancel_flag[0] = b"\x00"
        return Turn(self, self.prompt_tokens(messages), params or SamplingParams())

    def _decode(self, tokens: list[int]) -> bool:
        """Evaluate ``tokens`` after the cached ones; False if cancelled (cache rolled back)."""
        start = len(self._cached)
        step = self.n_batch
        for i in range(0, len(tokens), step):
            chunk = tokens[i : i + step]
            arr = (llama_cpp.llama_token * len(chunk))(*chunk)
            rc = llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(arr, len(chunk)))
            if rc == 2 or self.cancelled:
                llama_cpp.llama_memory_seq_rm(self._memory, 0, start + i, -1)
                del self._cached[start + i :]
                return False
            if rc != 0:
                llama_cpp.llama_memory_seq_rm(self._memory, 0, start + i, -1)
                del self._cached[start + i :]
                raise EdgeLLMError(f"llama.cpp failed to evaluate the prompt (code {rc}); try a smaller --ctx")
            self._cached.extend(chunk)
        return True

    def logits(self, tokens: list[int], first: int = 0, *, keep: bool = True) -> np.ndarray:
        """Evaluate ``tokens`` after the cached ones and return the logits of ``tokens[first:]``
        (one float32 row per position): perplexity and KL divergence score every position, and
        benchmarks time raw decoding. ``keep=False``: every position is still an output (what an
        importance matrix measures) but nothing is copied out (an empty array), which at 4k tokens
        of a 150k vocabulary saves 2.5 GB. Call reset() first for a fresh sequence."""
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        out = np.empty((max(len(tokens) - first, 0) if keep else 0, n_vocab), dtype=np.float32)
        step, row = self.n_batch, 0
        batch = llama_cpp.llama_batch_init(step, 0, 1)
        try:
            with self._lock:
                for i in range(0, len(tokens), step):
                    chunk, start = tokens[i : i + step], len(self._cached)
                    batch.n_tokens = put_tokens(batch, 0, chunk, 0, start, lambda k: i + k >= first)  # noqa: B023
                    rc = llama_cpp.llama_decode(self._ctx, batch)
                    if rc != 0:
                        llama_cpp.llama_memory_seq_rm(self._memory, 0, start, -1)
                        raise EdgeLLMError(f"llama.cpp failed to evaluate {len(chunk)} tokens (code {rc})")
                    self._cached.extend(chunk)
                    n_out = len(chunk) - min(max(first - i, 0), len(chunk))
                    if n_out and keep:
                        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out * n_vocab,))
                        out[row : row + n_out] = rows.reshape(n_out, n_vocab)
                        row += n_out
        finally:
            llama_cpp.llama_batch_free(batch)
        return out

    def _verify(self, batch: llama_cpp.llama_batch, tokens: list[int]) -> bool:
        """Evaluate ``tokens`` (the pending token and its drafts) after the cached ones in one
        ``llama_decode``, with logits for every position; False if cancelled (cache rolled back)."""
        start = len(self._cached)
        batch.n_tokens = put_tokens(batch, 0, tokens, 0, start, lambda _: True)
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            llama_cpp.llama_memory_seq_rm(self._memory, 0, start, -1)
            if rc == 2 or self.cancelled:
                return False
            raise EdgeLLMError(f"llama.cpp failed to evaluate {len(tokens)} tokens (code {rc}); try a smaller --ctx")
        self._cached.extend(tokens)
        return True

    def _truncate(self, n: int) -> None:
        """Forget the cached tokens from position ``n`` on (drafts the model did not accept)."""
        if n < len(self._cached):
            llama_cpp.llama_memory_seq_rm(self._memory, 0, n, -1)
            del self._cached[n:]

    # -- saved KV caches (edgellm.runtime.kv_store) ---------------------------------------------
    _UNKEYED_OPTIONS = frozenset({"n_threads", "probe", "verbose", "use_mmap", "cache_size", "draft_model"})

    @functools.cached_property
    def kv_store(self) -> KVStore | None:
        """Where closed chats' KV caches go (save_state) and come back from (any turn whose prompt
        starts with a saved prefix); None with ``cache_size`` 0. Assignable (tests, benchmarks)."""
        return KVStore(limit=self.options.cache_size) if self.options.cache_size > 0 else None

    @functools.cached_property
    def draft_engine(self) -> Engine | None:
        """The draft model of ``options.draft_model``, loaded at first use with this context's
        size and threads, its vocabulary checked against this model's (BadModelFile if another)."""
        if not self.options.draft_model:
            return None
        from edgellm.runtime.draft_model import check_vocabulary

        options = dataclasses.replace(self.options, draft_model=None, loras=[], cache_size=0, probe=False,
                                      n_ctx=self.n_ctx)
        draft = Engine(self.options.draft_model, options)
        try:
            check_vocabulary(self, draft)
        except BaseException:
            draft.close()
            raise
        return draft

    def _drafter(self, prompt: list[int], setting: int) -> lookup.LookupDrafter:
        """Who drafts this turn's tokens: lookup, and the draft model where lookup has nothing."""
        setting = min(setting, lookup.MAX_DRAFT)
        if self.draft_engine is not None:
            from edgellm.runtime.draft_model import ModelDrafter

            drafter: lookup.LookupDrafter = ModelDrafter(setting, self._batch_costs, self.is_end_of_turn,
                                                         model=self.draft_engine)  # fmt: skip
        else:
            drafter = lookup.LookupDrafter(setting, self._batch_costs, self.is_end_of_turn)
        drafter.extend(prompt)
        return drafter

    @functools.cached_property
    def state_key(self) -> bytes | None:
        """The key of this context's KV cache on disk: the weights as loaded (file, size, mtime,
        LoRAs), the load options that change a number, llama.cpp's build. None: not cacheable (a
        graph callback watches evaluation)."""
        if getattr(self.options, "eval_callback", None) is not None:
            return None
        opts = {k: v for k, v in vars(self.options).items() if k not in self._UNKEYED_OPTIONS}
        files = [self.path, *(p for p, _ in self.options.loras)]
        stats = [(str(Path(f).resolve()), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)]]
        return key_digest({
            "files": stats, "options": opts, "n_ctx": self.n_ctx, "n_batch": self.n_batch,
            "llama_cpp": llama_cpp.__version__, "build": llama_cpp.llama_print_system_info().decode(),
        })

    def save_state(self) -> bool:
        """Save the KV cache to ``kv_store`` (a chat being closed), keyed by the exact tokens it
        holds; False if there is no store, too little to save, or the disk refused."""
        with self._lock:
            return self._save_state()

    def _save_state(self) -> bool:
        if self.kv_store is None or self.state_key is None:
            return False
        return self.kv_store.save(self._ctx, self.state_key, list(self._cached)) is not None

    def _restore_state(self, tokens: list[int]) -> int:
        """Before a turn: a cache holding another conversation (less than half of it shared with
        ``tokens``, and not the same chat with its oldest turns dropped to fit: the chat was
        switched) is saved first; then the saved state sharing the longest prefix with ``tokens``
        is loaded if it beats what is cached by enough to pay for reading it. Returns the tokens
        loaded, 0 for none."""
        if self.kv_store is None or self.state_key is None:
            return 0
        common = min(len(self._cached), len(tokens))
        reusable = next((i for i in range(common) if self._cached[i] != tokens[i]), common)
        if reusable < len(self._cached) // 2 and not _window_moved(self._cached, tokens, reusable):
            self._save_state()
        gain = reusable + self.kv_store.min_tokens
        n = self.kv_store.restore(self._ctx, self.state_key, tokens[: len(tokens) - 1], gain)
        if n or llama_cpp.llama_memory_seq_pos_max(self._memory, 0) < 0:  # loaded, or a failed load emptied it
            self._cached[:] = tokens[:n]
        return n

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the cached tokens shared with ``tokens`` (at least one left to evaluate)."""
        n = 0
        limit = min(len(self._cached), len(tokens) - 1)
        while n < limit and self._cached[n] == tokens[n]:
            n += 1
        if n < len(self._cached) and not llama_cpp.llama_memory_seq_rm(self._memory, 0, n, -1):
            llama_cpp.llama_memory_clear(self._memory, True)
            n = 0
        del self._cached[n:]
        return n

    def _sampler(self, p: SamplingParams) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731
        if p.repeat_penalty != 1.0:
            n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, p.repeat_last_n, p.repeat_penalty, 0.0, 0.0))
        if p.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0:
            add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(p.temperature))
        seed = p.seed if p.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def __del__(self) -> None:
        self.close()


def put_tokens(batch: llama_cpp.llama_batch, row: int, tokens: Sequence[int], seq: int, pos: int,
               logits: Callable[[int], bool]) -> int:  # fmt: skip
    """Write ``tokens`` of sequence ``seq``, at positions ``pos``.., into ``batch`` from ``row`` on;
    the k-th asks for its logits if ``logits(k)``. Returns the next free row."""
    for k, token in enumerate(tokens):
        batch.token[row], batch.pos[row], batch.n_seq_id[row] = token, pos + k, 1
        batch.seq_id[row][0], batch.logits[row] = seq, logits(k)
        row += 1
    return row


def _window_moved(cached: list[int], tokens: list[int], shared: int) -> bool:
    """Whether ``tokens`` after their first ``shared`` go on with text from later in ``cached``: the
    same chat with its oldest turns dropped to fit the context (saving it then, every turn, would
    cost a full cache write for a state no reopen can use), not another conversation."""
    probe = tokens[shared : shared + 16]
    if not probe:
        return True
    hay, needle = array.array("i", cached[shared:]).tobytes(), array.array("i", probe).tobytes()
    at = hay.find(needle)
    while at > 0 and at % 4:  # token-aligned matches only (4-byte ids)
        at = hay.find(needle, at + 1)
    return at >= 0


class Turn:
    """One streamed answer: iterate for text pieces; `stats` and `text` once done."""

    def __init__(self, engine: Engine, prompt: list[int], params: SamplingParams) -> None:
        self.engine = engine
        self.prompt = prompt
        self.params = params
        self.stats = TurnStats(prompt_tokens=len(prompt))
        self.tokens: list[int] = []
        self._parts: list[str] = []
        if len(prompt) >= engine.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(prompt)} tokens but the context holds {engine.n_ctx}: "
                "shorten it or raise --ctx"
            )

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def result(self) -> str:
        """Run to the end; the whole answer."""
        for _ in self:
            pass
        return self.text

    def __iter__(self) -> Iterator[str]:
        eng, stats = self.engine, self.stats
        with eng._lock:
            t0 = time.perf_counter()
            stats.restored_tokens = eng._restore_state(self.prompt)
            stats.cached_tokens = eng._reuse_prefix(self.prompt)
            if not eng._decode(self.prompt[stats.cached_tokens :]):
                stats.prompt_seconds = time.perf_counter() - t0
                stats.stop_reason = "cancelled"
                return
            t1 = time.perf_counter()
            stats.prompt_seconds = t1 - t0
            yield from self._generate(t0, t1)

    def _generate(self, t0: float, t1: float) -> Iterator[str]:
        eng, stats, params = self.engine, self.stats, self.params
        drafter = eng._drafter(self.prompt, params.draft)  # may load the draft model: before what needs freeing
        sampler = eng._sampler(params)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        limit = params.max_tokens if params.max_tokens > 0 else eng.n_ctx
        batch = llama_cpp.llama_batch_init(lookup.MAX_DRAFT + 1, 0, 1)
        stop = "length"
        try:
            for token in self._sampled(sampler, batch, drafter, limit):
                if token is None:
                    stop = "cancelled"
                    break
                if eng.is_end_of_turn(token):
                    stop = "stop"
                    break
                self.tokens.append(token)
                text = utf8.decode(eng.piece(token))
                if text:
                    if not stats.ttft_seconds:
                        stats.ttft_seconds = time.perf_counter() - t0
                    self._parts.append(text)
                    yield text
                if len(self.prompt) + len(self.tokens) >= eng.n_ctx:
                    stop = "context"
                    break
                if len(self.tokens) >= limit:
                    break
                if eng.cancelled:
                    stop = "cancelled"
                    break
            tail = utf8.decode(b"", final=True)
            if tail:
                self._parts.append(tail)
                yield tail
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_sampler_free(sampler)
            stats.generated_tokens = len(self.tokens)
            stats.generation_seconds = time.perf_counter() - t1
            stats.stop_reason = stats.stop_reason or stop
            stats.draft_tokens, stats.accepted_tokens = drafter.drafted, drafter.accepted

    def _sampled(
        self, sampler: ctypes.c_void_p, batch: llama_cpp.llama_batch, drafter: lookup.LookupDrafter, limit: int
    ) -> Iterator[int | None]:
        """The answer's tokens, one per step of the caller (which stops when it has enough): the
        first from the prompt's logits, then each step evaluates the pending token plus the drafts
        and yields what `lookup.accept` keeps. None: cancelled."""
        eng = self.engine
        token = llama_cpp.llama_sampler_sample(sampler, eng._ctx, -1)
        produced = 0
        while True:
            yield token
            produced += 1
            drafter.extend([token])
            room = min(limit - produced - 1, eng.n_ctx - len(eng._cached) - 2)
            drafts = drafter.draft(room)
            start, began = len(eng._cached), time.perf_counter()
            if not eng._verify(batch, [token, *drafts]):
                yield None
                return
            kept = lookup.accept(drafts, lambda i: llama_cpp.llama_sampler_sample(sampler, eng._ctx, i))
            eng._batch_costs.record(len(drafts) + 1, time.perf_counter() - began)
            drafter.result(len(drafts), len(kept) - 1)
            eng._truncate(start + len(kept))  # the pending token and the accepted drafts stay cached
            for token in kept[:-1]:
                yield token
                produced += 1
            drafter.extend(kept[:-1])
            token = kept[-1]
