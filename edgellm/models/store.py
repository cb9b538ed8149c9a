"""The local model store: `<data>/models/<name>/<name>-<TYPE>.gguf`, a JSON manifest beside each.

Names are checked before they touch the file system and every path is checked after symlinks are
resolved, so no name (`../x`, `/etc/passwd`, `a:../../b`, NUL bytes, a symlink planted in the store)
can reach outside it. Files arrive under a temporary name and are renamed into place at the end."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgellm import durable, paths
from edgellm.errors import EdgeLLMError
from edgellm.models.registry import FILE_TYPES, NAME_RE

STAGING = ".partial"  # temporary files, on the store's own file system so renames are atomic


class BadName(EdgeLLMError):
    """A model name that is not a plain store name."""


@dataclass(frozen=True)
class Ref:
    """`NAME` or `NAME:TYPE`, validated."""

    name: str
    qtype: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.qtype}" if self.qtype else self.name


def name_like(text: str) -> str:
    """A valid store name made from a file's or a repository's title: lowercased, anything but
    letters, digits, `.`, `_` and `-` made `-`, no `..`, at most 64 characters (NAME_RE)."""
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9._-]+", "-", text.lower())).strip(".-_")
    return name[:64].rstrip(".-_") or "model"


def parse_ref(text: str) -> Ref:
    """Split and validate `NAME[:TYPE]`; anything that could name a path is refused."""
    name, _, qtype = text.partition(":")
    name = name.lower()
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise BadName(
            f"'{text}' is not a model name: names are lowercase letters, digits, '.', '_' and '-' "
            "(give a path with a '/' to use a .gguf file in place)"
        )
    if not qtype:
        return Ref(name)
    qtype = qtype.upper()
    if qtype not in FILE_TYPES:
        raise BadName(f"'{text}': unknown quantization type '{qtype}' (e.g. Q4_K_M, Q8_0, F16)")
    return Ref(name, qtype)


@dataclass
class StoredModel:
    """One GGUF file in the store."""

    name: str
    qtype: str
    path: Path
    size: int
    modified: float
    manifest: dict[str, object] = field(default_factory=dict)

    @property
    def ref(self) -> Ref:
        return Ref(self.name, self.qtype)

    @property
    def parameters(self) -> int | None:
        value = self.manifest.get("parameters")
        return value if isinstance(value, int) else None


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.models_dir()

    # -- paths -------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        """``path`` if, with every symlink resolved, it is still inside the store; else refuse."""
        real_root = self.root.resolve()
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            raise BadName(f"{path}: points outside the model store ({self.root}); refusing to use it")
        return path

    def folder(self, name: str) -> Path:
        return self._inside(self.root / parse_ref(name).name)

    def path_for(self, ref: Ref) -> Path:
        """Where NAME:TYPE's GGUF file lives (or will)."""
        if ref.qtype is None:
            raise BadName(f"{ref}: say which quantization, e.g. {ref.name}:Q4_K_M")
        ref = parse_ref(str(ref))  # a Ref built by hand is validated too
        return self._inside(self.root / ref.name / f"{ref.name}-{ref.qtype}.gguf")

    def staging(self) -> Path:
        """A folder for work in progress, on the store's own file system."""
        folder = self.root / STAGING
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- reading -----------------------------------------------------------------------------
    def models(self) -> list[StoredModel]:
        """Every model in the store, by name then type; entries that escape it are skipped."""
        found: list[StoredModel] = []
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not NAME_RE.fullmatch(folder.name) or not folder.is_dir():
                continue
            try:
                self._inside(folder)
            except BadName:
                continue
            for gguf_path in sorted(folder.glob("*.gguf")):
                model = self._entry(folder.name, gguf_path)
                if model is not None:
                    found.append(model)
        return found

    def _entry(self, name: str, gguf_path: Path) -> StoredModel | None:
        try:
            self._inside(gguf_path)
            st = gguf_path.stat()
        except (BadName, OSError):
            return None
        manifest = _read_manifest(gguf_path.with_suffix(".json"))
        qtype = manifest.get("type")
        if not isinstance(qtype, str):
            stem = gguf_path.stem
            qtype = stem[len(name) + 1 :] if stem.startswith(f"{name}-") else stem
            qtype = qtype.upper() if qtype.upper() in FILE_TYPES else qtype
        return StoredModel(name, qtype, gguf_path, st.st_size, st.st_mtime, manifest)

    def named(self, name: str) -> list[StoredModel]:
        folder = self.folder(name)
        if not folder.is_dir():
            return []
        return [m for p in sorted(folder.glob("*.gguf")) if (m := self._entry(folder.name, p)) is not None]

    def find(self, ref: Ref, prefer: str | None = None) -> StoredModel | None:
        """The stored file for ``ref``: its type if given; else the only one, or ``prefer``."""
        have = self.named(ref.name)
        if ref.qtype:
            exact = [m for m in have if m.qtype == ref.qtype]
            if exact:
                return exact[0]
            if have:
                raise EdgeLLMError(
                    f"{ref.name} is here as {', '.join(m.qtype for m in have)}, not {ref.qtype}: "
                    f"run `edgellm pull {ref}` or pick one of those"
                )
            return None
        if len(have) <= 1:
            return have[0] if have else None
        preferred = [m for m in have if m.qtype == prefer]
        if preferred:
            return preferred[0]
        raise EdgeLLMError(
            f"{ref.name} is here in several types ({', '.join(m.qtype for m in have)}): "
            f"say which, e.g. {ref.name}:{have[0].qtype}"
        )

    # -- writing -----------------------------------------------------------------------------
    def install(self, source: Path, ref: Ref, manifest: dict[str, object], *, move: bool) -> StoredModel:
        """Put ``source`` into the store as NAME:TYPE: moved (a file we made), or hard-linked
        (a Hub cache file: no second copy on disk), or copied where links are impossible."""
        target = self.path_for(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.staging() / f"{ref.name}-{ref.qtype}.{os.getpid()}.tmp"
        try:
            if move:
                shutil.move(str(source), tmp)
            else:
                try:
                    os.link(os.path.realpath(source), tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
            manifest = {**manifest, "name": ref.name, "type": ref.qtype, "installed": time.time()}
            _write_json(target.with_suffix(".json"), manifest)
            durable.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        model = self._entry(ref.name, target)
        assert model is not None
        return model

    def remove(self, ref: Ref) -> list[StoredModel]:
        """Delete NAME (every type) or NAME:TYPE; returns what was removed. Symlinks are unlinked,
        never followed."""
        folder = self.folder(ref.name)
        for path in folder.glob("*.gguf"):
            self._inside(path)  # a planted symlink out of the store: refuse rather than guess
        gone = [m for m in self.named(ref.name) if ref.qtype is None or m.qtype == ref.qtype]
        for model in gone:
            model.path.unlink()
            model.path.with_suffix(".json").unlink(missing_ok=True)
        if gone and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return gone


def _read_manifest(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, object]) -> None:
    durable.write_bytes(path, json.dumps(data, ensure_ascii=False, indent=2).encode())


def chat_template_for(path: str | os.PathLike[str]) -> str | None:
    """The registry's chat template recorded at pull time, for a store file whose GGUF carries none
    (TheBloke's Llama-2 files, Qwen v1 conversions); None for any file outside the store."""
    path = Path(path)
    try:
        inside = Store().root.resolve() in path.resolve().parents
    except OSError:
        return None
    value = _read_manifest(path.with_suffix(".json")).get("chat_template") if inside else None
    return value if isinstance(value, str) else None
