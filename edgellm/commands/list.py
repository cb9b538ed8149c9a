"""`edgellm list [--all]`: the models in the store (like `ollama list`), or every registry model."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgellm.commands.leftovers import sweep_store
from edgellm.errors import EdgeLLMError
from edgellm.models import registry
from edgellm.models.default_model import default_model_path
from edgellm.models.store import STAGING, Store, StoredModel
from edgellm.units import human_bytes, human_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", aliases=["ls"], help="models in the store (--all: every model edgellm knows)")
    p.add_argument("--all", action="store_true", help="every registry model, pulled or not")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def ago(then: float, now: float | None = None) -> str:
    """'3 minutes ago', as `ollama list` says it."""
    seconds = max(0, int((now or time.time()) - then))
    for unit, size in (
        ("year", 31_536_000),
        ("month", 2_592_000),
        ("week", 604_800),
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def short_path(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + "/") else text


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _parameters(model: StoredModel) -> int | None:
    if model.parameters is not None:
        return model.parameters
    from edgellm.models import gguf_file

    try:
        return gguf_file.inspect(model.path).parameters
    except EdgeLLMError:
        return None


def _default_row() -> dict[str, object] | None:
    try:
        path = default_model_path()
    except EdgeLLMError:
        return None
    from edgellm.models import gguf_file

    info = gguf_file.inspect(path)
    st = path.stat()
    return {
        "name": "default",
        "type": info.file_type,
        "size": st.st_size,
        "parameters": info.parameters,
        "modified": st.st_mtime,
        "path": str(path),
    }


def stored_rows() -> list[dict[str, object]]:
    rows = [
        {
            "name": m.name,
            "type": m.qtype,
            "size": m.size,
            "parameters": _parameters(m),
            "modified": m.modified,
            "path": str(m.path),
        }
        for m in Store().models()
    ]
    default = _default_row()
    return rows + [default] if default else rows


def _bundled_row() -> list[dict[str, object]]:
    """`default` as `list --all` shows it: the bundled model, always there."""
    try:
        path = default_model_path()
    except EdgeLLMError:
        return []
    from edgellm.models import gguf_file

    info = gguf_file.inspect(path)
    return [{
        "name": "default",
        "parameters": info.parameters,
        "context": info.context_length,
        "license": str(info.metadata.get("general.license", "?")),
        "gated": False,
        "recommended": info.file_type,
        "gguf": [info.file_type],
        "repo": None,
        "pulled": [info.file_type],
        "description": f"{info.name}, bundled with edgellm",
    }]  # fmt: skip


def registry_rows() -> list[dict[str, object]]:
    pulled: dict[str, list[str]] = {}
    for m in Store().models():
        pulled.setdefault(m.name, []).append(m.qtype)
    return _bundled_row() + [
        {
            "name": e.name,
            "parameters": e.shape.params,
            "context": e.context,
            "license": e.license,
            "gated": e.gated,
            "recommended": e.recommended,
            "gguf": sorted(e.gguf_files) if e.gguf_repo else [],
            "repo": e.repo,
            "pulled": pulled.get(e.name, []),
            "description": e.description,
        }
        for e in registry.load()
    ]


def run(args: argparse.Namespace) -> int:
    sweep_store()
    rows = registry_rows() if args.all else stored_rows()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if args.all:
        lines = [["NAME", "PARAMS", "CONTEXT", "LICENSE", "SOURCE", "PULLED"]]
        for r in rows:
            source = "bundled" if r["name"] == "default" else "gguf" if r["gguf"] else "convert"
            lines.append(
                [
                    str(r["name"]),
                    human_count(r["parameters"]),
                    str(r["context"]),
                    f"{r['license']}{' (gated)' if r['gated'] else ''}",
                    source,
                    ",".join(r["pulled"]) or "-",
                ]
            )
    else:
        lines = [["NAME", "TYPE", "SIZE", "PARAMS", "MODIFIED", "LOCATION"]]
        for r in rows:
            params = human_count(r["parameters"]) if r["parameters"] else "?"
            lines.append(
                [
                    str(r["name"]),
                    str(r["type"]),
                    human_bytes(r["size"]),
                    params,
                    ago(r["modified"]),
                    short_path(Path(r["path"])),
                ]
            )
    print(table(lines))
    partial = list((Store().root / STAGING).glob("*.part")) if not args.all else []
    if partial:
        size = human_bytes(sum(p.stat().st_size for p in partial))
        print(f"({len(partial)} interrupted download(s), {size}, in {short_path(partial[0].parent)}: "
              "`edgellm pull` the model again to resume)")  # fmt: skip
    return 0
