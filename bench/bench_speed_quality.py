"""`edgellm bench` and `edgellm quantize --report` on the default model, into docs/benchmarks.md
(sections "bench" and "quant-report") with the plot as docs/quant-report-smollm2.png.

The quality reference is an f16 GGUF made by widening the shipped Q4_1 model (llama.cpp's
quantizer with allow_requantize): the only float SmolLM2 on this offline machine. Each type is
then quantized from that f16 by `edgellm quantize --report`, exactly as a user would run it.

    .venv/bin/python bench/bench_speed_quality.py
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import DOC, machine, write_section  # noqa: E402
from edgellm import llama_log  # noqa: E402
from edgellm.cli import main as edgellm  # noqa: E402
from edgellm.default_model import default_model_path  # noqa: E402

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


def main() -> None:
    model = default_model_path()
    t0 = time.perf_counter()
    speed = run_cli(["bench", str(model), "--threads", "1,2"])
    write_section(
        "bench",
        "\n".join(
            [
                "## `edgellm bench`: prompt and generation speed",
                "",
                f"Measured {machine()} with `edgellm bench default --threads 1,2` (pp512 / tg128 as llama-bench,",
                "mean ± sd of 3 runs; TTFT = a chat turn with a ~512-token prompt until its first token; peak RSS",
                "of the process running the setting). The 2 cores are shared with other jobs: expect noise.",
                "",
                speed.strip(),
            ]
        ),
    )
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-") as tmp:
        f16 = widen_to_f16(model, Path(tmp) / "SmolLM2-135M-Instruct-F16.gguf")
        report = run_cli(["quantize", str(f16), "--type", TYPES, "--outdir", tmp, "--report"])
        shutil.copyfile(Path(tmp) / f"{f16.stem}-quant-report.png", PLOT)
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
                "standard error; gen t/s = tg128, mean ± sd of 3 runs on 2 shared cores).",
                "",
                "The f16 here is the shipped Q4_1 model widened to f16 (no float SmolLM2 can be downloaded on this",
                "offline machine), so the numbers measure what re-quantizing costs relative to it. SmolLM2's",
                "576-wide rows are not a multiple of 256, so for most matrices the K-quant types fall back to",
                "legacy blocks (Q4_K_M is mostly Q5_0, Q6_K mostly Q8_0, Q2_K mostly Q4_0): compare by size.",
                "",
                table,
                "",
                f"![size vs KLD]({PLOT.name})",
                "",
                f"(whole script: {(time.perf_counter() - t0) / 60:.0f} min)",
            ]
        ),
    )


if __name__ == "__main__":
    main()
