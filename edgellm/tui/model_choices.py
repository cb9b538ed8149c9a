"""What the model picker offers: the default model, every model in the local store, and the
registry's models not pulled yet, each with its size and the planner's fits / does not fit."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.models import registry
from edgellm.models.default_model import default_model_path
from edgellm.models.gguf_file import inspect
from edgellm.models.identity import model_label
from edgellm.models.resolve import resolve_model
from edgellm.models.store import Store
from edgellm.runtime import planner
from edgellm.runtime.hardware import Machine, probe
from edgellm.units import human_bytes


@dataclass(frozen=True)
class ModelChoice:
    ref: str  # what a chat stores and `resolve_model` understands
    name: str
    file_type: str
    size: int  # bytes on disk, or the planner's estimate of the file for a model not pulled
    fits: bool | None  # None: cannot tell
    note: str = ""
    local: bool = True  # False: in the registry only; `edgellm pull` it first
    memory: int = 0  # the planner's RAM + VRAM need at this chat's context; 0: unknown

    @property
    def fits_label(self) -> str:
        verdict = {True: "fits", False: "too big", None: "?"}[self.fits]
        return f"{human_bytes(self.memory)}, {verdict}" if self.memory else verdict


def _local(ref: str, path: Path, n_ctx: int | None, gpu_layers: int, machine: Machine) -> ModelChoice:
    try:
        info = inspect(path)
        _geom, _weights, est = planner.for_file(path, n_ctx, gpu_layers=gpu_layers)
    except (EdgeLLMError, OSError) as err:
        return ModelChoice(ref, path.name, "?", path.stat().st_size if path.exists() else 0, None, str(err))
    verdict = planner.verdict(est, machine)
    note = "" if verdict else f"{human_bytes(verdict.ram_available)} of RAM free"
    return ModelChoice(ref, model_label(ref), info.file_type, info.file_size, verdict.fits, note,
                       memory=verdict.ram_needed + verdict.vram_needed)  # fmt: skip


def _remote(entry: registry.ModelEntry, n_ctx: int | None, gpu_layers: int, machine: Machine) -> ModelChoice:
    qtype = entry.recommended
    ref = f"{entry.name}:{qtype}"
    try:
        est = planner.for_entry(entry, qtype, n_ctx, gpu_layers=gpu_layers)
    except EdgeLLMError:
        return ModelChoice(ref, entry.name, qtype, 0, None, f"edgellm pull {ref}", local=False)
    verdict = planner.verdict(est, machine)
    return ModelChoice(ref, entry.name, qtype, est.weights, verdict.fits, f"edgellm pull {ref}", local=False,
                       memory=verdict.ram_needed + verdict.vram_needed)  # fmt: skip


def model_choices(n_ctx: int | None, gpu_layers: int, current: str) -> list[ModelChoice]:
    """Default model first, then the store's files, then ``current`` if it lives elsewhere, then the
    registry's models that are not pulled; sizes and fits for this chat's context and GPU layers."""
    machine = probe()
    local: list[tuple[str, Path]] = []
    with contextlib.suppress(EdgeLLMError):
        local.append(("default", default_model_path()))
    stored = Store().models()
    local += [(str(m.ref), m.path) for m in stored]
    if current not in {ref for ref, _ in local}:
        with contextlib.suppress(EdgeLLMError):
            local.append((current, resolve_model(current)))
    choices = [_local(ref, path, n_ctx, gpu_layers, machine) for ref, path in local]
    pulled = {m.name for m in stored}
    try:
        known = registry.load()
    except EdgeLLMError as err:  # a broken user models.toml must not hide the local models
        return [*choices, ModelChoice("", "registry unreadable", "", 0, None, str(err), local=False)]
    choices += [_remote(e, n_ctx, gpu_layers, machine) for e in known if e.name not in pulled]
    return choices
