"""The runtime: everything that touches llama.cpp to generate text.

Owns the Engine (one llama.cpp model + context, chat turns, streaming, cancellation), the runner
process that hosts it (so a llama.cpp abort never takes a front end down), the load probe,
llama.cpp's log capture, the backend/hardware queries, the memory planner (will it fit, how
many layers go to the GPU) and the CPU/GPU layer placement. May import ``edgellm.models`` and
the foundation modules (``edgellm.errors``, ``paths``, ``units``, ``durable``); never the
commands, the TUI, the server, measurement or ``quantize``.
"""
