"""`edgellm chat [MODEL]`: the chat TUI, reopening where the user left off."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgellm.commands.leftovers import sweep_store
from edgellm.commands.options import add_load_options, add_rpc_option, add_sampling_options, load_options
from edgellm.models.gguf_file import inspect
from edgellm.models.resolve import looks_like_path, resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in a terminal app: saved chats, model picker, live speed and memory")
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="`default`, a model name or a .gguf path (default: the last chat's model, else `default`)",
    )
    p.add_argument("--db", default=None, metavar="FILE", help="chat database (default: chats.db in the data folder)")
    add_load_options(p)
    add_rpc_option(p)
    add_sampling_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Textual and the TUI load only for this verb: `edgellm run` stays quick to start.
    from edgellm.tui.app import ChatApp
    from edgellm.tui.chat_settings import ChatSettings
    from edgellm.tui.sessions import SessionStore

    sweep_store()
    model = args.model
    if model is not None:
        inspect(resolve_model(model))  # a bad MODEL is a one-line error before the screen opens
        if looks_like_path(model):  # chats remember files by absolute path
            model = str(Path(model).expanduser().absolute())  # not resolved: a symlink keeps its name
    store = SessionStore(args.db)
    try:
        planned = model
        if planned is None and args.gpu_layers == "auto":  # size `auto` for the chat that reopens
            chats = store.chats()
            planned = chats[0].model if chats else "default"
        # with a MODEL: refused here, in one line, if it cannot fit
        options = load_options(argparse.Namespace(**{**vars(args), "model": planned}))
    except BaseException:
        store.close()
        raise
    app = ChatApp(
        store,
        model=model,
        base_options=options,
        new_chat_settings=ChatSettings.from_args(args, options),
        new_chat_system=args.system,
    )
    try:
        app.run()
    finally:
        app.slot.close()
        store.close()
    return app.return_code or 0
