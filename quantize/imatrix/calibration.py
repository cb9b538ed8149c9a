"""Calibration text for importance matrices: the bundled English, Chinese and code, or a file.

The bundled texts (edgellm/data/calibration_*.txt, sources in edgellm/data/README.md) share no
passage with `edgellm eval`'s texts, so a matrix is never scored on what it was computed from.
Mixed, their paragraphs are interleaved in blocks in proportion to each text's length, so that any
number of leading chunks (`--chunks N`) holds the same mix as the whole."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.textfile import read_utf8

BUNDLED = {"en": "calibration_en.txt", "zh": "calibration_zh.txt", "code": "calibration_code.txt"}
DEFAULT = "bundled"


BLOCK_BYTES = 2000  # interleaving unit: about one 512-token chunk of prose, whole paragraphs


def _blocks(text: str) -> list[str]:
    """Runs of whole paragraphs of at least BLOCK_BYTES (UTF-8), so that code stays in pieces
    longer than a function and a chunk mostly holds one language."""
    blocks, current = [], ""
    for paragraph in (p for p in text.split("\n\n") if p.strip()):
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current.encode()) >= BLOCK_BYTES:
            blocks.append(current)
            current = ""
    return [*blocks, current] if current else blocks


def interleave(texts: list[str]) -> str:
    """Blocks of all ``texts`` merged by their relative position in their own text."""
    keyed = []
    for rank, text in enumerate(texts):
        total, seen = max(len(text), 1), 0
        for block in _blocks(text):
            keyed.append((seen / total, rank, block))
            seen += len(block) + 2
    return "\n\n".join(block for _, _, block in sorted(keyed))


def load(spec: str | None = None) -> tuple[str, str]:
    """(name, text) for `bundled` (all three), `bundled:en,zh,code` (a choice) or a UTF-8 file;
    the name is what the matrix records as its dataset (a file's name, not its folder)."""
    spec = spec or DEFAULT
    if spec == DEFAULT or spec.startswith(DEFAULT + ":"):
        names = (spec.partition(":")[2] or ",".join(BUNDLED)).split(",")
        unknown = [n for n in names if n not in BUNDLED]
        if unknown:
            raise EdgeLLMError(f"no bundled calibration text '{unknown[0]}': use bundled or bundled:"
                               f"{','.join(BUNDLED)} (any of them)")  # fmt: skip
        data = resources.files("edgellm") / "data"
        return spec, interleave([(data / BUNDLED[n]).read_text(encoding="utf-8") for n in names])
    path = Path(spec).expanduser()
    text = read_utf8(path, "--calibration bundled")  # bytes as llama-imatrix reads them (no newline translation)
    return path.name, text.removesuffix("\n")  # llama-imatrix drops the file's last newline
