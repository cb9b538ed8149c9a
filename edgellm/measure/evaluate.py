"""Perplexity and KL divergence of a model against a reference, defined as llama-perplexity does.

The text is tokenized once (by the reference: llama-perplexity's KL mode scores the base run's
tokens) and cut into chunks of n_ctx tokens, each evaluated as a fresh sequence whose first token
becomes BOS when the vocabulary adds one. Only the second half of each chunk is scored (positions
n_ctx/2 .. n_ctx-2 predict the next token), so every scored token has at least n_ctx/2 tokens of
context. The reference's float32 log-probabilities are kept in a memory-mapped temporary file
(llama.cpp rounds them to 16 bits) so that one reference pass serves any number of quantized
candidates and a model compared with itself gives exactly KLD 0; sums are float64."""

from __future__ import annotations

import errno
import math
import shutil
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime import isolated
from edgellm.runtime.chunks import chunk_tokens
from edgellm.runtime.engine import Engine, LoadOptions
from edgellm.textfile import read_utf8

BUNDLED = {"en": "eval_en.txt", "zh": "eval_zh.txt"}
KLD_PERCENTILES = (99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1)

# Called after each chunk with (what, chunks done, chunks in all, tokens done, seconds so far).
OnChunk = Callable[[str, int, int, int, float], None]


def chunk_progress(out: TextIO | None = None, tty: bool | None = None) -> OnChunk:
    """Progress of a scoring pass on ``out`` (stderr): chunks, tokens/s and ETA; redrawn in place
    on a terminal, a line every 10 s otherwise (logs, CI). ``tty`` overrides the check (a child
    process writing through its parent's pipe to the parent's terminal)."""
    out = out or sys.stderr
    last = [0.0]
    tty = out.isatty() if tty is None else tty

    def show(what: str, done: int, total: int, tokens: int, seconds: float) -> None:
        now = time.monotonic()
        if not tty and done < total and now - last[0] < 10:
            return
        last[0] = now
        rate = tokens / seconds if seconds else 0.0
        eta = seconds / done * (total - done)
        line = f"{what}: chunk {done}/{total}, {rate:,.0f} tok/s, " + (
            f"ETA {eta // 60:.0f}:{eta % 60:02.0f}" if done < total else f"done in {seconds:.1f} s"
        )
        out.write(f"\r{line}\x1b[K" if tty else line + "\n")
        if tty and done == total:
            out.write("\n")
        out.flush()

    return show


def load_text(spec: str) -> tuple[str, str]:
    """(name, text) for `bundled`, `bundled:en`, `bundled:zh` or a UTF-8 file path."""
    if spec == "bundled" or spec.startswith("bundled:"):
        parts = spec.partition(":")[2] or "en,zh"
        names = parts.split(",")
        unknown = [n for n in names if n not in BUNDLED]
        if unknown:
            raise EdgeLLMError(f"no bundled text '{unknown[0]}': use bundled, bundled:en or bundled:zh")
        data = resources.files("edgellm") / "data"
        return spec, "\n".join((data / BUNDLED[n]).read_text(encoding="utf-8") for n in names)
    path = Path(spec).expanduser()
    return str(path), read_utf8(path, "--text bundled")


def tokenize(engine: Engine, text: str) -> list[int]:
    """The text's tokens as llama-perplexity gets them: BOS if the model adds one, specials not parsed."""
    if engine.normalize_nfc:
        text = unicodedata.normalize("NFC", text)
    return engine.tokenize(text, add_special=True, parse_special=False)


def scored_positions(n_ctx: int) -> int:
    """Positions scored per chunk: from n_ctx/2 to the second last (the last predicts nothing)."""
    return n_ctx - 1 - n_ctx // 2


@dataclass
class ChunkScores:
    """One chunk's scored positions: log-probabilities over the vocabulary, the NLL of the real
    next token and the model's top token."""

    log_probs: np.ndarray  # (positions, n_vocab) float32
    nll: np.ndarray  # (positions,) float64
    top: np.ndarray  # (positions,) int


