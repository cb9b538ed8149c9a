"""Importance matrices (issue #19): what they buy in KL divergence, what calibration text does, and
how edgellm's computation compares with llama.cpp's own tools.

1. Quality: the default model dequantized to f16 is quantized to each type without a matrix, with
   edgellm's matrix (bundled English + Chinese + code) and with llama.cpp's path (llama-imatrix +
   llama-quantize built from the vendored sources, same text and chunking); each is scored against
   the f16 on `edgellm eval`'s bundled English and Chinese texts (evaluate.py: llama-perplexity's
   KL divergence).
2. Calibration: English-only vs mixed matrices (same number of chunks) on the Chinese text.
3. Speed and memory: `edgellm imatrix` and `llama-imatrix` on the same f16, text and chunks, run
   alternately (A/B, repeats, medians of tokens per second over the whole command, model load
   included), peak RSS of each process (wait4).

`python -m bench.bench_imatrix --help`; results go to docs/benchmarks.md (section `imatrix`) and
bench/results_imatrix.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "imatrix"
RESULTS = Path(__file__).resolve().parent / "results_imatrix.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_imatrix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a GGUF (default: the default model, widened to f16)")
    ap.add_argument("--types", default="q4_k_m,q3_k_m,q2_k,iq2_xs", help="types to score (default %(default)s)")
    ap.add_argument("--chunks", type=int, default=None, help="calibration chunks for the main matrices (default: all)")
    ap.add_argument("--calib-chunks", type=int, default=8,
                    help="chunks for the English-only vs mixed comparison (both the same; default %(default)s, "
                    "all the bundled English gives the default model)")  # fmt: skip
    ap.add_argument("--eval-chunks", type=int, default=None,
                    help="score only the first N chunks of each eval text (default: all)")
    ap.add_argument("--speed-chunks", type=int, default=4, help="chunks per speed run (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="speed runs per tool (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads everywhere (default %(default)s)")
    ap.add_argument("--no-llama-tools", action="store_true", help="skip llama.cpp's path (no build)")
    ap.add_argument("--parts", default="quality,speed",
                    help="quality and/or speed (default %(default)s); a part run alone keeps the other's last "
                    "results from bench/results_imatrix.json")  # fmt: skip
    ap.add_argument("--workdir", default=None, help="keep files here, reused by a rerun (default: a temporary folder)")
    ap.add_argument("--no-docs", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    return ap.parse_args(argv)


def f16_model(args: argparse.Namespace, work: Path) -> Path:
    from bench.bench_gpu_precision import rewritten
    from edgellm.models.default_model import default_model_path
    from edgellm.models.gguf_file import inspect

    src = Path(args.model).expanduser() if args.model else default_model_path()
    if inspect(src).file_type in ("F16", "F32", "ALL_F32", "BF16"):
        return src
    dst = work / f"{src.stem}-F16.gguf"
    return dst if dst.exists() else rewritten(src, "F16", work)


def llama_tools(args: argparse.Namespace) -> dict[str, Path]:
    if args.no_llama_tools:
        return {}
    from bench.llama_tools import build

    return build(["llama-imatrix", "llama-quantize"])


GNU_TIME = "/usr/bin/time"  # its %M is the command's own peak RSS (a fork of this big process would inherit ours)
RATES = {  # the computing phase's tokens per second, as each tool reports it (model load excluded)
    "edgellm imatrix": re.compile(r"chunk (\d+)/\1\s+([\d,.]+) tok/s"),
    # llama.cpp's log is stamped minutes.seconds.ms.us since start: computing starts at this line
    "llama-imatrix": re.compile(
        r"(\d+)\.(\d+)\.(\d+)\.(\d+) I compute_imatrix: computing over (\d+) chunks, n_ctx=(\d+)"
    ),
}


def run_timed(cmd: list[str], tool: str | None = None) -> dict[str, float]:
    """Wall seconds, peak RSS (MiB) and, for a known tool, its computing rate (tok/s) of one command."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "MAXRSS %M", *cmd], stdout=subprocess.DEVNULL, stderr=err)
        seconds = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{text[-2000:]}")
    out = {"seconds": seconds, "rss_mib": int(re.findall(r"MAXRSS (\d+)", text)[-1]) / 1024}
    found = RATES[tool].findall(text) if tool else []
    if tool == "edgellm imatrix" and found:
        out["tok_s"] = float(found[-1][1].replace(",", ""))
    elif tool == "llama-imatrix" and found:
        minutes, secs, ms, us, chunks, n_ctx = (int(x) for x in found[-1])
        start = minutes * 60 + secs + ms / 1e3 + us / 1e6
        out["tok_s"] = chunks * n_ctx / (seconds - start)  # to its exit (the save is small)
    return out


