"""The runtime: everything that touches llama.cpp to generate text.

Owns the Engine (one llama.cpp model + context, chat turns, streaming, cancellation), the runner
process that hosts it (so a llama.cpp abort never takes a front end down), the load probe,
llama.cpp's log capture, chat templates, the backend/hardware queries and the CPU/GPU layer
placement. May import: ``edgellm.errors``, ``edgellm.paths``, ``edgellm.units``,
``edgellm.durable`` and ``edgellm.models`` (to read GGUF headers and plan memory); never the
commands, the TUI, the server or measurement.
"""
