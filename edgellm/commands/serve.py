"""`edgellm serve MODEL [MODEL...]`: an OpenAI-compatible server that answers several users at once."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from edgellm.commands.options import add_load_options, add_rpc_option, load_options, number, size
from edgellm.errors import EdgeLLMError
from edgellm.models.resolve import looks_like_path, resolve_model

API_KEY_ENV = "EDGELLM_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    from edgellm.runtime.batch import DEFAULT_CHUNK, DEFAULT_QUEUE, DEFAULT_STREAM_INTERVAL_S
    from edgellm.runtime.prompt_cache import DEFAULT_LIMIT

    p = sub.add_parser("serve", help="serve models over the OpenAI API, several requests at once")
    p.add_argument("model", nargs="+", help="`default`, a model name or a .gguf path; several models: several names")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the server to the network (set --api-key)")
    g.add_argument("--port", type=number(int, 0, 65535), default=8000, help="TCP port (0: any free port)")
    g.add_argument("--parallel", type=number(int, 1, 64), default=None, metavar="N",
                   help="requests generated at once per model (default: up to 4, as many as memory holds)")
    g.add_argument("--queue", type=number(int, 0), default=DEFAULT_QUEUE, metavar="N",
                   help="requests that may wait for a free slot; more get 503 with Retry-After")
    g.add_argument("--chunk", type=number(int, 16), default=DEFAULT_CHUNK, metavar="N",
                   help="prompt tokens evaluated per step beside the running streams")
    g.add_argument("--stream-interval", type=number(int, 0, 1000), default=round(DEFAULT_STREAM_INTERVAL_S * 1000),
                   metavar="MS", help="a stream's tokens that come faster than this go out together, saving CPU "
                                      "for generation (0: every token on its own)")  # fmt: skip
    g.add_argument("--cache-ram", type=size, default=None, metavar="SIZE",
                   help="host memory per model for idle conversations' KV caches, so that their next turn "
                        "evaluates only what is new without slowing the other streams (e.g. 500MB, 8GB; 0: "
                        f"idle caches stay in the context; default: {DEFAULT_LIMIT // 10**9} GB or a quarter of "
                        "the available memory, shared by the models, whichever is less)")  # fmt: skip
    g.add_argument("--cache-size", type=size, default=0, metavar="SIZE",
                   help="disk for conversations' KV caches, written when the server stops and read back when "
                        "a conversation returns after a restart (e.g. 4GB; default 0: off; the store `chat` "
                        "uses, least recently used dropped)")  # fmt: skip
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require `Authorization: Bearer KEY`; ${API_KEY_ENV} does the same without showing "
                        "the key to the system's `ps` (default: no key)")
    g.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; `*` for any); off by default")  # fmt: skip
    add_load_options(p)
    add_rpc_option(p)
    p.set_defaults(handler=run)


def model_id(name: str, path: Path) -> str:
    """The name clients send as ``model``: what was typed, or a file's stem for a path."""
    return path.stem if looks_like_path(name) else name


def served_models(args: argparse.Namespace) -> list:
    """A ServedModel per MODEL (not started): per-slot context, slots and load options checked."""
    from edgellm.models.gguf_file import inspect
    from edgellm.runtime import planner
    from edgellm.runtime.batch import default_slots
    from edgellm.runtime.prompt_cache import default_limit
    from edgellm.runtime.runner import jsonable
    from edgellm.server.pool import ServedModel

    cache_ram = args.cache_ram
    if cache_ram is None:
        cache_ram = default_limit(planner.probe().ram_available, len(args.model))
    models = []
    for name in args.model:
        path = resolve_model(name)
        per_slot = args.ctx or planner.default_context(inspect(path).context_length)
        slots = args.parallel or default_slots(path, per_slot)
        options = load_options(argparse.Namespace(**{**vars(args), "model": name, "ctx": per_slot}))
        if not options.rpc:  # split over workers, each holder's share was checked by load_options
            planner.check_load(path, per_slot * slots, options.n_gpu_layers, flash_attn=options.flash_attn)
        runner_options = {**jsonable(options), "slots": slots, "max_queue": args.queue, "chunk": args.chunk,
                          "stream_interval": args.stream_interval / 1000, "cache_ram": cache_ram}  # fmt: skip
        ident = model_id(name, path)
        if any(m.name == ident for m in models):
            raise EdgeLLMError(f"model {ident!r} is named twice")
        models.append(ServedModel(ident, path, runner_options, verbose=args.verbose, created=int(time.time())))
    return models


def listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as err:
        raise EdgeLLMError(f"cannot listen on {host}:{port}: {err.strerror}; pick another --port") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from edgellm.server.app import create_app

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"edgellm: warning: listening on {args.host} without an API key: anyone who can reach this "
              f"port can use it (set --api-key or ${API_KEY_ENV})", file=sys.stderr)  # fmt: skip
    models = served_models(args)
    sock = listen(args.host, args.port)
    try:
        for model in models:
            slots = model.options["slots"]
            print(f"loading {model.name} ({model.path.name}, {slots} slots of {model.options['n_ctx']} tokens)...",
                  file=sys.stderr, flush=True)  # fmt: skip
            model.start()
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"
        auth = " -H 'Authorization: Bearer $EDGELLM_API_KEY'" if api_key else ""
        print(f"serving {', '.join(m.name for m in models)} at {url}", flush=True)
        print(f"try: curl {url}/chat/completions{auth} -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"{models[0].name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}'",
              flush=True)  # fmt: skip
        app = create_app(models, api_key=api_key, cors=args.cors)
        config = uvicorn.Config(app, log_level="info" if args.verbose else "warning", access_log=args.verbose,
                                timeout_graceful_shutdown=3)  # fmt: skip
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on: done, not failed
            print("edgellm: server stopped", file=sys.stderr)
    finally:
        sock.close()
        for model in models:
            model.close()
    return 0