def edgellm_imatrix_cmd(f16: Path, text: Path, out: Path, chunks: int | None, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "edgellm", "imatrix", str(f16), "-o", str(out), "--calibration", str(text),
           "--threads", str(threads), "--force"]  # fmt: skip
    return cmd + (["--chunks", str(chunks)] if chunks else [])


def llama_imatrix_cmd(tool: Path, f16: Path, text: Path, out: Path, chunks: int | None, threads: int) -> list[str]:
    cmd = [str(tool), "-m", str(f16), "-f", str(text), "-o", str(out), "-c", "512", "-b", "512", "-t", str(threads),
           "--no-ppl"]  # fmt: skip
    return cmd + (["--chunks", str(chunks)] if chunks else [])


def quantize(f16: Path, type_name: str, out: Path, matrix: Path | None, threads: int) -> Path:
    from quantize.imatrix.files import read
    from quantize.llamacpp import FILE_TYPES, quantize_file

    if not out.exists():
        quantize_file(f16, out, FILE_TYPES[type_name], n_params=1, threads=threads, progress=False,
                      imatrix=read(matrix) if matrix else None)  # fmt: skip
    return out


def llama_quantize(tool: Path, f16: Path, type_name: str, out: Path, matrix: Path, threads: int) -> Path:
    if not out.exists():
        subprocess.run([str(tool), "--imatrix", matrix.name, str(f16), str(out), type_name.upper(), str(threads)],
                       check=True, capture_output=True, cwd=matrix.parent)  # fmt: skip
    return out


