"""Prompt-processing and generation speed measured the way llama-bench does, plus time to first
token through the chat path and peak memory.

pp<N>: N random tokens (BOS first if the model adds one) decoded in n_batch pieces into an empty
cache, output for the last token only. tg<N>: N single-token decodes from an empty cache, output
for each. One untimed warm-up of each, then `reps` timed runs; tokens/s is the mean ± sample
standard deviation of the per-run rates. Each setting runs in a fresh process, so that its peak
RSS is its own and a llama.cpp abort (e.g. a GPU out of memory) fails one row, not the command."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgellm.measure.evaluate import bos_token, load_text
from edgellm.runtime import isolated
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from edgellm.units import human_bytes, human_count

N_BATCH = 512
_SEED = 1234


@dataclass(frozen=True)
class Setting:
    """One row of the benchmark: how the model is loaded and what is measured."""

    threads: int
    gpu_layers: int = 0
    n_prompt: int = 512
    n_gen: int = 128
    reps: int = 3
    rpc: tuple[str, ...] = ()  # RPC workers holding gpu_layers of the layers


@dataclass
class Rate:
    """Tokens per second of one test (pp or tg) over the repetitions."""

    test: str
    n_tokens: int
    samples_s: list[float] = field(default_factory=list)

    @property
    def samples_ts(self) -> list[float]:
        return [self.n_tokens / s for s in self.samples_s]

    @property
    def avg_ts(self) -> float:
        return float(np.mean(self.samples_ts)) if self.samples_s else 0.0

    @property
    def stddev_ts(self) -> float:
        """Sample standard deviation, as llama-bench (0 for a single run)."""
        return float(np.std(self.samples_ts, ddof=1)) if len(self.samples_s) > 1 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "test": self.test,
            "n_tokens": self.n_tokens,
            "avg_ts": self.avg_ts,
            "stddev_ts": self.stddev_ts,
            "samples_ts": self.samples_ts,
            "samples_ns": [round(s * 1e9) for s in self.samples_s],
        }


@dataclass
class BenchRow:
    """Everything measured for one setting."""

    model: str
    model_type: str
    file_type: str
    size: int
    params: int
    backend: str
    setting: Setting
    pp: Rate
    tg: Rate
    ttft_s: list[float]
    ttft_prompt_tokens: int
    peak_rss: int

    @property
    def ttft_avg_s(self) -> float:
        return float(np.mean(self.ttft_s)) if self.ttft_s else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "model_filename": self.model,
            "model_type": self.model_type,
            "file_type": self.file_type,
            "model_size": self.size,
            "model_n_params": self.params,
            "backend": self.backend,
            "n_threads": self.setting.threads,
            "n_gpu_layers": self.setting.gpu_layers,
            "rpc": list(self.setting.rpc),
            "n_batch": N_BATCH,
            "repetitions": self.setting.reps,
            "pp": self.pp.to_json(),
            "tg": self.tg.to_json(),
            "ttft_prompt_tokens": self.ttft_prompt_tokens,
            "ttft_avg_ms": self.ttft_avg_s * 1000,
            "ttft_samples_ms": [s * 1000 for s in self.ttft_s],
            "peak_rss_bytes": self.peak_rss,
        }

    @classmethod
    def from_json(cls, d: dict) -> BenchRow:
        setting = Setting(d["n_threads"], d["n_gpu_layers"], d["pp"]["n_tokens"], d["tg"]["n_tokens"], d["repetitions"],
                          tuple(d.get("rpc", ())))

        def rate(r: dict) -> Rate:
            return Rate(r["test"], r["n_tokens"], [ns / 1e9 for ns in r["samples_ns"]])

        return cls(
            d["model_filename"], d["model_type"], d["file_type"], d["model_size"], d["model_n_params"],
            d["backend"], setting, rate(d["pp"]), rate(d["tg"]), [ms / 1000 for ms in d["ttft_samples_ms"]],
            d["ttft_prompt_tokens"], d["peak_rss_bytes"],
        )  # fmt: skip


def peak_rss() -> int:
    """This process's peak resident set size in bytes."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))


def _backend() -> str:
    from edgellm.runtime.hardware import gpu_offload_supported

    return "GPU" if gpu_offload_supported() else "CPU"


def _random_tokens(rng: np.random.Generator, n: int, n_vocab: int, bos: int | None) -> list[int]:
    tokens = [int(t) for t in rng.integers(0, n_vocab, n)]
    if bos is not None and tokens:
        tokens[0] = bos
    return tokens


def _ttft_prompt(engine: Engine, n_prompt: int) -> list[dict[str, str]]:
    """A user message from the bundled English text whose chat prompt is about n_prompt tokens."""
    _, text = load_text("bundled:en")
    overhead = len(engine.prompt_tokens([{"role": "user", "content": ""}]))
    words = engine.tokenize(text, add_special=False, parse_special=False)[: max(n_prompt - overhead, 1)]
    return [{"role": "user", "content": engine.detokenize(words)}]


def prompt_seconds(engine: Engine, n: int, rng: np.random.Generator) -> float:
    """llama-bench's pp test: n random tokens into an empty cache, output for the last only."""
    engine.reset()
    tokens = _random_tokens(rng, n, engine.info.vocab_size, bos_token(engine))
    t0 = time.perf_counter()
    engine.logits(tokens, first=len(tokens) - 1)
    return time.perf_counter() - t0


