"""`edgellm quantize --report`: every quantized output scored against the reference it was made
from (PPL, ΔPPL, KLD, same top p) and timed (generation tok/s), as a table and a size-vs-KLD plot,
so a user picks a type by looking rather than by folklore."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgellm.measure import plot
from edgellm.measure.benchmark import Rate, generation_rate, markdown_table
from edgellm.measure.evaluate import EvalPlan, EvalResult, OnChunk, chunk_progress, compare_loaded, prepare_reference
from edgellm.models.gguf_file import GGUFInfo
from edgellm.runtime import isolated
from edgellm.units import human_bytes

FLOAT_FILE_TYPES = frozenset({"F16", "BF16", "F32"})
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


def report(reference: Path, outputs: list[Path], png: Path) -> None:
    """What `edgellm quantize --report` runs: progress on stderr, the table on stdout, the PNG. The
    models are loaded in a child process (edgellm.runtime.isolated): llama.cpp crashing on one of
    them is a one-line error, not the command's death."""
    request = {"reference": str(reference), "outputs": [str(o) for o in outputs], "png": str(png),
               "plan": asdict(REPORT_PLAN), "n_gen": GEN_TOKENS, "reps": GEN_REPS, "tty": sys.stderr.isatty()}
    answer = isolated.run("edgellm.measure.quant_report:report_job", request, path=reference,
                          what="quantization report")
    print(answer["table"])
    print(f"plot: {png}")


def report_job(request: dict[str, Any]) -> dict[str, str]:
    """Child side of report: every row measured, the plot written, the table returned."""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    outputs = [Path(p) for p in request["outputs"]]
    progress = chunk_progress(tty=request["tty"])
    plan = EvalPlan(**request["plan"])
    rows = build_report(Path(request["reference"]), outputs, plan, request["n_gen"], request["reps"], progress, log)
    write_plot(rows, Path(request["png"]))
    return {"table": table(rows)}
