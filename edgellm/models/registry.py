"""The model registry: `models.toml` (bundled) plus the user's own, validated when loaded.

Users type short names (`qwen1.5-0.5b-chat`); the registry says where the checkpoint lives, what
shape it has (for the memory planner before anything is downloaded), how to chat with it and
which ready-made GGUF files exist. A bad entry is an error naming the file, the entry and the key."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from edgellm import paths
from edgellm.errors import EdgeLLMError
from edgellm.models import chat_templates
from edgellm.models.gguf_file import file_type_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

# the repository's models.toml, packaged as edgellm/data/models.toml (a symlink in the source tree)
BUNDLED = Path(__file__).resolve().parent.parent / "data" / "models.toml"

# Quantization types llama.cpp writes, by the names its tools and GGUF file names use.
FILE_TYPES: tuple[str, ...] = tuple(file_type_name(t) for t in gguf.LlamaFileType if t.name != "GUESSED")
TEMPLATES = {"llama2": chat_templates.llama2, "chatml": chat_templates.chatml, "alpaca": chat_templates.alpaca}

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class RegistryError(EdgeLLMError):
    """models.toml is malformed: names the file, the entry and what to fix."""


@dataclass(frozen=True)
class Shape:
    """What the planner needs to size a model it has not seen: counts from the checkpoint's config."""

    params: int
    layers: int
    embedding: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.embedding // self.heads


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    description: str
    repo: str
    architecture: str
    shape: Shape
    context: int
    license: str
    gated: bool = False
    modelscope: str | None = None
    template: str | None = None
    system: str | None = None
    recommended: str = "Q4_K_M"
    gguf_repo: str | None = None
    gguf_files: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    draft: str | None = None  # registry name of a small model with the same vocabulary that drafts for this one

    @property
    def display_name(self) -> str:
        """The name the model is shown by: `title`, else the publisher's repo name (`Qwen1.5-0.5B-Chat`,
        `SmolLM2-135M-Instruct`) without the `-hf` that only names the checkpoint format."""
        if self.title:
            return self.title
        name = self.repo.rpartition("/")[2]
        return name[:-3] if name.lower().endswith("-hf") else name

    def chat_template(self) -> str | None:
        """Jinja chat template for checkpoints that carry none (None: trust the checkpoint)."""
        if self.template is None:
            return None
        make = TEMPLATES[self.template]
        return make(self.system) if self.system else make()

    def gguf_file(self, qtype: str) -> str | None:
        """File name of a ready-made GGUF of this type, if the registry knows one."""
        return self.gguf_files.get(qtype) if self.gguf_repo else None


# key -> (type, required); required keys may come from the family
_MODEL_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "family": (str, True),
    "shape": (str, True),
    "title": (str, False),
    "description": (str, False),
    "repo": (str, True),
    "modelscope": (str, False),
    "architecture": (str, True),
    "context": (int, True),
    "license": (str, True),
    "gated": (bool, False),
    "template": (str, False),
    "system": (str, False),
    "recommended": (str, False),
    "gguf_repo": (str, False),
    "gguf_file": (str, False),
    "gguf_types": (list, False),
    "gguf_files": (dict, False),
    "draft": (str, False),
}
_SHAPE_KEYS = ("params", "layers", "embedding", "heads", "kv_heads", "ffn", "vocab")


class Registry:
    """All known models by name, from one or more models.toml files (later files override)."""

    def __init__(self, models: dict[str, ModelEntry]) -> None:
        self.models = models

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def __iter__(self):  # noqa: ANN204 - Iterator[ModelEntry]
        return iter(self.models.values())

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def lookup(self, name: str) -> ModelEntry:
        """The entry for ``name`` or an error suggesting the closest names."""
        entry = self.models.get(name)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(name, list(self.models), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see `edgellm list --all`)"
            raise EdgeLLMError(f"unknown model '{name}'{hint}")
        return entry


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise RegistryError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise RegistryError(f"{path}: cannot read ({err.strerror})") from None


def _merge(layers: list[tuple[Path, dict[str, Any]]]) -> tuple[dict[str, dict], dict[str, Path]]:
    """Tables of all files, later files overriding earlier ones key by key; remembers where each
    model was last defined, so errors point at the file to fix."""
    merged: dict[str, dict] = {"families": {}, "shapes": {}, "models": {}}
    origin: dict[str, Path] = {}
    for path, data in layers:
        for section, tables in data.items():
            if section not in merged:
                raise RegistryError(f"{path}: unknown section [{section}] (expected families, shapes, models)")
            if not isinstance(tables, dict):
                raise RegistryError(f"{path}: [{section}] must be a table of tables")
            for name, table in tables.items():
                if not isinstance(table, dict):
                    raise RegistryError(f"{path}: [{section}.{name}] must be a table")
                merged[section].setdefault(name, {}).update(table)
                origin[f"{section}.{name}"] = path
    return merged, origin


def _shape(name: str, table: dict[str, Any], where: Path) -> Shape:
    label = f"{where}: [shapes.{name}]"
    unknown = set(table) - set(_SHAPE_KEYS)
    if unknown:
        raise RegistryError(f"{label}: unknown key '{sorted(unknown)[0]}'")
    for key in _SHAPE_KEYS:
        value = table.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RegistryError(f"{label}: '{key}' must be a positive integer (got {value!r})")
    shape = Shape(**{k: table[k] for k in _SHAPE_KEYS})
    if shape.heads % shape.kv_heads or shape.embedding % shape.heads:
        raise RegistryError(
            f"{label}: heads ({shape.heads}) must be a multiple of kv_heads ({shape.kv_heads}) "
            f"and divide embedding ({shape.embedding})"
        )
    return shape