def generation_seconds(engine: Engine, n: int, rng: np.random.Generator) -> float:
    """llama-bench's tg test: n single-token decodes from an empty cache, output for each."""
    engine.reset()
    tokens = _random_tokens(rng, n, engine.info.vocab_size, bos_token(engine))
    t0 = time.perf_counter()
    for token in tokens:
        engine.logits([token])
    return time.perf_counter() - t0


def first_token_seconds(engine: Engine, messages: list[dict[str, str]]) -> float:
    """A greedy chat turn from an empty cache until its first token: template, tokenizer, prefill."""
    engine.reset()
    t0 = time.perf_counter()
    next(iter(engine.chat(messages, SamplingParams(temperature=0, max_tokens=1))), None)
    return time.perf_counter() - t0


def generation_rate(engine: Engine, n_gen: int, reps: int) -> Rate:
    """tg<n_gen> on an already loaded engine (its context must hold n_gen tokens), with warm-up."""
    rng = np.random.default_rng(_SEED)
    generation_seconds(engine, 1, rng)
    return Rate(f"tg{n_gen}", n_gen, [generation_seconds(engine, n_gen, rng) for _ in range(reps)])


def bench_context(n_prompt: int, n_gen: int) -> int:
    """The context a setting is measured in (and `--gpu-layers auto` is sized for): room for the
    chat template around the TTFT prompt."""
    return max(n_prompt, n_gen) + 256


def measure(path: Path, setting: Setting, log=None) -> BenchRow:  # noqa: ANN001 (a print-like callable)
    """Run one setting in this process."""
    options = LoadOptions(n_ctx=bench_context(setting.n_prompt, setting.n_gen), n_threads=setting.threads,
                          n_gpu_layers=setting.gpu_layers, n_batch=N_BATCH, rpc=tuple(setting.rpc))
    rng = np.random.default_rng(_SEED)
    with Engine(path, options) as engine:
        messages = _ttft_prompt(engine, setting.n_prompt)
        pp = Rate(f"pp{setting.n_prompt}", setting.n_prompt)
        tg = Rate(f"tg{setting.n_gen}", setting.n_gen)
        ttft: list[float] = []
        prompt_seconds(engine, setting.n_prompt, rng)  # warm-ups, as llama-bench
        generation_seconds(engine, 1, rng)
        for i in range(setting.reps):
            if log:
                log(f"run {i + 1}/{setting.reps}")
            pp.samples_s.append(prompt_seconds(engine, setting.n_prompt, rng))
            tg.samples_s.append(generation_seconds(engine, setting.n_gen, rng))
            ttft.append(first_token_seconds(engine, messages))
        return BenchRow(
            model=str(engine.path),
            model_type=_model_type(engine),
            file_type=engine.info.file_type,
            size=engine.info.file_size,
            params=engine.info.parameters,
            backend=_backend(),
            setting=setting,
            pp=pp,
            tg=tg,
            ttft_s=ttft,
            ttft_prompt_tokens=len(engine.prompt_tokens(messages)),
            peak_rss=peak_rss(),
        )


def _model_type(engine: Engine) -> str:
    """What llama-bench's model column says: architecture, size class and quantization."""
    return f"{engine.info.architecture} {human_count(engine.info.parameters)} {engine.info.file_type}"


def run_settings(path: Path, settings: list[Setting], progress=None) -> Iterator[BenchRow]:  # noqa: ANN001
    """Each setting in a fresh child process (edgellm.runtime.isolated): rows in order, each as it
    is measured (an interrupted `bench` still shows the finished ones), and a llama.cpp crash is
    that setting's one-line error, not the caller's death."""
    for i, setting in enumerate(settings, 1):
        if progress:
            progress(f"benchmark {i}/{len(settings)}: threads {setting.threads}, gpu layers {setting.gpu_layers}")
        request = {"model": str(path), "setting": asdict(setting)}
        what = f"benchmark (threads {setting.threads}, gpu layers {setting.gpu_layers})"
        yield BenchRow.from_json(isolated.run("edgellm.measure.benchmark:measure_job", request, path=path, what=what))


def measure_job(request: dict) -> dict:
    """Child side of run_settings: one setting measured, its row as JSON."""

    def log(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    return measure(Path(request["model"]), Setting(**request["setting"]), log).to_json()


def format_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def markdown_table(header: list[str], body: list[list[str]], left: int = 1) -> str:
    """A padded markdown table; the first ``left`` columns are text, the others right-aligned numbers."""
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def table(rows: list[BenchRow]) -> str:
    """One row per setting, laid out like llama-bench's table."""
    if not rows:
        return ""
    s = rows[0].setting
    header = ["model", "size", "params", "backend", "threads", "ngl"]
    header += [f"pp{s.n_prompt} t/s", f"tg{s.n_gen} t/s", f"TTFT ms ({rows[0].ttft_prompt_tokens} tok)", "peak RSS"]
    body = [
        [
            r.model_type, human_bytes(r.size), format_params(r.params), r.backend, str(r.setting.threads),
            str(r.setting.gpu_layers), _rate(r.pp), _rate(r.tg), f"{r.ttft_avg_s * 1000:.0f}",
            human_bytes(r.peak_rss),
        ]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, body, left=1)


def _rate(r: Rate) -> str:
    return f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}" if r.samples_s and not math.isnan(r.avg_ts) else "-"
