"""``general.*`` metadata and GGUF file names (the GGUF naming convention), via gguf's Metadata:
the model card, config.json's ``_name_or_path`` and the folder name give name, basename, size
label and finetune (``Llama-2-7B-Chat-Q4_K_M.gguf``); generation_config.json gives sampling
defaults; the family fills in what the folder does not say (licence)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import gguf

logging.getLogger("gguf.metadata").setLevel(logging.ERROR)


def model_metadata(folder: Path, n_params: int, defaults: Mapping[str, str]) -> gguf.Metadata:
    try:
        md = gguf.Metadata.load(None, folder, None, n_params)
    except (ValueError, TypeError, OSError, ImportError):  # an unparsable model card: use the folder name only
        md = gguf.Metadata.load(None, None, folder.name, n_params)
    if md.finetune and md.finetune.lower().endswith("hf"):  # "Llama-2-7b-chat-hf": -hf names the format
        md.finetune = md.finetune[:-2].rstrip("-_") or None
    if md.name and md.name.endswith(" Hf"):
        md.name = md.name[:-3]
    if md.name is None:
        md.name = gguf.Metadata.id_to_title(folder.name)
    if md.size_label is None:
        md.size_label = gguf.size_label(n_params, 0, 0, 0)
    if md.license is None and "license" in defaults:
        md.license = defaults["license"]
    return md


def file_name(md: gguf.Metadata, type_name: str) -> str:
    """``{basename}-{size}-{finetune}-{version}-{TYPE}.gguf``."""
    return gguf.naming_convention(md.name, md.basename, md.finetune, md.version, md.size_label, type_name) + ".gguf"


def gguf_file_name(metadata: Mapping[str, object], fallback: str, type_name: str) -> str:
    """The name for a re-quantized GGUF, from the general.* keys it carries."""

    def text(key: str) -> str | None:
        value = metadata.get(f"general.{key}")
        return value if isinstance(value, str) and value else None

    name = text("name") or fallback
    return gguf.naming_convention(name, text("basename"), text("finetune"), text("version"), text("size_label"),
                                  type_name) + ".gguf"  # fmt: skip
