"""Checkpoint → GGUF pipeline: read → map → write → quantize, without torch.

from quantize import convert, quantize, run
convert("Llama-2-7b-chat-hf", "f16")              # → Llama-2-7B-Chat-F16.gguf in that folder
quantize("Llama-2-7B-Chat-F16.gguf", "q4_k_m")    # → Llama-2-7B-Chat-Q4_K_M.gguf
run("Llama-2-7b-chat-hf", "q4_k_m,q8_0", outdir="models")  # what `edgellm quantize` does
"""

from quantize.convert import Output, convert, prepare, quantize, run
from quantize.llamacpp import DEFAULT_TYPE, FILE_TYPES

__all__ = ["DEFAULT_TYPE", "FILE_TYPES", "Output", "convert", "prepare", "quantize", "run"]
