"""`edgellm quantize ADAPTER --lora-only`: a PEFT LoRA adapter as a GGUF LoRA adapter, which llama.cpp
adds at load time (`edgellm run MODEL --lora FILE`) instead of merging it into a new model file.

llama.cpp pairs ``<tensor>.lora_a`` (r × in, PEFT's lora_A as stored) with ``<tensor>.lora_b``
(out × r, lora_B) and scales by ``adapter.lora.alpha / r``. The base GGUF's rows are in llama.cpp's
order, so B's rows get the family's transform (llama's Q/K un-permutation) exactly as the base
weight did; A's columns are untouched. Per-tensor scales that one alpha cannot express (rsLoRA,
rank_pattern, alpha_pattern) are folded into B. The base model's config.json is needed for the
architecture and head counts: ``--base``, else the adapter's ``base_model_name_or_path`` as a local
folder or in the Hugging Face cache."""

from __future__ import annotations

from collections import Counter
from math import prod
from pathlib import Path

import gguf

from quantize.errors import CheckpointError, ConfigError, UnsupportedModel
from quantize.families import find_family
from quantize.families.adapters import FamilyView
from quantize.progress import Progress
from quantize.sources import Checkpoint, load_config, open_checkpoint
from quantize.sources.lora import Adapter, LoraPair, ScaledTensor, read_adapter
from quantize.tensors import FLOAT_TYPES, TensorPlan
from quantize.writer import atomic_output, write_gguf


def merge_command(adapter: Adapter) -> str:
    base = adapter.config.get("base_model_name_or_path") or "BASE_MODEL_FOLDER"
    return f"edgellm quantize {base} --lora {adapter.folder}"


def _refuse_embedding_changes(adapter: Adapter) -> None:
    """llama.cpp adds low-rank deltas at run time; it cannot swap in a resized vocabulary."""
    saved = sorted(adapter.replacements)
    embedding = [p.module for p in adapter.pairs.values() if p.embedding]
    if saved or embedding:
        what = f"replaces {', '.join(saved)} (modules_to_save)" if saved else f"adapts {', '.join(embedding)}"
        raise UnsupportedModel(
            f"{adapter.folder}: the adapter {what}, which changes the embeddings, so it cannot be applied at run "
            f"time; merge it into the base model instead: `{merge_command(adapter)}`"
        )


def base_folder(adapter: Adapter, base: str | Path | None) -> Path:
    """Where the base model is: ``base`` (an HF or Meta folder), else the adapter's
    base_model_name_or_path as a folder or as a repository already in the Hugging Face cache (its
    config.json; nothing is downloaded)."""
    if base is not None:
        return Path(base).expanduser()
    named = str(adapter.config.get("base_model_name_or_path") or "")
    if named and (Path(named).expanduser() / "config.json").is_file():
        return Path(named).expanduser()
    if named.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(named, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent
    raise ConfigError(
        f"{adapter.folder}: cannot find the base model's config.json (the adapter names "
        f"'{named or 'no base model'}'); pass --base BASE_MODEL_FOLDER"
    )


def base_checkpoint(folder: Path) -> Checkpoint:
    """The base's hyperparameters: config.json alone for an HF folder (no weights needed); a Meta
    folder's params.json and tensor shapes otherwise."""
    if (folder / "config.json").is_file():
        config, config_path = load_config(folder)
        return Checkpoint(folder, config, {}, str(folder), config_path)
    return open_checkpoint(folder)


def _alpha(pairs: list[LoraPair]) -> float:
    """The alpha that leaves most tensors unscaled: llama.cpp scales every tensor by alpha / its rank."""
    return Counter(p.scale * p.rank for p in pairs).most_common(1)[0][0]


def plan_adapter(adapter: Adapter, base: Checkpoint, outtype: str) -> tuple[list[TensorPlan], float]:
    """The adapter's tensors under GGUF names with llama.cpp's shapes and the base's row order, each
    checked against the base's hyperparameters (llama.cpp would only refuse it at load time)."""
    view = FamilyView(base)
    if view.family is None:
        find_family(base.config, base.config_path)  # raises: which families are supported
    shapes = view.family.expected_shapes(view.hp)
    pairs = sorted(adapter.pairs.items())
    alpha = _alpha([p for _, p in pairs])
    out = FLOAT_TYPES[outtype]
    plans = []
    for name, pair in pairs:
        pair = view.fit(pair, name)  # as PEFT applies it (fan_in_fan_out means nothing on Linear weights)
        found = view.kind_and_name(name)
        if found is None:
            raise UnsupportedModel(f"{adapter.weights}: '{pair.module}' is not a tensor of a {view.family.name} model")
        if pair.shape != tuple(shapes[found[0]]):
            raise CheckpointError(
                f"{adapter.weights}: its delta for '{name}' is {list(pair.shape)} but {base.config_path} implies "
                f"{list(shapes[found[0]])}: the adapter was trained for another base model"
            )
        factor = pair.scale * pair.rank / alpha
        b = pair.b if factor == 1 else ScaledTensor(pair.b.name, pair.b, factor)
        plans.append(TensorPlan(f"{found[1]}.lora_a", pair.a, out))
        plans.append(TensorPlan(f"{found[1]}.lora_b", b, out, view.hf_row_transform(name)))
    return plans, alpha


def default_output(adapter: Adapter, outtype: str) -> Path:
    """Beside the adapter, named by the GGUF convention (``{name}-F16-LoRA.gguf``)."""
    name = gguf.naming_convention(adapter.folder.name, None, None, None, None, outtype, "LoRA")
    return adapter.folder / f"{name}.gguf"


def write_lora_adapter(adapter_folder: str | Path, out: str | Path | None = None, *, base: str | Path | None = None,
                       outtype: str = "f16", force: bool = False, progress: bool = True) -> Path:  # fmt: skip
    """Write ``adapter_folder`` as a GGUF LoRA adapter (atomically); returns its path."""
    adapter = read_adapter(adapter_folder)
    _refuse_embedding_changes(adapter)
    if outtype not in FLOAT_TYPES:
        raise ConfigError(f"--lora-only writes f32, f16 or bf16 adapters, not {outtype}")
    ckpt = base_checkpoint(base_folder(adapter, base))
    plans, alpha = plan_adapter(adapter, ckpt, outtype)
    family = find_family(ckpt.config, ckpt.config_path)
    path = Path(out).expanduser() if out is not None else default_output(adapter, outtype)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_name(adapter.folder.name)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)

    total = sum(prod(p.shape) * p.source_itemsize for p in plans)
    with atomic_output(path, force) as temp, Progress(f"LoRA {outtype}", total, enabled=progress) as bar:
        write_gguf(temp, gguf.MODEL_ARCH_NAMES[family.gguf_arch], metadata, plans, bar)
    return path
