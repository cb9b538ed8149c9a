"""`edgellm chat`: the Textual TUI. Owns the chat store (SQLite, ``sessions``), the per-chat
settings, the ``ChatEngine`` protocol the app talks to and the slot holding the loaded model
(``engines``), export, and the app with its screens and widgets. May import ``edgellm.runtime``,
``edgellm.models`` and the foundation modules; never the commands, the server, measurement or
``quantize``."""