def score_chunks(engine: Engine, chunks: list[list[int]], what: str, on_chunk: OnChunk | None) -> Iterator[ChunkScores]:
    """Evaluate each chunk as a fresh sequence and yield its scores."""
    first = len(chunks[0]) // 2
    t0, done = time.perf_counter(), 0
    for i, chunk in enumerate(chunks):
        engine.reset()
        logits = engine.logits(chunk, first)[:-1]
        targets = np.asarray(chunk[first + 1 :])
        top = logits.argmax(axis=1)
        high = logits.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(logits - high).sum(axis=1, dtype=np.float64))[:, None] + high
        log_probs = (logits - log_sum).astype(np.float32)
        nll = log_sum[:, 0] - logits[np.arange(len(targets)), targets].astype(np.float64)
        done += len(chunk)
        if on_chunk:
            on_chunk(what, i + 1, len(chunks), done, time.perf_counter() - t0)
        yield ChunkScores(log_probs, nll, top)


class Reference:
    """The reference model's log-probabilities at every scored position, computed once."""

    def __init__(
        self, engine: Engine, tokens: list[int], chunks: list[list[int]], on_chunk: OnChunk | None = None
    ) -> None:
        self.path = engine.path
        self.file_type = engine.info.file_type
        self.tokens = tokens
        self.chunks = chunks
        per = scored_positions(len(chunks[0]))
        rows = per * len(chunks)
        self.nll = np.empty(rows)
        self.top = np.empty(rows, dtype=np.int64)
        self._file = tempfile.TemporaryFile(prefix="edgellm-ref-")  # noqa: SIM115 (closed by close())
        self.log_probs = self._storage(rows, engine.info.vocab_size)
        t0 = time.perf_counter()
        for i, scores in enumerate(score_chunks(engine, chunks, "reference", on_chunk)):
            part = slice(i * per, (i + 1) * per)
            self.log_probs[part] = scores.log_probs
            self.nll[part] = scores.nll
            self.top[part] = scores.top
        self.seconds = time.perf_counter() - t0

    def self_result(self, text: str) -> EvalResult:
        """The reference's own scores (KLD 0, same top token everywhere) without another pass."""
        result = EvalResult(str(self.path), self.file_type, text, len(self.chunks[0]), len(self.chunks), self.seconds)
        add_perplexity(result, self.nll)
        add_comparison(result, self.nll, self, np.zeros(len(self.nll)), np.ones(len(self.nll), dtype=bool))
        return result

    def _storage(self, rows: int, n_vocab: int) -> np.ndarray:
        """A float32 (rows, n_vocab) array in the temporary file. Its space is checked first: a
        sparse file that cannot grow kills the process (SIGBUS) at the first write that needs it."""
        size = rows * n_vocab * 4
        folder = tempfile.gettempdir()
        try:
            if shutil.disk_usage(folder).free < size + (64 << 20):
                raise OSError(errno.ENOSPC, "not enough free space")
            self._file.truncate(size)
            return np.memmap(self._file, dtype=np.float32, mode="w+", shape=(rows, n_vocab))
        except OSError as err:
            self._file.close()
            raise EdgeLLMError(
                f"cannot keep the reference's log-probabilities ({size / 1e9:.1f} GB) in {folder}: "
                f"{err.strerror}; set TMPDIR to a larger disk or use fewer --chunks"
            ) from None

    def close(self) -> None:
        """Drop the temporary file now (it is deleted at exit anyway)."""
        del self.log_probs
        self._file.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Estimate:
    """A mean and its standard error, as llama-perplexity prints them (value ± error)."""

    value: float
    error: float

    def __str__(self) -> str:
        return f"{self.value:.6f} ± {self.error:.6f}"


