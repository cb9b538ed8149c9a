"""The system prompt a model family uses when the chat gives none, read from its chat template.

Templates such as SmolLM2's, Qwen's or a Llama-2 chat template with a built-in system text write
that default only when the first message is not a system message. Rendering one conversation with
and one without a marker system message and comparing the two shows the default's text, whatever
the template's syntax: the marker's place in one is the default's place in the other."""

from __future__ import annotations

import os

from edgellm.errors import EdgeLLMError
from edgellm.models import chat_templates, gguf_file, identity, store
from edgellm.models.resolve import resolve_model

_MARKER = "\x00system-marker\x00"
_QUESTION = [{"role": "user", "content": "\x00question\x00"}]


def family_default(template: str | None) -> str:
    """The template's built-in system prompt, or "" when it has none (or cannot be rendered)."""
    template = template or chat_templates.chatml()
    try:
        plain = chat_templates.render(template, _QUESTION)
        marked = chat_templates.render(template, [{"role": "system", "content": _MARKER}, *_QUESTION])
    except EdgeLLMError:
        return ""
    head = len(os.path.commonprefix([plain, marked]))
    tail = len(os.path.commonprefix([plain[head:][::-1], marked[head:][::-1]]))
    if marked[head : len(marked) - tail] != _MARKER:
        return ""
    return plain[head : len(plain) - tail]


def model_template(model: str) -> str | None:
    """The template the Engine would use for ``model`` (its GGUF header's, else the one the store
    recorded at pull time), read without loading the model; None if the file is unreadable."""
    try:
        path = resolve_model(model)
        return gguf_file.inspect(path).chat_template or store.chat_template_for(path)
    except EdgeLLMError:
        return None


def model_default(model: str, template: str | None) -> str:
    """What ``model`` answers under when the chat sets no system prompt: the registry's (the Engine
    sends it, e.g. the bundled model's), else its template's own."""
    try:
        registry_default = identity.default_system(resolve_model(model))
    except EdgeLLMError:
        registry_default = None
    return registry_default if registry_default is not None else family_default(template)
