"""`edgellm run MODEL [PROMPT]`: one streamed answer, or a prompt loop in a terminal.

Scriptable as Ollama's: piped text is appended to PROMPT, an answer stopped by Ctrl-C exits 130,
`--json` prints the text, the stop reason and the statistics as one object."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import queue
import stat
import sys
from typing import TextIO

from edgellm.commands.leftovers import sweep_store
from edgellm.commands.options import (
    add_load_options,
    add_rpc_option,
    add_sampling_options,
    load_options,
    number,
    sampling_params,
)
from edgellm.errors import EdgeLLMError
from edgellm.models.identity import default_system, model_label
from edgellm.models.resolve import looks_like_path, resolve_model
from edgellm.runtime.client import RemoteEngine, RemoteTurn, background
from edgellm.runtime.engine import SamplingParams

_DONE = object()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="answer a prompt, or chat in a simple prompt loop")
    p.add_argument("model", help="`default`, a model name or a path to a .gguf file")
    p.add_argument("prompt", nargs="?", help="answer this and exit; piped text is added after it "
                   "(without PROMPT: the piped text, or a >>> loop in a terminal)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the answer, why it stopped and its statistics as JSON")
    p.add_argument("--no-pull", action="store_true", help="fail instead of pulling a registry model not downloaded")
    add_load_options(p)
    add_rpc_option(p)
    add_sampling_options(p)
    p.set_defaults(handler=run)


def stream(engine: RemoteEngine, messages: list[dict[str, str]], params: SamplingParams, out: TextIO) -> RemoteTurn:
    """Print a turn as it is generated. The turn runs on a worker thread so that Ctrl-C stays
    responsive (it cancels the turn, prompt processing included) while llama.cpp computes; the
    turn's stop reason is then `cancelled`."""
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

    background(work, "edgellm-turn")
    while True:
        try:  # the write too: Ctrl-C lands wherever the main thread is
            piece = pieces.get()
            if piece is _DONE:
                break
            out.write(piece)  # type: ignore[arg-type]
            out.flush()
        except KeyboardInterrupt:
            engine.cancel()
            turn.stats.stop_reason = "cancelled"  # the runner's final stats say so too
    if failure:
        raise failure[0]
    return turn


def print_stats(turn: RemoteTurn) -> None:
    s = turn.stats
    print(
        f"prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), {s.prompt_tps:.1f} tok/s | "
        f"generated: {s.generated_tokens} tokens, {s.generation_tps:.1f} tok/s | "
        f"first token: {s.ttft_seconds * 1000:.0f} ms | stop: {s.stop_reason}"
        + (f" | restored from disk: {s.restored_tokens} tokens" if s.restored_tokens else "")
        + (f" | drafts: {s.accepted_tokens}/{s.draft_tokens} kept ({s.acceptance_rate:.0%})" if s.draft_tokens else ""),
        file=sys.stderr,
    )


CUT_NOTES = {  # a stop reason that cut the answer short -> what stderr says
    "length": "the answer was cut at --max-tokens {max_tokens} (raise it, or -1 for no limit)",
    "context": "the answer was cut: the {n_ctx}-token context is full{fix}",
}


def cut_note(reason: str, params: SamplingParams, engine: RemoteEngine) -> str | None:
    """What to say about an answer cut short; never suggests a context beyond the model's own."""
    trained = engine.info.context_length
    fix = f" (raise --ctx, up to {trained})" if engine.n_ctx < trained else " (the model's whole context)"
    note = CUT_NOTES.get(reason)
    return note.format(max_tokens=params.max_tokens, n_ctx=engine.n_ctx, fix=fix) if note else None


MAX_PIPED = 16 << 20  # bytes of stdin read as a prompt: beyond any context, short of filling the memory


