"""Measurement: speed (``bench``: pp/tg tokens per second, time to first token, peak RSS),
quality (``eval``: perplexity, KL divergence, top-1 agreement against a reference), the
quantization report that combines both, and its plot. May import ``edgellm.runtime``,
``edgellm.models`` and the foundation modules; never the commands, the TUI or the server.
"""
