"""What can go wrong while converting, as one-line errors the CLI prints without a traceback."""

from __future__ import annotations

from edgellm.errors import EdgeLLMError


class ConvertError(EdgeLLMError):
    """A checkpoint that cannot be converted; the message names the file and the fix."""


class ImatrixError(ConvertError):
    """Activations an importance matrix cannot use (non-finite values, inconsistent shapes), or a
    llama.cpp whose tensors edgellm cannot read."""


class ConfigError(ConvertError):
    """config.json is missing, unreadable or contradicts itself."""


class UnsupportedModel(ConvertError):
    """An architecture, tensor or dtype this pipeline does not handle."""


class CheckpointError(ConvertError):
    """Weight files that are missing, truncated, corrupt or contradict the config."""


class UnsafeCheckpoint(CheckpointError):
    """A pickle that asks for anything other than rebuilding tensors."""


class VocabMismatch(ConvertError):
    """Tokenizer files that do not fit the weights, or no tokenizer at all."""


class OutputError(ConvertError):
    """The output exists, the disk is too small, or llama.cpp refused to quantize."""
