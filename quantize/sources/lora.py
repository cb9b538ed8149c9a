"""PEFT LoRA adapters (``adapter_config.json`` + ``adapter_model.safetensors`` or ``.bin``), and a
base checkpoint with adapters merged into it as it streams.

A merged tensor is computed a row block at a time: base rows in float32, plus
``(B @ A)[rows] * scale`` for each adapter in order (``scale = alpha / r``, ``alpha / sqrt(r)`` with
rsLoRA, per-module ``alpha_pattern``/``rank_pattern`` honoured; ``(B @ A).T`` for fan_in_fan_out
layers and embeddings). Merging happens in HF space, before the family's transforms, so llama's
Q/K un-permutation applies to the merged weight exactly as to a plain one. ``modules_to_save``
tensors (``embed_tokens``, ``lm_head``: Chinese-LLaMA-2's 55,296-row vocabulary) replace the base's,
and the adapter's own tokenizer replaces the base's."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import gguf
import numpy as np

from quantize.errors import CheckpointError, ConfigError, ConvertError, UnsupportedModel, VocabMismatch
from quantize.sources import Checkpoint, TensorRef, read_json
from quantize.sources.safetensors import read_header
from quantize.sources.torch_pickle import read_archive
from quantize.tensors import SOURCE_DTYPES, RowTransform, convert_rows

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?:(?P<ab>[AB])(?:\.\w+)?\.weight|embedding_(?P<emb>[AB])(?:\.\w+)?)")
_SAVED_KEY = re.compile(r"(?P<module>.+?)(?:\.modules_to_save(?:\.\w+)?)?\.(?P<param>weight|bias)")


def f32(ref: TensorRef, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) of ``ref`` as float32 (bf16 widened exactly)."""
    stop = ref.shape[0] if stop is None else stop
    return np.asarray(convert_rows(ref.read_rows(start, stop), ref.dtype, gguf.GGMLQuantizationType.F32))


@dataclass(frozen=True)
class LoraPair:
    """One adapted weight: delta = (B @ A) * scale, transposed for embeddings and fan_in_fan_out
    (Conv1D) layers, whose weights are stored (in, out)."""

    module: str  # the HF module, e.g. model.layers.0.self_attn.q_proj
    a: TensorRef  # (r, in) — (r, rows) when transposed
    b: TensorRef  # (out, r) — (columns, r) when transposed
    scale: float
    embedding: bool = False
    fan_in_fan_out: bool = False
    b_transform: RowTransform | None = None  # the base's row order, applied to B (Q/K of a Meta base)

    @property
    def transposed(self) -> bool:
        return self.embedding or self.fan_in_fan_out

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.b.shape[0], self.a.shape[1]
        return (cols, rows) if self.transposed else (rows, cols)

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) in float32, B in the base's row order."""
        b = f32(self.b)
        return f32(self.a), self.b_transform.apply(b) if self.b_transform else b

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the delta, float32."""
        a, b = self.matrices()
        block = a[:, start:stop].T @ b.T if self.transposed else b[start:stop] @ a
        block *= np.float32(self.scale)
        return block


@dataclass
class DerivedTensor:
    """Rows computed in float32 from ``base``'s, a block at a time; where they are read from (file,
    locator, release) is ``base``'s."""

    name: str
    base: TensorRef
    dtype: ClassVar[str] = "F32"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    @property
    def file(self) -> Path:
        return self.base.file

    @property
    def locator(self) -> tuple[str, int]:
        return self.base.locator

    def release(self, start: int, stop: int) -> None:
        self.base.release(start, stop)


@dataclass
class MergedTensor(DerivedTensor):
    """A base tensor plus LoRA deltas."""

    deltas: tuple[LoraPair, ...] = ()

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        rows = f32(self.base, start, stop)
        if not rows.flags.owndata:  # a view of the mapped file (an F32 base): never write into it
            rows = rows.copy()
        for delta in self.deltas:
            rows += delta.rows(start, stop)
        return rows


@dataclass
class ScaledTensor(DerivedTensor):
    """``base`` times ``factor``: a LoRA B with a per-tensor scale folded in."""

    factor: float = 1.0

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return f32(self.base, start, stop) * np.float32(self.factor)


@dataclass
class Adapter:
    """A PEFT LoRA adapter folder, read and checked."""

    folder: Path
    config: dict[str, Any]
    weights: Path
    pairs: dict[str, LoraPair]  # base tensor name → delta
    replacements: dict[str, TensorRef]  # base tensor name → full tensor (modules_to_save)

    @property
    def tokenizer_folder(self) -> Path | None:
        return self.folder if any((self.folder / f).is_file() for f in TOKENIZER_FILES) else None


