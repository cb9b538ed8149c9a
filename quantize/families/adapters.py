"""The base model's family as LoRA adapters see it: GGUF tensor names, the base's hyperparameters
and the row transforms a family applies (llama's Q/K un-permutation), for merging adapters into a
checkpoint (quantize.sources.lora) and for converting them to GGUF LoRA files
(quantize.lora_adapter)."""

from __future__ import annotations

import dataclasses

import gguf

from quantize.errors import UnsupportedModel
from quantize.families import find_family
from quantize.sources import Checkpoint, TensorRef
from quantize.sources.lora import LoraPair
from quantize.tensors import RowTransform


class FamilyView:
    """The base model's family as the adapters see it: GGUF names and HF-layout row transforms.
    ``family`` is None for models no family claims (merging still works in HF space)."""

    def __init__(self, base: Checkpoint) -> None:
        self.base = base
        try:
            self.family = find_family(base.config, base.config_path)
        except UnsupportedModel:
            self.family = None
            return
        self.hp = self.family.hparams(base)
        self.names = gguf.get_tensor_name_map(self.family.gguf_arch, self.hp.n_layer)

    def kind_and_name(self, name: str) -> tuple[gguf.MODEL_TENSOR, str] | None:
        return self.names.get_type_and_name(name, (".weight", ".bias")) if self.family else None

    def hf_row_transform(self, name: str) -> RowTransform | None:
        """What the family does to the rows of an HF-layout tensor ``name`` (llama: Q/K un-permutation)."""
        found = self.kind_and_name(name)
        if found is None:
            return None
        return self.family.transform_for(found[0], self.hp, dataclasses.replace(self.base, hf_rope_layout=True))

    def delta_transform(self, name: str) -> RowTransform | None:
        """Turns an HF-layout delta into the base's own row order: only a base already in llama.cpp's
        layout (a Meta checkpoint) needs it."""
        return None if self.base.hf_rope_layout else self.hf_row_transform(name)

    def find(self, tensors: dict[str, TensorRef], kind: gguf.MODEL_TENSOR) -> TensorRef | None:
        """The tensor of this kind (the embedding, the output matrix), under whatever HF name."""
        return next((ref for name, ref in tensors.items() if (self.kind_and_name(name) or (None,))[0] == kind), None)

    def fit(self, pair: LoraPair, name: str) -> LoraPair:
        """``pair`` as PEFT applies it to this base: fan_in_fan_out only on Conv1D weights, which no
        family here has (peft resets it to False for nn.Linear), and B in the base's row order."""
        fan_in_fan_out = pair.fan_in_fan_out and self.family is None
        return dataclasses.replace(pair, fan_in_fan_out=fan_in_fan_out, b_transform=self.delta_transform(name))