def mean_and_error(x: np.ndarray) -> Estimate:
    """llama-perplexity's mean_and_uncertainty: the standard error of the mean (0 for < 11 values)."""
    n = len(x)
    if n < 1:
        return Estimate(0.0, 0.0)
    mean = float(x.mean())
    var = float((x * x).mean()) - mean * mean
    return Estimate(mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def _covariance(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    return 0.0 if n < 10 else (float((a * b).mean()) - float(a.mean()) * float(b.mean())) / (n - 1)


@dataclass
class EvalResult:
    """What `edgellm eval` reports. Quantities against the reference are None without one."""

    model: str
    file_type: str
    text: str
    n_ctx: int
    chunks: int
    seconds: float
    positions: int = 0
    ppl: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan))
    reference: str | None = None
    reference_file_type: str | None = None
    ppl_ref: Estimate | None = None
    ln_ppl_ratio: Estimate | None = None
    ppl_ratio: Estimate | None = None
    kld: Estimate | None = None
    kld_percentiles: dict[str, float] = field(default_factory=dict)
    kld_max: float | None = None
    same_top: Estimate | None = None  # fraction of positions whose top token equals the reference's
    rms_dp: Estimate | None = None  # RMS of p(token) - p_ref(token)

    @property
    def delta_ppl_percent(self) -> Estimate | None:
        if self.ppl_ratio is None:
            return None
        return Estimate(100 * (self.ppl_ratio.value - 1), 100 * self.ppl_ratio.error)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        delta = self.delta_ppl_percent
        data["delta_ppl_percent"] = asdict(delta) if delta else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        """Back from ``to_json`` (the scores come from a child process)."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for name, value in values.items():
            if name in _ESTIMATES and value is not None:
                values[name] = Estimate(**value)
        return cls(**values)


_ESTIMATES = frozenset(f.name for f in fields(EvalResult) if "Estimate" in str(f.type))


def add_perplexity(result: EvalResult, nll: np.ndarray) -> None:
    log_ppl = mean_and_error(nll)
    ppl = math.exp(log_ppl.value)
    result.ppl = Estimate(ppl, ppl * log_ppl.error)
    result.positions = len(nll)


def add_comparison(result: EvalResult, nll: np.ndarray, ref: Reference, kld: np.ndarray, same: np.ndarray) -> None:
    """llama-perplexity's KL-divergence statistics from per-position values."""
    log_ppl = mean_and_error(nll)
    log_ref = mean_and_error(ref.nll)
    ppl_ref = math.exp(log_ref.value)
    cov = _covariance(nll, ref.nll)
    ln_ratio = log_ppl.value - log_ref.value
    ln_error = math.sqrt(max(log_ppl.error**2 + log_ref.error**2 - 2 * cov, 0.0))
    p_diff = np.exp(-nll) - np.exp(-ref.nll)
    mse = mean_and_error(p_diff**2)
    rms = math.sqrt(mse.value)
    top = float(same.mean())
    n = len(same)
    result.reference = str(ref.path)
    result.reference_file_type = ref.file_type
    result.ppl_ref = Estimate(ppl_ref, ppl_ref * log_ref.error)
    result.ln_ppl_ratio = Estimate(ln_ratio, ln_error)
    result.ppl_ratio = Estimate(math.exp(ln_ratio), math.exp(ln_ratio) * ln_error)
    result.kld = mean_and_error(kld)
    result.kld_percentiles = {f"{p:g}": float(np.percentile(kld, p)) for p in KLD_PERCENTILES}
    result.kld_max = float(kld.max())
    result.same_top = Estimate(top, math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0)
    result.rms_dp = Estimate(rms, 0.5 / rms * mse.error if rms > 0 else 0.0)


def evaluate(
    engine: Engine, chunks: list[list[int]], ref: Reference | None, text: str, on_chunk: OnChunk | None = None
) -> EvalResult:
    """Score ``engine``'s model on the chunks, against ``ref`` if given."""
    per = scored_positions(len(chunks[0]))
    nll = np.empty(per * len(chunks))
    kld = np.empty_like(nll)
    same = np.empty(len(nll), dtype=bool)
    t0 = time.perf_counter()
    for i, scores in enumerate(score_chunks(engine, chunks, engine.info.file_type, on_chunk)):
        part = slice(i * per, (i + 1) * per)
        nll[part] = scores.nll
        if ref is not None:
            # sum over the vocabulary of p_ref * (log p_ref - log p): float32 per row, float64 sums
            base = ref.log_probs[part]
            kld[part] = (np.exp(base) * (base - scores.log_probs)).sum(axis=1, dtype=np.float64)
            same[part] = scores.top == ref.top[part]
    result = EvalResult(
        model=str(engine.path),
        file_type=engine.info.file_type,
        text=text,
        n_ctx=len(chunks[0]),
        chunks=len(chunks),
        seconds=time.perf_counter() - t0,
    )
    add_perplexity(result, nll)
    if ref is not None:
        add_comparison(result, nll, ref, kld, same)
    return result