def _gguf_files(label: str, table: dict[str, Any]) -> dict[str, str]:
    files = dict(table.get("gguf_files") or {})
    template, types = table.get("gguf_file"), table.get("gguf_types")
    if template is not None:
        if "{TYPE}" not in template and "{type}" not in template:
            raise RegistryError(f"{label}: gguf_file must contain {{TYPE}} or {{type}} (got {template!r})")
        if not types:
            raise RegistryError(f"{label}: gguf_file needs gguf_types, the quantizations that repo has")
        for t in types:
            files.setdefault(t, template.replace("{TYPE}", t).replace("{type}", t.lower()))
    for qtype, filename in files.items():
        if qtype not in FILE_TYPES:
            raise RegistryError(f"{label}: unknown quantization type '{qtype}' (known: {', '.join(FILE_TYPES)})")
        if not isinstance(filename, str) or not filename.endswith(".gguf") or ".." in filename.split("/"):
            raise RegistryError(f"{label}: GGUF file for {qtype} must be a relative .gguf path (got {filename!r})")
    if files and not table.get("gguf_repo"):
        raise RegistryError(f"{label}: lists GGUF files but no gguf_repo")
    return files


def _model(name: str, table: dict[str, Any], families: dict, shapes: dict[str, Shape], where: Path) -> ModelEntry:
    label = f"{where}: [models.{name}]"
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(f"{label}: names are lowercase letters, digits, '.', '_' and '-' (max 64)")
    family = table.get("family")
    if not isinstance(family, str) or family not in families:
        raise RegistryError(f"{label}: family {family!r} is not defined in [families]")
    full = {**families[family], **table}
    for key, value in full.items():
        if key not in _MODEL_KEYS:
            raise RegistryError(f"{label}: unknown key '{key}'")
        kind, _ = _MODEL_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RegistryError(f"{label}: '{key}' must be {getattr(kind, '__name__', kind)} (got {value!r})")
    for key, (_, required) in _MODEL_KEYS.items():
        if required and key not in full:
            raise RegistryError(f"{label}: missing '{key}'")
    if full["shape"] not in shapes:
        raise RegistryError(f"{label}: shape {full['shape']!r} is not defined in [shapes]")
    for key in ("repo", "gguf_repo", "modelscope"):
        if key in full and not _REPO_RE.fullmatch(full[key]):
            raise RegistryError(f"{label}: '{key}' must look like owner/name (got {full[key]!r})")
    if full["architecture"] not in gguf.MODEL_ARCH_NAMES.values():
        raise RegistryError(f"{label}: unknown architecture {full['architecture']!r}")
    if full["context"] <= 0:
        raise RegistryError(f"{label}: context must be positive")
    if full.get("template") is not None and full["template"] not in TEMPLATES:
        raise RegistryError(f"{label}: template must be one of {', '.join(TEMPLATES)} (got {full['template']!r})")
    recommended = full.get("recommended", "Q4_K_M")
    if recommended not in FILE_TYPES:
        raise RegistryError(f"{label}: unknown quantization type '{recommended}' for 'recommended'")
    return ModelEntry(
        name=name,
        family=family,
        description=full.get("description", name),
        repo=full["repo"],
        architecture=full["architecture"],
        shape=shapes[full["shape"]],
        context=full["context"],
        license=full["license"],
        gated=full.get("gated", False),
        modelscope=full.get("modelscope"),
        template=full.get("template"),
        system=full.get("system"),
        recommended=recommended,
        gguf_repo=full.get("gguf_repo"),
        gguf_files=_gguf_files(label, full),
        title=full.get("title"),
        draft=full.get("draft"),
    )


def user_registry_path() -> Path:
    return paths.config_dir() / "models.toml"


def load(files: list[Path] | None = None) -> Registry:
    """The bundled registry plus the user's models.toml (if any); every entry validated."""
    if files is None:
        files = [BUNDLED] + [p for p in [user_registry_path()] if p.is_file()]
    merged, origin = _merge([(p, _read(p)) for p in files])
    shapes = {n: _shape(n, t, origin[f"shapes.{n}"]) for n, t in merged["shapes"].items()}
    models = {n: _model(n, t, merged["families"], shapes, origin[f"models.{n}"]) for n, t in merged["models"].items()}
    for entry in models.values():
        _check_draft(entry, models, origin[f"models.{entry.name}"])
    return Registry(models)


def _check_draft(entry: ModelEntry, models: dict[str, ModelEntry], where: Path) -> None:
    """A draft model must exist and share the vocabulary (its tokens are verified by this model);
    embedding rows may be padded differently (Qwen 14B/72B: 152,064, the small ones 151,936), up to
    llama.cpp's own limit for speculative decoding (SPEC_VOCAB_MAX_SIZE_DIFFERENCE, 128)."""
    if entry.draft is None:
        return
    label = f"{where}: [models.{entry.name}]"
    draft = models.get(entry.draft)
    if draft is None or draft.name == entry.name:
        raise RegistryError(f"{label}: draft {entry.draft!r} is not another model of the registry")
    if abs(draft.shape.vocab - entry.shape.vocab) > 128 or draft.family != entry.family:
        raise RegistryError(f"{label}: draft {entry.draft!r} has another vocabulary ({draft.shape.vocab} tokens, "
                            f"family {draft.family}; this model: {entry.shape.vocab}, {entry.family})")
