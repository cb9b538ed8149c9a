"""Turn what a user typed as MODEL into a GGUF path: `default`, a path, or a store name."""

from __future__ import annotations

import os
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.models.default_model import default_model_path


def looks_like_path(text: str) -> bool:
    """A path names a file (used in place, never copied); anything else is a model name."""
    return (
        "/" in text
        or os.sep in text
        or text.startswith(("~", "."))
        or text.lower().endswith(".gguf")
        or (os.path.isfile(text) and ":" not in text)
    )


def resolve_model(name: str) -> Path:
    """`default`, a path to a .gguf file, or `NAME[:TYPE]` of a pulled model."""
    if name == "default":
        return default_model_path()
    if looks_like_path(name):
        return Path(name).expanduser()
    from edgellm.models import registry
    from edgellm.models.store import Store, parse_ref

    ref = parse_ref(name)
    known = registry.load()
    entry = known.get(ref.name)
    found = Store().find(ref, prefer=entry.recommended if entry else None)
    if found is not None:
        return found.path
    if entry is not None:
        raise EdgeLLMError(f"{ref} is not downloaded yet: run `edgellm pull {ref}` (or `edgellm plan {ref.name}`)")
    raise EdgeLLMError(f"unknown model '{ref.name}'{suggest(ref.name)}")


def suggest(name: str) -> str:
    """' (did you mean a, b?)' among every name MODEL may be: `default`, the store's and the registry's."""
    import difflib

    from edgellm.models import registry
    from edgellm.models.store import Store

    names = ["default", *(m.name for m in Store().models()), *registry.load().models]
    close = difflib.get_close_matches(name, list(dict.fromkeys(names)), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else " (see `edgellm list` and `edgellm list --all`)"
