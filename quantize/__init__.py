"""Checkpoint → GGUF pipeline: read → map → write → quantize, without torch."""
