"""Importance matrices (llama.cpp's imatrix): which input columns of each weight matter, measured
on calibration text, so that 2-4 bit quantization spends its precision there.

`collect` answers llama.cpp's graph callback, `compute` runs calibration text through a float
model, `files` reads and writes llama.cpp's GGUF and legacy `.dat` formats, `calibration` holds
the bundled text. May import ``edgellm.runtime``, ``edgellm.models`` and the foundation modules.
"""
