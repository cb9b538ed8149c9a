"""`edgellm bench` and `edgellm quantize --report` on the default model, into docs/benchmarks.md
(sections "bench" and "quant-report") with the plot as docs/quant-report-smollm2.png.

The quality reference is an f16 GGUF made by widening the shipped Q4_1 model (llama.cpp's
quantizer with allow_requantize): the only float SmolLM2 on this offline machine. Each type is
then quantized from that f16 by `edgellm quantize --report`, exactly as a user would run it.

    .venv/bin/python -m bench.bench_speed_quality [bench] [quality]   (default: both)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import DOC, machine, write_section  # noqa: E402
from edgellm.cli import main as edgellm  # noqa: E402
from edgellm.models.default_model import default_model_path  # noqa: E402
from edgellm.runtime import llama_log  # noqa: E402

TYPES = "q8_0,q6_k,q5_k_m,q5_0,q4_k_m,q4_0,q3_k_m,q2_k"
PLOT = DOC.parent / "quant-report-smollm2.png"


def widen_to_f16(src: Path, dst: Path) -> Path:
    llama_log.install()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"could not widen {src} to f16")
    return dst


def run_cli(args: list[str]) -> str:
    """Run `edgellm ARGS`, progress passing through to stderr; its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = edgellm(args)
    if rc != 0:
        raise SystemExit(f"edgellm {' '.join(args)} failed ({rc})")
    return out.getvalue()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def speed_section(model: Path) -> None:
    before = load()
    speed = run_cli(["bench", str(model), "--threads", "1,2"])
    write_section(
        "bench",
        "\n".join(
            [
                "## `edgellm bench`: prompt and generation speed",
                "",
                f"Measured {machine()} with `edgellm bench default --threads 1,2` (pp512 / tg128 as llama-bench,",
                "mean ± sd of 3 runs; TTFT = a chat turn with a ~512-token prompt until its first token; peak RSS",
                "of the process running the setting). The 2 cores are shared with other jobs (load average",
                f"{before} before, {load()} after): two llama.cpp threads that must wait for a busy core",
                "spin, so the 2-thread rows suffer most from the sharing.",
                "",
                speed.strip(),
            ]
        ),
    )


def quality_section(model: Path) -> None:
    t0, before = time.perf_counter(), load()
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-") as tmp:
        f16 = widen_to_f16(model, Path(tmp) / "SmolLM2-135M-Instruct-F16.gguf")
        report = run_cli(["quantize", str(f16), "--type", TYPES, "--outdir", tmp, "--report"])
        shutil.copyfile(Path(tmp) / f"{f16.stem}-quant-report.png", PLOT)
        floor = json.loads(run_cli(["eval", str(model), "--ref", str(f16), "--json"]))
    table = "\n".join(line for line in report.splitlines() if line.startswith("|"))
    write_section(
        "quant-report",
        "\n".join(
            [
                "## `edgellm quantize --report`: quality against f16",
                "",
                f"Measured {machine()} with `edgellm quantize SmolLM2-135M-Instruct-F16.gguf --type {TYPES} --report`",
                "(llama-perplexity's definitions: 512-token chunks of the bundled English + Chinese text, the second",
                "half of each scored; KLD and same-top-p against the f16's next-token distributions; ± is the",
                f"standard error; gen t/s = tg128, mean ± sd of 3 runs on 2 shared cores, load average {before}",
                f"before, {load()} after). The gen t/s column swings with what the other jobs do during the run",
                "(two threads that wait for a busy core spin): for speed, read the two sections around this one.",
                "",
                "The f16 here is the shipped Q4_1 model widened to f16 (no float SmolLM2 can be downloaded on this",
                "offline machine), so the numbers measure what re-quantizing costs relative to it. SmolLM2's",
                "576-wide rows are not a multiple of 256, so for most matrices the K-quant types fall back to",
                "legacy blocks (Q4_K_M is mostly Q5_0, Q5_K_M mostly Q5_1, Q6_K mostly Q8_0, Q2_K mostly Q4_0).",
                "And the weights already sit on Q4_1's 16-level grids, so a type whose grid aliases with them can",
                "lose more than a smaller one (Q5_K_M vs Q4_K_M here): these rows show what the report looks like,",
                "they do not rank the types for a real f16 model.",
                "",
                f"The shipped Q4_1 file itself, whose weights the f16 holds to f16 rounding, scores mean KLD "
                f"{floor['kld']['value']:.4f} ± {floor['kld']['error']:.4f} and same top p "
                f"{100 * floor['same_top']['value']:.2f} ± {100 * floor['same_top']['error']:.2f} % against it:",
                "the floor set by llama.cpp computing quantized matrix products with 8-bit-quantized activations",
                "(an f16 matrix product keeps them in f16): roughly the floor for every quantized type on a CPU.",
                "",
                table,
                "",
                f"![size vs KLD]({PLOT.name})",
                "",
                f"(whole script: {(time.perf_counter() - t0) / 60:.0f} min)",
            ]
        ),
    )


def main(parts: list[str]) -> None:
    model = default_model_path()
    if "bench" in parts:
        speed_section(model)
    if "quality" in parts:
        quality_section(model)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", choices=["bench", "quality"], help="default: both")
    main(ap.parse_args().parts or ["bench", "quality"])