def piped_input() -> str | None:
    """Text piped or redirected into stdin; None for a terminal (or nothing attached), so that
    `echo CODE | edgellm run MODEL "Explain this:"` sees both, as Ollama does. At most MAX_PIPED
    bytes: `</dev/zero` or `yes |` is one line, not a process that eats the memory."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if not any(test(mode) for test in (stat.S_ISCHR, stat.S_ISFIFO, stat.S_ISREG, stat.S_ISSOCK)):
        return None
    data = sys.stdin.buffer.read(MAX_PIPED + 1)
    if len(data) > MAX_PIPED:
        raise EdgeLLMError(f"stdin holds more than {MAX_PIPED >> 20} MiB, more than any context: pipe a part of it")
    return data.decode("utf-8", errors="replace")


def model_path(args: argparse.Namespace) -> str:
    """MODEL's file; a registry model not downloaded yet is pulled first (its size and memory plan
    shown on stderr), as `ollama run` does, unless --no-pull."""
    from edgellm.models import registry
    from edgellm.models.store import Store, parse_ref

    name = args.model
    if not (looks_like_path(name) or name == "default" or args.no_pull):
        ref = parse_ref(name)
        entry = registry.load().get(ref.name)
        if entry is not None and not Store().named(ref.name):
            from edgellm.commands import plan, pull

            qtype = ref.qtype or entry.recommended
            print(f"{ref.name} is not downloaded yet: pulling {ref.name}:{qtype} (--no-pull to refuse)",
                  file=sys.stderr)
            with contextlib.redirect_stdout(sys.stderr):  # stdout is the answer's
                plan.run(argparse.Namespace(model=f"{ref.name}:{qtype}", ctx=args.ctx, gpu_layers=args.gpu_layers,
                                            json=False, rpc=getattr(args, "rpc", None)))  # fmt: skip
                pull.run(argparse.Namespace(model=f"{ref.name}:{qtype}", ctx=args.ctx, force=False,
                                            no_memory_check=False))  # fmt: skip
    return str(resolve_model(name))


def run(args: argparse.Namespace) -> int:
    sweep_store()
    piped = piped_input()
    prompt = "\n\n".join(t for t in (args.prompt, piped) if t and t.strip()) if piped is not None else args.prompt
    if prompt is not None and not prompt.strip():
        raise EdgeLLMError("the prompt is empty: give PROMPT, or pipe text into `edgellm run MODEL`")
    path = model_path(args)
    params = sampling_params(args)
    with RemoteEngine(path, load_options(args), model=args.model) as engine:
        if prompt is None:
            return prompt_loop(engine, args)
        history = [{"role": "system", "content": args.system}] if args.system else []
        out = io.StringIO() if args.json else sys.stdout
        turn = stream(engine, [*history, {"role": "user", "content": prompt}], params, out)
        if not args.json:
            sys.stdout.write("\n")
    reason = turn.stats.stop_reason
    if args.json:
        print(json.dumps({"model": args.model, "text": turn.text, "stop_reason": reason,
                          "stats": dataclasses.asdict(turn.stats)}, ensure_ascii=False))  # fmt: skip
    note = cut_note(reason, params, engine)
    if note:
        print(f"edgellm: {note}", file=sys.stderr)
    if args.verbose:  # after llama.cpp's shutdown log, so the statistics are the last line
        print_stats(turn)
    if reason == "cancelled":
        print("edgellm: interrupted", file=sys.stderr)
        return 130
    return 0


LOOP_HELP = """Available Commands:
  /set parameter NAME VALUE   set a sampling parameter: {parameters}
  /set system TEXT            set the system prompt (clears the conversation)
  /show [info|parameters|system|template]   the model, the parameters, the system prompt
  /clear                      forget the conversation (keeps the system prompt)
  /bye                        exit (also Ctrl+d)
  /?, /help                   this help

Use \"\"\" to begin a multi-line message, and \"\"\" again to end it."""
# `/set parameter NAME VALUE`: name (Ollama's where it has one) -> (SamplingParams field, type)
LOOP_PARAMETERS = {
    "temperature": ("temperature", number(float, 0)),
    "top_k": ("top_k", number(int, 0)),
    "top_p": ("top_p", number(float, 0, 1)),
    "min_p": ("min_p", number(float, 0, 1)),
    "repeat_penalty": ("repeat_penalty", number(float, 0.01)),
    "repeat_last_n": ("repeat_last_n", number(int, 0)),
    "num_predict": ("max_tokens", number(int, 1, also=(-1,))),
    "max_tokens": ("max_tokens", number(int, 1, also=(-1,))),
    "seed": ("seed", number(int)),
}
MULTILINE = '"""'


@dataclasses.dataclass
class LoopState:
    """What `>>>` commands change: the sampling parameters, the system prompt, the conversation."""

    params: SamplingParams
    system: str | None
    history: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history


