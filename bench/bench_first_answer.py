"""First answers of the default model: 16 short factual questions, greedy, under the system
prompt SmolLM2's template writes by itself and under the registry's, counted right when the
answer contains the fact. Writes the `first-answers` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_first_answer [--model PATH] [--repeat-penalty 1.1] [--no-write]
"""

from __future__ import annotations

import argparse
import os

from bench.report import machine, write_section
from edgellm.models import identity
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams

QUIZ = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of England?", ("london",)),
    ("How many days are in a week?", ("seven", "7")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is 2 + 2?", ("4", "four")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What do bees make?", ("honey",)),
    ("What is the boiling point of water in Celsius?", ("100",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the chemical symbol for water?", ("h2o",)),
    ("Which ocean is the largest?", ("pacific",)),
]
SMOLLM2_OWN = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: the bundled model)")
    ap.add_argument("--repeat-penalty", type=float, default=SamplingParams.repeat_penalty)
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    if args.model is None:
        from edgellm.models.default_model import default_model_path

        args.model = str(default_model_path())
    registry_system = identity.default_system(args.model)
    prompts = {f"template's own ({SMOLLM2_OWN!r})": SMOLLM2_OWN, f"registry's ({registry_system!r})": registry_system}
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, repeat_penalty=args.repeat_penalty)
    rows, france = [], {}
    with Engine(args.model, LoadOptions(n_ctx=1024, probe=False)) as engine:
        for label, system in prompts.items():
            if system is None:
                continue
            right = 0
            for question, facts in QUIZ:
                answer = engine.chat([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                     params).result()  # fmt: skip
                right += any(f in answer.lower() for f in facts)
                if question == QUIZ[0][0]:
                    france[label] = answer.strip().replace("\n", " ")[:90]
            rows.append(f"| {label} | {right}/{len(QUIZ)} | {france[label]} |")
            print(rows[-1])
    text = (
        "## First answers of the default model (`bench/bench_first_answer.py`)\n\n"
        f"Machine: {machine()}. Model: `{os.path.basename(args.model)}`, greedy, repeat penalty "
        f"{args.repeat_penalty:g}, at most {args.max_tokens} tokens; an answer counts when it contains the fact.\n\n"
        "| system prompt | right | answer to \"What is the capital of France?\" |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nCommand: `.venv/bin/python -m bench.bench_first_answer --repeat-penalty {args.repeat_penalty:g}`"
    )
    print(text)
    if not args.no_write:
        write_section("first-answers", text)


if __name__ == "__main__":
    main()
