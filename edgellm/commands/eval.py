"""`edgellm eval MODEL [--ref REF.gguf] [--text FILE]`: perplexity and KL divergence as
llama-perplexity computes them, on the bundled public-domain text or the user's file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgellm.commands.options import THREADS, number, warn_threads
from edgellm.errors import EdgeLLMError
from edgellm.measure.evaluate import EvalPlan, EvalResult, isolated_eval
from edgellm.models.gguf_file import inspect
from edgellm.models.resolve import resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity and KL divergence against a reference model (llama-perplexity's definitions)",
        description="Scores the second half of every --ctx-token chunk of the text, as llama-perplexity does. "
        "With --ref: KL divergence of MODEL from REF's next-token distributions, the fraction of positions "
        "where both pick the same top token, and PPL(MODEL)/PPL(REF).",
    )
    p.add_argument("model", help="`default`, a model name or a path to a .gguf file")
    p.add_argument("--ref", metavar="REF.gguf", help="reference model (e.g. the f16 the model was quantized from)")
    p.add_argument(
        "--text",
        default="bundled",
        metavar="FILE",
        help="UTF-8 text to score, or bundled, bundled:en, bundled:zh (default: bundled English + Chinese)",
    )
    p.add_argument("--ctx", type=number(int, 16), default=512, metavar="N",
                   help="tokens per chunk (default 512, as llama.cpp)")
    p.add_argument("--chunks", type=number(int, 1), default=None, metavar="N",
                   help="score only the first N chunks (default: all)")
    p.add_argument("--threads", type=THREADS, default=None, metavar="N", help="CPU threads (default: physical cores)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def report_lines(r: EvalResult) -> list[str]:
    """llama-perplexity's summary, in its wording, as aligned `label  value` lines."""
    rows = [
        ("model", f"{r.model} ({r.file_type})"),
        ("text", f"{r.text}: {r.chunks} chunks of {r.n_ctx} tokens, {r.positions} positions scored"),
        ("PPL", f"{r.ppl.value:.4f} ± {r.ppl.error:.4f}"),
    ]
    if r.ppl_ref and r.ln_ppl_ratio and r.ppl_ratio and r.kld and r.same_top and r.rms_dp:
        delta = r.delta_ppl_percent
        rows[1:1] = [("reference", f"{r.reference} ({r.reference_file_type})")]
        rows += [
            ("PPL(ref)", f"{r.ppl_ref.value:.4f} ± {r.ppl_ref.error:.4f}"),
            ("ln(PPL/PPL(ref))", str(r.ln_ppl_ratio)),
            ("PPL/PPL(ref)", f"{r.ppl_ratio} ({delta.value:+.3f} ± {delta.error:.3f} %)" if delta else ""),
            ("Mean KLD", str(r.kld)),
            ("Maximum KLD", f"{r.kld_max:.6f}"),
            *((f"{name + '%':<6} KLD", f"{value:.6f}") for name, value in r.kld_percentiles.items()),
            ("RMS Δp", f"{100 * r.rms_dp.value:.3f} ± {100 * r.rms_dp.error:.3f} %"),
            ("Same top p", f"{100 * r.same_top.value:.3f} ± {100 * r.same_top.error:.3f} %"),
        ]
    return [f"{label:<18}{value}" for label, value in rows]


VOCAB_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
              "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")  # fmt: skip


def check_vocabularies(model: Path, ref: Path) -> None:
    """Refuse two models whose headers already show different vocabularies, before the reference's
    whole pass runs (the token-by-token check after it still catches subtler differences)."""
    a, b = inspect(model).metadata, inspect(ref).metadata
    differ = [key.removeprefix("tokenizer.ggml.") for key in VOCAB_KEYS if a.get(key) != b.get(key)]
    if differ:
        raise EdgeLLMError(
            f"{model} and the reference {ref} have different vocabularies ({', '.join(differ)} differ): "
            "KL divergence needs models with the same vocabulary (e.g. a quantization and its f16)"
        )


def run(args: argparse.Namespace) -> int:
    plan = EvalPlan(text_spec=args.text, n_ctx=args.ctx, max_chunks=args.chunks, threads=args.threads)
    model = resolve_model(args.model)
    warn_threads(args.threads)
    ref = resolve_model(args.ref) if args.ref else None
    if ref is not None:
        check_vocabularies(model, ref)
    result = isolated_eval(plan, model, ref)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(report_lines(result)))
    return 0
