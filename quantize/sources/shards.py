"""Which files hold the weights: the shard index when there is one, else the files themselves."""

from __future__ import annotations

from pathlib import Path

from quantize.errors import CheckpointError
from quantize.sources import read_json


def weight_files(folder: Path, index_name: str, patterns: tuple[str, ...]) -> tuple[list[Path], dict[str, str]]:
    """(files, weight_map): from ``index_name`` if present (every listed shard must exist), else
    every file matching ``patterns``; the weight map is empty without an index."""
    index = folder / index_name
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map; re-download it")
        files = sorted({folder / str(f) for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index}: lists {f.name} but it is not in {folder}; download the missing shard")
        return files, {str(k): str(v) for k, v in weight_map.items()}
    found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    return found, {}


def check_index(index_name: str, folder: Path, weight_map: dict[str, str], where: dict[str, Path]) -> None:
    """Every tensor the index lists is in the shard it names."""
    for name, shard in weight_map.items():
        found = where.get(name)
        if found is None:
            raise CheckpointError(
                f"{folder / shard}: tensor '{name}' listed in {index_name} is missing; re-download it"
            )


def label(files: list[Path]) -> str:
    """How messages name the weights: one file, or the first shard and a count."""
    if len(files) == 1:
        return str(files[0])
    return f"{files[0]} (+{len(files) - 1} more shards)"
