"""`edgellm run MODEL [PROMPT]`: one streamed answer, or a prompt loop in a terminal."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from typing import TextIO

from edgellm.commands.options import (
    add_load_options,
    add_rpc_option,
    add_sampling_options,
    load_options,
    sampling_params,
)
from edgellm.models.resolve import resolve_model
from edgellm.runtime.client import RemoteEngine, RemoteTurn
from edgellm.runtime.engine import SamplingParams

_DONE = object()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="answer a prompt, or chat in a simple prompt loop")
    p.add_argument("model", help="`default`, a model name or a path to a .gguf file")
    p.add_argument("prompt", nargs="?", help="answer this and exit (else read stdin, or loop in a terminal)")
    add_load_options(p)
    add_rpc_option(p)
    add_sampling_options(p)
    p.set_defaults(handler=run)


def stream(engine: RemoteEngine, messages: list[dict[str, str]], params: SamplingParams, out: TextIO) -> RemoteTurn:
    """Print a turn as it is generated. The turn runs on a worker thread so that Ctrl-C stays
    responsive (it cancels the turn, prompt processing included) while llama.cpp computes."""
    turn = engine.chat(messages, params)
    pieces: queue.Queue[object] = queue.Queue()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            for piece in turn:
                pieces.put(piece)
        except BaseException as err:  # re-raised on the caller's thread
            failure.append(err)
        finally:
            pieces.put(_DONE)

    threading.Thread(target=work, name="edgellm-turn", daemon=True).start()
    while True:
        try:
            piece = pieces.get()
        except KeyboardInterrupt:
            engine.cancel()
            continue
        if piece is _DONE:
            break
        out.write(piece)  # type: ignore[arg-type]
        out.flush()
    if failure:
        raise failure[0]
    return turn


def print_stats(turn: RemoteTurn) -> None:
    s = turn.stats
    print(
        f"prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), {s.prompt_tps:.1f} tok/s | "
        f"generated: {s.generated_tokens} tokens, {s.generation_tps:.1f} tok/s | "
        f"first token: {s.ttft_seconds * 1000:.0f} ms | stop: {s.stop_reason}",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    with RemoteEngine(resolve_model(args.model), load_options(args), model=args.model) as engine:
        if args.prompt is None and sys.stdin.isatty():
            return prompt_loop(engine, args)
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        history = [{"role": "system", "content": args.system}] if args.system else []
        turn = stream(engine, [*history, {"role": "user", "content": prompt}], sampling_params(args), sys.stdout)
        sys.stdout.write("\n")
    if args.verbose:  # after llama.cpp's shutdown log, so the statistics are the last line
        print_stats(turn)
    return 0


def prompt_loop(engine: RemoteEngine, args: argparse.Namespace) -> int:
    """Ollama-style `>>>` loop; the conversation is kept and trimmed to the context."""
    params = sampling_params(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    print(f"{engine.info.name} ({engine.info.file_type}). Ctrl-C stops an answer, Ctrl-D or /bye quits.")
    while True:
        try:
            prompt = input(">>> ")
        except EOFError:
            print()
            return 0
        if prompt.strip() in ("/bye", "/exit", "/quit"):
            return 0
        if not prompt.strip():
            continue
        history.append({"role": "user", "content": prompt})
        history, dropped = engine.fit(history, reserve=max(params.max_tokens, 0) or 256)
        if dropped:
            print(f"[dropped the {dropped} oldest messages to fit the {engine.n_ctx}-token context]")
        turn = stream(engine, history, params, sys.stdout)
        print()
        history.append({"role": "assistant", "content": turn.text})
        if args.verbose:
            print_stats(turn)
