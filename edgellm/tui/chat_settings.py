"""A chat's parameters: how it samples and how its model is loaded, stored as JSON with the chat."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from edgellm.runtime.engine import LoadOptions, SamplingParams


@dataclass(frozen=True)
class ChatSettings:
    temperature: float = SamplingParams.temperature
    top_k: int = SamplingParams.top_k
    top_p: float = SamplingParams.top_p
    min_p: float = SamplingParams.min_p
    repeat_penalty: float = SamplingParams.repeat_penalty
    max_tokens: int = SamplingParams.max_tokens
    seed: int | None = SamplingParams.seed  # `chat --seed N`: every answer repeatable; None: random
    draft: int = SamplingParams.draft  # `chat --draft auto|off|N` (edgellm.runtime.lookup)
    n_ctx: int | None = None  # None: the model's own, capped by the engine
    n_threads: int | None = None  # None: physical cores
    n_gpu_layers: int = 0  # -1: all

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ChatSettings:
        """Known keys only: a chat saved by another version still opens."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, args: argparse.Namespace, options: LoadOptions) -> ChatSettings:
        """The command line's --temperature, --ctx, ... as the settings of new chats (``options``:
        the load options made from it, with `--gpu-layers auto` already worked out)."""
        sampling = {name: getattr(args, name) for name in _SAMPLING}
        return cls(**sampling, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=options.n_gpu_layers)

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def sampling(self) -> SamplingParams:
        return SamplingParams(**{name: getattr(self, name) for name in _SAMPLING})

    def load_options(self, base: LoadOptions) -> LoadOptions:
        """``base`` (mmap, flash attention, ... from the command line) with this chat's sizes."""
        return dataclasses.replace(base, n_ctx=self.n_ctx, n_threads=self.n_threads, n_gpu_layers=self.n_gpu_layers)

    def reserve(self, n_ctx: int) -> int:
        """Tokens kept free for the answer when old turns are dropped to fit the context."""
        wanted = self.max_tokens if self.max_tokens > 0 else 256
        return min(wanted, n_ctx // 2)


# The sampling parameters a chat keeps (SamplingParams' fields it has).
_SAMPLING = tuple(f.name for f in dataclasses.fields(ChatSettings) if hasattr(SamplingParams, f.name))
