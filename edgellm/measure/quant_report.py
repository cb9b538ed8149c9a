"""`edgellm quantize --report`: every quantized output scored against the reference it was made
from (PPL, ΔPPL, KLD, same top p) and timed (generation tok/s), as a table and a size-vs-KLD plot,
so a user picks a type by looking rather than by folklore."""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.measure import plot
from edgellm.measure.benchmark import Rate, generation_rate, markdown_table
from edgellm.measure.evaluate import EvalPlan, EvalResult, OnChunk, chunk_progress, compare_loaded, prepare_reference
from edgellm.models.gguf_file import GGUFInfo, inspect
from edgellm.units import human_bytes

_FLOAT_FILE_TYPES = frozenset({"F16", "BF16", "F32"})
# What `--report` measures: llama-perplexity's defaults on the bundled text, llama-bench's tg128 x 3.
REPORT_PLAN = EvalPlan()
GEN_TOKENS, GEN_REPS = 128, 3


@dataclass
class ReportRow:
    """One file of the report: what it is, how it scores, how fast it generates."""

    info: GGUFInfo
    result: EvalResult
    generation: Rate

    @property
    def label(self) -> str:
        """The file type, marked when an importance matrix weighted it (llama-quantize's metadata)."""
        return self.info.file_type + (" + imatrix" if "quantize.imatrix.file" in self.info.metadata else "")

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.info.path),
            "file_type": self.info.file_type,
            "imatrix": self.info.metadata.get("quantize.imatrix.file"),
            "file_size": self.info.file_size,
            "bits_per_weight": self.info.bits_per_weight,
            "eval": self.result.to_json(),
            "generation": self.generation.to_json(),
        }


def build_report(
    reference: Path,
    outputs: list[Path],
    plan: EvalPlan | None = None,
    n_gen: int = GEN_TOKENS,
    reps: int = GEN_REPS,
    on_chunk: OnChunk | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ReportRow]:
    """Score the reference once, then each output against it; the reference is the first row."""
    plan = plan or REPORT_PLAN
    rows = []
    with prepare_reference(plan, reference, on_chunk) as ref:
        for path in [reference, *outputs]:
            with plan.load(path) as engine:
                result = (
                    ref.self_result(plan.text_spec)
                    if path == reference
                    else compare_loaded(engine, plan, ref, on_chunk)
                )
                if log:
                    log(f"{path.name}: timing tg{n_gen} ({reps} runs)")
                rows.append(ReportRow(engine.info, result, generation_rate(engine, n_gen, reps)))
    return rows


def table(rows: list[ReportRow]) -> str:
    """type, size, bits per weight, PPL, ΔPPL %, KLD, same top p, generation tok/s."""
    header = ["type", "size", "bits/weight", "PPL", "ΔPPL %", "mean KLD", "99% KLD", "same top p %", "gen t/s"]
    body = []
    for r in rows:
        e, delta = r.result, r.result.delta_ppl_percent
        body.append(
            [
                r.label,
                human_bytes(r.info.file_size),
                f"{r.info.bits_per_weight:.2f}",
                f"{e.ppl.value:.4f} ± {e.ppl.error:.4f}",
                f"{delta.value:+.2f} ± {delta.error:.2f}" if delta else "-",
                f"{e.kld.value:.6f} ± {e.kld.error:.6f}" if e.kld else "-",
                f"{e.kld_percentiles.get('99', math.nan):.5f}",
                f"{100 * e.same_top.value:.2f} ± {100 * e.same_top.error:.2f}" if e.same_top else "-",
                f"{r.generation.avg_ts:.1f} ± {r.generation.stddev_ts:.1f}",
            ]
        )
    return markdown_table(header, body, left=1)


def write_plot(rows: list[ReportRow], path: Path) -> None:
    """File size (MB) against mean KLD (log scale); the reference itself (KLD 0) is the title."""
    ref = rows[0].info
    points = [
        plot.Point(r.info.file_size / 1e6, r.result.kld.value, r.label) for r in rows[1:] if r.result.kld is not None
    ]
    plot.scatter(
        points,
        path,
        title=f"{ref.name}: size vs KL divergence from {ref.file_type}",
        x_label="file size (MB)",
        y_label="mean KLD",
    )


def report(reference: Path, outputs: list[Path], png: Path) -> list[ReportRow]:
    """What `edgellm quantize --report` runs: progress on stderr, the table on stdout, the PNG."""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = build_report(reference, outputs, REPORT_PLAN, GEN_TOKENS, GEN_REPS, chunk_progress(), log)
    print(table(rows))
    write_plot(rows, png)
    print(f"plot: {png}")
    return rows


def quantize_and_report(
    src: str, types: str, *, out: str | None, outdir: str | None, threads: int | None, force: bool,
    loras: Sequence[str] = (), imatrix: object | None = None,
) -> list:  # fmt: skip
    """`edgellm quantize SRC --type ... --report`: quantize, then report every output against the
    float model. The reference is SRC if it is a float GGUF, the float output if one was asked
    for, else an f16 written to a temporary folder beside the outputs and deleted afterwards.
    With ``imatrix`` (an ImatrixRequest) each type is also quantized without the matrix, in a
    temporary folder, and reported beside the weighted output."""
    import quantize
    from quantize.llamacpp import parse_types

    wanted = parse_types(types)
    source = Path(src).expanduser()
    folder = Path(out).expanduser().parent if out else Path(outdir).expanduser() if outdir else source.parent
    if source.is_dir() and not out and not outdir:
        folder = source
    png = folder / f"{source.stem}-quant-report.png"
    if png.exists() and not force:
        raise EdgeLLMError(f"{png}: already exists (the report plot); pass --force to overwrite it")
    common = {"out": out, "outdir": outdir, "threads": threads, "force": force, "imatrix": imatrix}
    # without a matrix too, for the types llama.cpp quantizes without one
    plain = [t for t in wanted if not t.is_float and not t.needs_imatrix] if imatrix is not None else []

    def report_all(ref: Path, weighted: list[Path]) -> None:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".edgellm-report-") as scratch:
            unweighted = [o.path for o in quantize.run(ref, plain, outdir=scratch, threads=threads)] if plain else []
            report(ref, unweighted + weighted, png)

    if source.is_file():
        if inspect(source).file_type not in _FLOAT_FILE_TYPES:
            raise EdgeLLMError(f"{source}: --report compares with the float model; give an f16/bf16/f32 GGUF as SRC")
        outputs = quantize.run(source, wanted, **common)
        report_all(source, [o.path for o in outputs])
        return outputs
    float_types = [t for t in wanted if t.is_float]
    if float_types:
        outputs = quantize.run(source, wanted, loras=loras, **common)
        ref = next(o.path for o in outputs if o.type == float_types[0].name)
        report_all(ref, [o.path for o in outputs if o.path != ref])
        return outputs
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".edgellm-report-") as scratch:
        ref = quantize.run(source, "f16", outdir=scratch, loras=loras)[0].path
        outputs = quantize.run(ref, wanted, **{**common, "outdir": outdir or (None if out else str(folder))})
        report_all(ref, [o.path for o in outputs])
    return outputs
