"""`edgellm quantize --report`: every quantized output scored against the reference it was made
from (PPL, ΔPPL, KLD, same top p) and timed (generation tok/s), as a table and a size-vs-KLD plot,
so a user picks a type by looking rather than by folklore."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgellm import plot
from edgellm.benchmark import Rate, Setting, markdown_table, measure
from edgellm.engine import default_threads
from edgellm.evaluate import EvalPlan, EvalResult, OnChunk, compare, prepare_reference
from edgellm.gguf_file import GGUFInfo, inspect
from edgellm.units import human_bytes


@dataclass
class ReportRow:
    info: GGUFInfo
    result: EvalResult
    generation: Rate

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.info.path),
            "file_type": self.info.file_type,
            "file_size": self.info.file_size,
            "bits_per_weight": self.info.bits_per_weight,
            "eval": self.result.to_json(),
            "generation": self.generation.to_json(),
        }


def build_report(
    reference: Path,
    outputs: list[Path],
    plan: EvalPlan | None = None,
    n_gen: int = 128,
    reps: int = 3,
    on_chunk: OnChunk | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ReportRow]:
    """Score the reference once, then each output against it; the reference is the first row."""
    plan = plan or EvalPlan()
    threads = plan.threads or default_threads()
    setting = Setting(threads=threads, n_prompt=0, n_gen=n_gen, reps=reps)
    rows = []
    with prepare_reference(plan, reference, on_chunk) as ref:
        for path in [reference, *outputs]:
            result = ref.self_result(plan.text_spec) if path == reference else compare(plan, path, ref, on_chunk)
            if log:
                log(f"{path.name}: timing tg{n_gen} ({reps} runs)")
            rows.append(ReportRow(inspect(path), result, measure(path, setting).tg))
    return rows


def table(rows: list[ReportRow]) -> str:
    """type, size, bits per weight, PPL, ΔPPL %, KLD, same top p, generation tok/s."""
    header = ["type", "size", "bits/weight", "PPL", "ΔPPL %", "mean KLD", "99% KLD", "same top p %", "gen t/s"]
    body = []
    for r in rows:
        e, delta = r.result, r.result.delta_ppl_percent
        body.append(
            [
                r.info.file_type,
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
        plot.Point(r.info.file_size / 1e6, r.result.kld.value, r.info.file_type)
        for r in rows[1:]
        if r.result.kld is not None
    ]
    plot.scatter(
        points,
        path,
        title=f"{ref.name}: size vs KL divergence from {ref.file_type}",
        x_label="file size (MB)",
        y_label="mean KLD",
    )


def report(reference: Path, outputs: list[Path], png: Path, plan: EvalPlan | None = None) -> list[ReportRow]:
    """What `edgellm quantize --report` runs: progress on stderr, the table on stdout, the PNG."""
    from edgellm.commands.eval import chunk_progress

    rows = build_report(
        reference, outputs, plan, on_chunk=chunk_progress(), log=lambda m: print(m, file=sys.stderr, flush=True)
    )
    print(table(rows))
    write_plot(rows, png)
    print(f"plot: {png}")
    return rows
