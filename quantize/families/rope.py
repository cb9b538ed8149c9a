"""RoPE settings from config.json, in both spellings transformers has used: the 2023 one
(``rope_theta`` + ``rope_scaling: {type, factor}``) and the current one (``rope_parameters``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from quantize.errors import ConfigError, UnsupportedModel
from quantize.families import RopeScaling
from quantize.sources import require

SUPPORTED_SCALING = ("linear", "yarn")


def rope_theta(config: dict[str, Any], path: object = "config.json", default: float = 10000.0) -> float:
    params = config.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: 'rope_parameters' must be an object, got {params!r}")
    return float(require({"rope_theta": config.get("rope_theta", params.get("rope_theta", default))}, "rope_theta",
                         path, float))  # fmt: skip


def rope_scaling(config: dict[str, Any], path: Path) -> RopeScaling | None:
    """linear (the 16K long-context variants) or yarn (64K); None for plain RoPE."""
    spec = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: 'rope_scaling' must be an object, got {spec!r}")
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind in (None, "default"):
        return None
    if kind not in SUPPORTED_SCALING:
        raise UnsupportedModel(
            f"{path}: rope scaling '{kind}' is not supported by llama.cpp's llama; "
            f"supported: {', '.join(SUPPORTED_SCALING)}"
        )
    factor = spec.get("factor")
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and math.isfinite(factor) and factor > 0):
        raise ConfigError(f"{path}: rope scaling '{kind}' needs a positive 'factor', got {factor!r}")
    if kind == "linear":
        return RopeScaling("linear", float(factor))

    def number(key: str) -> float | None:
        value = spec.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    original = spec.get("original_max_position_embeddings", config.get("max_position_embeddings"))
    finetuned = spec.get("finetuned")
    return RopeScaling(
        "yarn",
        float(factor),
        original_context=int(original) if isinstance(original, int) else None,
        finetuned=finetuned if isinstance(finetuned, bool) else None,
        beta_fast=number("beta_fast"),
        beta_slow=number("beta_slow"),
        attention_factor=number("attention_factor"),
    )