@dataclass
class EvalPlan:
    """How to evaluate: the text, the chunking and how to load each model."""

    text_spec: str = "bundled"
    n_ctx: int = 512
    max_chunks: int | None = None
    threads: int | None = None

    def load(self, path: Path) -> Engine:
        batch = min(self.n_ctx, 512)
        return Engine(path, LoadOptions(n_ctx=self.n_ctx, n_batch=batch, n_threads=self.threads))


def prepare_reference(plan: EvalPlan, ref_path: Path, on_chunk: OnChunk | None = None) -> Reference:
    """Tokenize the text with the reference and keep its scores for later comparisons."""
    _, text = load_text(plan.text_spec)
    with plan.load(ref_path) as engine:
        tokens = tokenize(engine, text)
        chunks = chunk_tokens(tokens, plan.n_ctx, plan.max_chunks, bos_token(engine))
        return Reference(engine, tokens, chunks, on_chunk)


def compare(plan: EvalPlan, path: Path, ref: Reference, on_chunk: OnChunk | None = None) -> EvalResult:
    """Evaluate ``path`` on the reference's chunks."""
    with plan.load(path) as engine:
        return compare_loaded(engine, plan, ref, on_chunk)


def compare_loaded(engine: Engine, plan: EvalPlan, ref: Reference, on_chunk: OnChunk | None = None) -> EvalResult:
    """Evaluate a loaded model on the reference's chunks; refuse one with another vocabulary."""
    _, text = load_text(plan.text_spec)
    if engine.info.vocab_size != ref.log_probs.shape[1] or tokenize(engine, text) != ref.tokens:
        raise EdgeLLMError(
            f"{engine.path}: tokenizes the text differently from the reference {ref.path}; "
            "KL divergence needs models with the same vocabulary"
        )
    return evaluate(engine, ref.chunks, ref, plan.text_spec, on_chunk)


def isolated_eval(plan: EvalPlan, path: Path, ref_path: Path | None = None) -> EvalResult:
    """`edgellm eval`'s work (the reference, then the model) in a child process: llama.cpp
    crashing on either file is a one-line error, not the command's death. Progress shows as
    the child goes."""
    request = {"plan": asdict(plan), "model": str(path), "ref": str(ref_path) if ref_path else None,
               "tty": sys.stderr.isatty()}
    answer = isolated.run("edgellm.measure.evaluate:eval_job", request, path=path, what="evaluation")
    return EvalResult.from_json(answer)


def eval_job(request: dict[str, Any]) -> dict[str, object]:
    """Child side of isolated_eval."""
    plan, model = EvalPlan(**request["plan"]), Path(request["model"])
    progress = chunk_progress(tty=request["tty"])
    if request["ref"] is None:
        return perplexity(plan, model, progress).to_json()
    with prepare_reference(plan, Path(request["ref"]), progress) as ref:
        return compare(plan, model, ref, progress).to_json()


def perplexity(plan: EvalPlan, path: Path, on_chunk: OnChunk | None = None) -> EvalResult:
    """Perplexity alone (no reference)."""
    _, text = load_text(plan.text_spec)
    with plan.load(path) as engine:
        chunks = chunk_tokens(tokenize(engine, text), plan.n_ctx, plan.max_chunks, bos_token(engine))
        return evaluate(engine, chunks, None, plan.text_spec, on_chunk)


def bos_token(engine: Engine) -> int | None:
    """The BOS token if the model adds one (the empty text tokenizes to just that)."""
    added = engine.tokenize("", add_special=True, parse_special=False)
    return added[0] if added else None
