"""The model store: which models exist, where their files are, and what those files say.

Owns the registry (``models.toml``: names, Hub repositories, recommended types), the local
store (the models folder, ``NAME:TYPE`` references), Hub downloads, name resolution, the
bundled default model, GGUF header reading and the chat templates a model family uses (the
templates are data written into GGUF files by ``quantize`` and rendered, sandboxed, by the
runtime). May import only ``edgellm.errors``, ``edgellm.paths``, ``edgellm.durable`` and
``edgellm.units``: it is the bottom layer that the runtime, ``quantize`` and the front ends
build on.
"""