def score(f16: Path, candidates: dict[str, Path], text: str, args: argparse.Namespace) -> dict[str, float]:
    """Mean KLD of each candidate from the f16 on one bundled text."""
    from edgellm.measure.evaluate import EvalPlan, compare, prepare_reference

    plan = EvalPlan(text_spec=text, n_ctx=512, max_chunks=args.eval_chunks, threads=args.threads)
    out = {}
    with prepare_reference(plan, f16) as ref:
        for label, path in candidates.items():
            result = compare(plan, path, ref)
            out[label] = result.kld.value if result.kld else float("nan")
            print(f"  {text} {label}: KLD {out[label]:.6f}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.report import machine, write_section
    from edgellm.runtime import llama_log
    from quantize.imatrix import calibration

    llama_log.install(verbose=False)
    types = [t.strip().lower() for t in args.types.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-imatrix-") as tmp:
        work = Path(args.workdir).expanduser() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        f16 = f16_model(args, work)
        tools = llama_tools(args)
        mixed_text = work / "calibration-bundled.txt"
        mixed_text.write_text(calibration.load("bundled")[1], encoding="utf-8")

        parts = {p.strip() for p in args.parts.split(",")}
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        command = "python -m bench.bench_imatrix " + " ".join(argv if argv is not None else sys.argv[1:])
        if "quality" in parts:
            results.update(quality(args, f16, work, tools, mixed_text, types), quality_command=command)
        if "speed" in parts:
            results.update(speed=speed(args, f16, work, tools, mixed_text), speed_chunks=args.speed_chunks,
                           speed_command=command)  # fmt: skip
    results.update(machine=machine(), model=f16.name, threads=args.threads, load_at_end=os.getloadavg())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    section = render(results)
    if not args.no_docs:
        write_section(SECTION, section)
    print(section)
    return 0


def matrix(f16: Path, work: Path, name: str, spec: str, chunks: int | None, threads: int) -> Path:
    """edgellm's matrix of ``f16`` on a calibration text, computed once per work folder."""
    from quantize.imatrix import calibration, files
    from quantize.imatrix.compute import Plan, chunk_progress, compute

    path = work / f"{name}-{chunks or 'all'}.imatrix.gguf"
    if not path.exists():
        label, text = calibration.load(spec)
        files.write(compute(f16, Plan(label, text, max_chunks=chunks, threads=threads), chunk_progress(name)), path)
    return path


def quality(args: argparse.Namespace, f16: Path, work: Path, tools: dict[str, Path], mixed_text: Path,
            types: list[str]) -> dict:  # fmt: skip
    """KLD of every type without and with each matrix, and the calibration pair on Chinese."""
    from quantize.imatrix import files
    from quantize.llamacpp import FILE_TYPES

    mixed = matrix(f16, work, "mixed", "bundled", args.chunks, args.threads)
    pair = {name: matrix(f16, work, name, spec, args.calib_chunks, args.threads)
            for name, spec in (("mixed", "bundled"), ("english", "bundled:en"))}  # fmt: skip
    theirs = None
    if tools:
        theirs = work / "llama.imatrix.gguf"
        if not theirs.exists():
            run_timed(llama_imatrix_cmd(tools["llama-imatrix"], f16, mixed_text, theirs, args.chunks, args.threads))

    candidates: dict[str, dict[str, Path]] = {}
    for t in types:
        row = {}
        if not FILE_TYPES[t].needs_imatrix:
            row["none"] = quantize(f16, t, work / f"{t}-none.gguf", None, args.threads)
        row["edgellm"] = quantize(f16, t, work / f"{t}-edgellm.gguf", mixed, args.threads)
        if theirs is not None:
            row["llama.cpp"] = llama_quantize(tools["llama-quantize"], f16, t, work / f"{t}-llama.gguf", theirs,
                                              args.threads)  # fmt: skip
        candidates[t] = row
    calib_types = [t for t in types if t in ("q3_k_m", "q2_k")]
    calib = {t: {k: quantize(f16, t, work / f"{t}-{k}-{args.calib_chunks}.gguf", m, args.threads)
                 for k, m in pair.items()} for t in calib_types}  # fmt: skip

    flat = {f"{t}/{k}": p for t, row in candidates.items() for k, p in row.items()}
    kld = {text: score(f16, flat, text, args) for text in ("bundled:en", "bundled:zh")}
    calib_flat = {f"{t}/{k}": p for t, row in calib.items() for k, p in row.items()}
    calib_kld = score(f16, calib_flat, "bundled:zh", args) if calib_flat else {}
    return {"types": types, "kld": kld, "calibration_zh": calib_kld, "chunks": files.read(mixed).chunk_count,
            "calib_chunks": args.calib_chunks, "eval_chunks": args.eval_chunks,
            "llama_cpp_path": theirs is not None}  # fmt: skip


def speed(args: argparse.Namespace, f16: Path, work: Path, tools: dict[str, Path], mixed_text: Path) -> dict:
    """Both tools on the same chunks, alternated (A/B) so that load on the shared machine hits both."""
    runs: dict[str, list[dict[str, float]]] = {"edgellm imatrix": [], "llama-imatrix": []}
    for _ in range(args.repeats):
        runs["edgellm imatrix"].append(run_timed(edgellm_imatrix_cmd(
            f16, mixed_text, work / "speed-edgellm.gguf", args.speed_chunks, args.threads), "edgellm imatrix"))
        if tools:
            runs["llama-imatrix"].append(run_timed(llama_imatrix_cmd(
                tools["llama-imatrix"], f16, mixed_text, work / "speed-llama.gguf", args.speed_chunks, args.threads),
                "llama-imatrix"))
    return {k: v for k, v in runs.items() if v}


def _pct(new: float, old: float | None) -> str:
    return f"{100 * (new / old - 1):+.1f}%" if old else "-"


def render(r: dict) -> str:
    scored = f"first {r['eval_chunks']} chunks of each" if r.get("eval_chunks") else "all chunks"
    lines = [
        "## Importance matrices (`bench/bench_imatrix.py`)",
        "",
        f"`{r.get('quality_command', '')}` then `{r.get('speed_command', '')}` — {r['machine']}; "
        f"model {r['model']} (the default model dequantized to f16, the reference), "
        f"{r['threads']} threads. The machine was shared with other engineers' builds and tests (load average "
        f"{r['load_at_end'][0]:.1f} / {r['load_at_end'][1]:.1f} / {r['load_at_end'][2]:.1f} at the end): "
        "timings swing, ratios were measured alternately in one run.",
        "",
        f"Mean KL divergence from the f16 on `edgellm eval`'s bundled texts "
        f"({scored}); "
        f"matrices over {r['chunks']} chunks of "
        "512 tokens of the bundled calibration text (English + Chinese + code); llama.cpp's path is llama-imatrix "
        "+ llama-quantize built from the vendored llama.cpp, on the same text file and chunking.",
        "",
        "| type | text | no matrix | edgellm matrix | change | llama.cpp matrix | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["types"]:
        for text, scores in r["kld"].items():
            none, ours, theirs = scores.get(f"{t}/none"), scores.get(f"{t}/edgellm"), scores.get(f"{t}/llama.cpp")
            lines.append(
                f"| {t.upper()} | {text.split(':')[1]} | {f'{none:.5f}' if none is not None else 'refused'} | "
                f"{ours:.5f} | {_pct(ours, none)} | {f'{theirs:.5f}' if theirs is not None else '-'} | "
                f"{_pct(theirs, none) if theirs is not None else '-'} |"
            )
    if r["calibration_zh"]:
        lines += ["", f"Calibration text, scored on the Chinese text ({r['calib_chunks']} chunks each):", "",
                  "| type | no matrix | English-only matrix | mixed matrix |", "|---|---|---|---|"]  # fmt: skip
        for t in ("q3_k_m", "q2_k"):
            c = r["calibration_zh"]
            if f"{t}/mixed" in c:
                none = r["kld"]["bundled:zh"].get(f"{t}/none")
                lines.append(f"| {t.upper()} | {none:.5f} | {c[f'{t}/english']:.5f} ({_pct(c[f'{t}/english'], none)}) "
                             f"| {c[f'{t}/mixed']:.5f} ({_pct(c[f'{t}/mixed'], none)}) |")  # fmt: skip
    if r.get("speed"):
        tokens = r["speed_chunks"] * 512
        lines += ["", f"Computing a matrix of the same f16: {r['speed_chunks']} chunks ({tokens} tokens), runs "
                  "alternated between the tools. Computing rate: tokens over the decoding time each tool reports "
                  "(edgellm: its chunk progress; llama-imatrix: from its log's `computing over` stamp to its exit), "
                  "model load excluded; whole command: from "
                  "start to exit. Peak RSS: GNU time's %M of each command (edgellm's includes its load probe, "
                  "a child process).", "",
                  "| tool | computing tok/s (median) | runs | whole command tok/s (median) | runs (s) | peak RSS MiB |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        medians = {}
        for tool, runs in r["speed"].items():
            rates = [run["tok_s"] for run in runs if "tok_s" in run]
            medians[tool] = statistics.median(rates) if rates else float("nan")
            seconds = [run["seconds"] for run in runs]
            wall = tokens / statistics.median(seconds)
            lines.append(f"| {tool} | {medians[tool]:.1f} | {', '.join(f'{x:.1f}' for x in rates)} | {wall:.1f} | "
                         f"{', '.join(f'{x:.1f}' for x in seconds)} | {max(run['rss_mib'] for run in runs):.0f} |")
        if len(medians) == 2:
            ratio = medians["edgellm imatrix"] / medians["llama-imatrix"]
            lines += ["", f"edgellm / llama-imatrix computing rate: **{ratio:.2f}x** (target >= 0.7x)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
