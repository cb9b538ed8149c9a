"""The "read" step: a model folder → a Checkpoint (config + tensors read lazily), without torch.

A reader is a module in this package with ``open_checkpoint(folder) -> Checkpoint | None``
(None: "not my kind of folder"). `open_checkpoint` below tries the modules in ``SOURCES`` order, so
safetensors wins over pickled .bin when a folder has both. To add a reader (Meta consolidated
shards, a PEFT LoRA merged into a base) write the module and add its name to ``SOURCES``; its
tensors only need the small `TensorRef` protocol, so they may be computed (a merged delta) rather
than read. A reader whose Q/K rows are already in Meta's rotary layout sets
``hf_rope_layout=False`` and the llama family will not un-permute them."""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from quantize.errors import CheckpointError, ConfigError, ConvertError

SOURCES = ("safetensors", "torch_pickle", "meta", "lora")


@runtime_checkable
class TensorRef(Protocol):
    """One tensor of a checkpoint, readable a block of rows at a time."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling: "F32", "F16", "BF16", ... (only the first three convert)
    file: Path  # where it lives, for error messages

    @property
    def locator(self) -> tuple[str, int]:
        """(file, byte offset): tensors are streamed in this order, so reads are sequential."""

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the first axis, C-contiguous (bf16 as uint16); may be a read-only
        view of a mapped file, valid until `release` of those rows."""

    def release(self, start: int, stop: int) -> None:
        """Rows [start, stop) are written: a mapped reader drops their pages; others do nothing."""


@dataclass
class Checkpoint:
    """A model folder as the pipeline sees it: HF-style config and tensors under HF names."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef]
    weights_label: str  # the weight files, as messages name them
    config_path: Path = field(default=Path("config.json"))
    hf_rope_layout: bool = True
    tokenizer_folder: Path | None = None  # when not beside the weights (Meta's layout, a LoRA's own)

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None

    def json(self, name: str) -> dict[str, Any]:
        """An optional JSON file of the folder ({} when absent); a broken one is an error."""
        path = self.file(name)
        return read_json(path) if path else {}


# Side files (config, index, tokenizer) are read whole and parsed in Python, where a hostile one
# costs ~20x its size in objects. The largest real ones: tokenizer.json 33 MB (Gemma-3), the rest
# a few MB at most; anything past this cap is not a real file, and 20x of it fits in 4 GB.
MAX_SIDE_FILE = 64 << 20


def read_capped(path: Path, error: type[ConvertError] = ConfigError, limit: int = MAX_SIDE_FILE) -> bytes:
    """The bytes of ``path``; larger than ``limit`` is an ``error`` before anything is read (and a
    file that grows while it is read, or is a device, still yields at most ``limit`` bytes)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(limit + 1) if size <= limit else b""
    except OSError as err:
        raise error(f"{path}: cannot read it ({err.strerror})") from None
    if size > limit or len(data) > limit:
        raise error(
            f"{path}: {max(size, len(data)):,} bytes, far more than any real {path.name} "
            f"(the limit is {limit:,}); it is not a model's file: re-download it"
        )
    return data


def read_json(path: Path, error: type[ConvertError] = ConfigError) -> dict[str, Any]:
    """A JSON object file, size-capped before it is parsed; anything else is an ``error``."""
    data = read_capped(path, error)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise error(f"{path}: not valid JSON ({str(err)[:200] or 'nested too deeply'}); re-download it") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value


def load_config(folder: Path) -> tuple[dict[str, Any], Path]:
    """config.json of an HF model folder (required: it says what the model is)."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{folder}: no config.json, so this is not a Hugging Face model folder "
            "(download the whole repository, config.json and tokenizer files included)"
        )
    return read_json(path), path


def open_checkpoint(folder: str | Path) -> Checkpoint:
    """The checkpoint in ``folder``, from the first reader in ``SOURCES`` that recognises it."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (give the model folder with config.json and weights)")
    for name in SOURCES:
        ckpt = importlib.import_module(f"{__name__}.{name}").open_checkpoint(folder)
        if ckpt is not None:
            return ckpt
    raise CheckpointError(
        f"{folder}: no weights found (expected *.safetensors or pytorch_model*.bin, with their index if sharded)"
    )


def require(config: Mapping[str, object], key: str, path: object, kind: type = int) -> object:
    """A config.json value that must be present and of ``kind`` (int: a positive integer; float: a
    positive finite number), else a ConfigError naming it."""
    value = config.get(key)
    if value is None:
        raise ConfigError(f"{path}: missing '{key}'")
    if kind is int and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    if kind is float and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                              and math.isfinite(value) and value > 0):  # fmt: skip
        raise ConfigError(f"{path}: '{key}' must be a positive number, got {value!r}")
    return value


def optional(config: Mapping[str, object], key: str, path: object, default: object, kind: type = int) -> object:
    """Like `require`, but ``default`` when the key is absent or null (a present 0, -1 or "8" is an error)."""
    return default if config.get(key) is None else require(config, key, path, kind)