def is_adapter(folder: Path) -> bool:
    return (folder / CONFIG).is_file()


def open_checkpoint(folder: Path) -> Checkpoint | None:
    """An adapter is not a model: say what to do with it instead of "no weights found"."""
    if not is_adapter(folder):
        return None
    raise ConvertError(
        f"{folder}: a PEFT LoRA adapter, not a model: merge it into its base model with "
        f"`edgellm quantize BASE --lora {folder}`, or write a runtime adapter with "
        f"`edgellm quantize {folder} --lora-only`"
    )


def _pattern_value(patterns: dict[str, Any], module: str) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the module name or a dotted suffix."""
    for key, value in patterns.items():
        if key == module or re.fullmatch(rf"(.*\.)?(?:{key})", module):
            return value
    return None


def scale_for(config: dict[str, Any], module: str, rank: int) -> float:
    """alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT's LoraLayer.update_layer)."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module)
    alpha = config.get("lora_alpha", 8) if alpha is None else alpha
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _check_config(config: dict[str, Any], path: Path) -> None:
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise UnsupportedModel(f"{path}: a {kind} adapter; only LoRA adapters can be merged or converted")
    refused = {
        "use_dora": "DoRA adapters",
        "layer_replication": "adapters with layer_replication",
        "lora_bias": "adapters with LoRA biases",
        "target_parameters": "adapters on bare parameters (target_parameters)",
    }
    for key, what in refused.items():
        if config.get(key):
            raise UnsupportedModel(
                f"{path}: {what} are not supported; merge it with peft's merge_and_unload() and convert the result"
            )
    _check_values(config, path)


def _check_values(config: dict[str, Any], path: Path) -> None:
    """Ranks positive integers, alphas finite numbers, target_modules not empty: PEFT's own types."""
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    for key, value in (("rank_pattern", ranks), ("alpha_pattern", alphas)):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be an object (module pattern -> value), got {value!r}")
    for key, value in {"r": config.get("r"), **{f"rank_pattern['{k}']": v for k, v in ranks.items()}}.items():
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ConfigError(f"{path}: {key} (the LoRA rank) must be a positive integer, got {value!r}")
    alpha_values = {"lora_alpha": config.get("lora_alpha"), **{f"alpha_pattern['{k}']": v for k, v in alphas.items()}}
    for key, value in alpha_values.items():
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value)):  # fmt: skip
            raise ConfigError(f"{path}: {key} must be a finite number, got {value!r}")
    targets = config.get("target_modules")
    names = isinstance(targets, list) and all(isinstance(t, str) for t in targets)
    if targets is not None and not (isinstance(targets, str) or names):
        raise ConfigError(f"{path}: 'target_modules' must be a name, a regex or a list of names, got {targets!r}")
    if targets is not None and not targets:
        raise ConfigError(f"{path}: 'target_modules' is empty, so the adapter adapts nothing; re-download it")


def _tensors(weights: Path) -> dict[str, TensorRef]:
    if weights.suffix == ".safetensors":
        return {t.name: t for t in read_header(weights)}
    return read_archive(weights)


def read_adapter(folder: str | Path) -> Adapter:
    """The adapter in ``folder``: its config, every LoRA pair with its scale, every saved module."""
    folder = Path(folder).expanduser()
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG}, so not a PEFT adapter folder (download the whole adapter)")
    config = read_json(path)
    _check_config(config, path)
    weights = next((folder / w for w in WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHTS)}; download the adapter's weights")
    halves: dict[str, dict[str, TensorRef]] = {}
    embeddings: set[str] = set()
    replacements: dict[str, TensorRef] = {}
    for key, ref in _tensors(weights).items():
        name = key.removeprefix(_PREFIX)
        if ref.dtype not in SOURCE_DTYPES:
            raise UnsupportedModel(f"{weights}: tensor '{key}' is {ref.dtype}; only F32, F16 and BF16 adapters merge")
        if ".original_module." in name:  # peft >= 0.13 also saves the base's copy of a saved module
            continue
        if "lora_magnitude_vector" in name:
            _check_config({"use_dora": True}, path)
        m = _LORA_KEY.fullmatch(name)
        if m:
            halves.setdefault(m["module"], {})[m["ab"] or m["emb"]] = ref
            if m["emb"]:
                embeddings.add(m["module"])
            continue
        saved = _SAVED_KEY.fullmatch(name)
        if saved is None or ".lora_" in name:
            raise UnsupportedModel(f"{weights}: tensor '{key}' is neither a LoRA matrix nor a saved module")
        replacements[f"{saved['module']}.{saved['param']}"] = ref
    pairs = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{weights}: '{module}' has lora_{''.join(ab)} but not its partner; re-download it")
        a, b = ab["A"], ab["B"]
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(
                f"{weights}: '{module}' has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which do not multiply"
            )
        declared = _pattern_value(config.get("rank_pattern") or {}, module) or config.get("r")
        if a.shape[0] == 0 or (declared is not None and a.shape[0] != declared):
            raise CheckpointError(
                f"{weights}: '{module}' has rank-{a.shape[0]} LoRA matrices but {CONFIG} says r={declared}; "
                "the weights and the config belong to different adapters"
            )
        pairs[f"{module}.weight"] = LoraPair(module, a, b, scale_for(config, module, a.shape[0]),
                                             embedding=module in embeddings,
                                             fan_in_fan_out=bool(config.get("fan_in_fan_out")))  # fmt: skip
    if not pairs and not replacements:
        raise CheckpointError(f"{weights}: holds no LoRA weights")
    return Adapter(folder, config, weights, pairs, replacements)