def read_message(first: str) -> str:
    """One message; a line starting with \"\"\" opens a multi-line one that the next \"\"\" closes."""
    if not first.lstrip().startswith(MULTILINE):
        return first
    text = first.lstrip()[len(MULTILINE) :]
    lines = []
    while not text.rstrip().endswith(MULTILINE):
        lines.append(text)
        text = input("... ")
    lines.append(text.rstrip()[: -len(MULTILINE)])
    return "\n".join(lines).strip("\n")


def _default_system(path: str) -> str:
    """What a conversation without a system prompt gets: the registry's prompt, else the template's."""
    system = default_system(str(path))
    return f"{system}\n  (the model's default)" if system else "(no system prompt: the model's template decides)"


def show(engine: RemoteEngine, state: LoopState, what: str) -> str:
    """`/show [info|parameters|system|template]`."""
    info = engine.info
    parts = {
        "info": f"  model        {model_label(str(engine.model or info.path))}\n"
                f"  file         {info.path}\n  architecture {info.architecture}\n"
                f"  parameters   {info.parameters:,}\n  quantization {info.file_type}\n"
                f"  context      {engine.n_ctx} of {info.context_length} trained",
        "parameters": "\n".join(f"  {name:<16}{getattr(state.params, field)}" for name, (field, _) in
                                LOOP_PARAMETERS.items() if name != "num_predict"),
        "system": state.system or _default_system(info.path),
        "template": engine.template,
    }  # fmt: skip
    if what and what not in parts:
        return f"Unknown /show '{what}': one of {', '.join(parts)}"
    return parts[what] if what else "\n\n".join(parts[k] for k in ("info", "parameters", "system"))


def loop_command(line: str, engine: RemoteEngine, state: LoopState) -> str | None:
    """Run one `/` command; what to print, or None for /bye."""
    word, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if word in ("/bye", "/exit", "/quit"):
        return None
    if word in ("/?", "/help"):
        return LOOP_HELP.format(parameters=", ".join(LOOP_PARAMETERS))
    if word == "/clear":
        state.history.clear()
        return "Cleared session context"
    if word == "/show":
        return show(engine, state, rest)
    if word == "/set":
        kind, _, value = rest.partition(" ")
        if kind == "system":
            state.system, state.history = value.strip() or None, []
            return "Set system message."
        name, _, value = value.strip().partition(" ")
        if kind != "parameter" or name not in LOOP_PARAMETERS or not value.strip():
            return f"Usage: /set parameter NAME VALUE, NAME one of {', '.join(LOOP_PARAMETERS)}; /set system TEXT"
        field, parse = LOOP_PARAMETERS[name]
        try:
            parsed = parse(value.strip())
        except argparse.ArgumentTypeError as err:
            return f"Couldn't set {name}: {err}"
        state.params = dataclasses.replace(state.params, **{field: parsed})
        return f"Set parameter '{name}' to '{parsed}'"
    return f"Unknown command '{word}'. Type /? for help"


def prompt_loop(engine: RemoteEngine, args: argparse.Namespace) -> int:
    """Ollama-style `>>>` loop; the conversation is kept and trimmed to the context."""
    state = LoopState(sampling_params(args), args.system)
    print(f"{model_label(args.model)} ({engine.info.file_type}). Ctrl-C stops an answer, Ctrl-D or /bye quits, "
          "/? lists the commands.")  # fmt: skip
    while True:
        try:
            prompt = read_message(input(">>> "))
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:  # at the prompt, not during an answer: say how to leave
            print("\nUse Ctrl + d or /bye to exit.")
            continue
        if prompt.strip().startswith("/"):
            said = loop_command(prompt, engine, state)
            if said is None:
                return 0
            print(said)
            continue
        if not prompt.strip():
            continue
        state.history.append({"role": "user", "content": prompt})
        messages, dropped = engine.fit(state.messages(), reserve=max(state.params.max_tokens, 0) or 256)
        state.history = [m for m in messages if m["role"] != "system"]
        if dropped:
            print(f"[dropped the {dropped} oldest messages to fit the {engine.n_ctx}-token context]")
        turn = stream(engine, messages, state.params, sys.stdout)
        print()
        state.history.append({"role": "assistant", "content": turn.text})
        note = cut_note(turn.stats.stop_reason, state.params, engine)
        if note:
            print(f"[{note}]")
        if args.verbose:
            print_stats(turn)