def _wrong_base(adapter: Adapter, what: str, base: Checkpoint) -> CheckpointError:
    return CheckpointError(
        f"{adapter.weights}: {what}, so the adapter was trained for another base model than {base.folder} "
        f"(it names '{adapter.config.get('base_model_name_or_path') or 'no base'}')"
    )


class BaseView(Protocol):
    """What merging needs to know of the base's family: quantize.families.adapters.FamilyView, handed
    in by the caller (families build on sources, not the other way round)."""

    def find(self, tensors: dict[str, TensorRef], kind: gguf.MODEL_TENSOR) -> TensorRef | None: ...

    def fit(self, pair: LoraPair, name: str) -> LoraPair: ...


def merge_adapters(base: Checkpoint, folders: list[str | Path], view: BaseView) -> Checkpoint:
    """``base`` with each adapter of ``folders`` merged in order; checked, nothing computed yet."""
    tensors = dict(base.tensors)
    embedding = view.find(tensors, gguf.MODEL_TENSOR.TOKEN_EMBD)
    base_rows = embedding.shape[0] if embedding is not None else None
    tokenizer: Path | None = None
    names = []
    for folder in folders:
        adapter = read_adapter(folder)
        names.append(adapter.folder.name)
        for name, ref in adapter.replacements.items():
            if name not in tensors:
                raise _wrong_base(adapter, f"it saves '{name}' but the base has no such tensor", base)
            if ref.shape[1:] != tensors[name].shape[1:]:
                shapes = f"{list(ref.shape)}, the base's {list(tensors[name].shape)}"
                raise _wrong_base(adapter, f"its '{name}' is {shapes}", base)
            tensors[name] = ref
        for name, pair in adapter.pairs.items():
            target = tensors.get(name)
            if target is None:
                raise _wrong_base(adapter, f"it adapts '{pair.module}' but the base has no '{name}'", base)
            pair = view.fit(pair, name)
            if pair.shape != tuple(target.shape):
                shapes = f"{list(pair.shape)} but the base tensor {list(target.shape)}"
                raise _wrong_base(adapter, f"its delta for '{name}' is {shapes}", base)
            if isinstance(target, MergedTensor):
                tensors[name] = dataclasses.replace(target, deltas=(*target.deltas, pair))
            else:
                tensors[name] = MergedTensor(name, target, (pair,))
        tokenizer = adapter.tokenizer_folder or tokenizer
    config = dict(base.config)
    embedding, head = view.find(tensors, gguf.MODEL_TENSOR.TOKEN_EMBD), view.find(tensors, gguf.MODEL_TENSOR.OUTPUT)
    rows = embedding.shape[0] if embedding is not None else None
    if rows is not None and head is not None and head.shape[0] != rows:
        raise CheckpointError(
            f"{folders[-1]}: the merged model has {rows} embedding rows but {head.shape[0]} lm_head rows; "
            "an adapter resized one without the other"
        )
    if rows is not None and rows != base_rows:
        if tokenizer is None:
            raise VocabMismatch(
                f"{folders[-1]}: the adapter resizes the vocabulary from {base_rows} to {rows} tokens but ships no "
                "tokenizer (tokenizer.model); copy the tokenizer it was trained with into the adapter folder"
            )
        config["vocab_size"] = rows
    config["_name_or_path"] = " + ".join([str(config.get("_name_or_path") or base.folder.name), *names])
    label = f"{base.weights_label} + LoRA {', '.join(str(Path(f)) for f in folders)}"
    return dataclasses.replace(
        base, config=config, tensors=tensors, weights_label=label, tokenizer_folder=tokenizer or base.tokenizer_folder
    )
