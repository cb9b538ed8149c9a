"""Users' text files (evaluation and calibration texts): every way reading one fails is one line
naming the file and the fix, through the commands that read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm import textfile
from edgellm.errors import EdgeLLMError
from edgellm.measure.evaluate import load_text
from quantize.imatrix import calibration


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "f.txt").write_text("x") and d / "f.txt" / "inside", r"cannot be read \(Not a directory\)"),
        (lambda d: (d / "b.txt").write_bytes(b"ok \xff\xfe") and d / "b.txt", "not UTF-8 text"),
    ],
)
def test_unreadable_texts_are_one_line(tmp_path: Path, make, says: str) -> None:  # noqa: ANN001
    path = make(tmp_path)
    for read in (load_text, calibration.load):
        with pytest.raises(EdgeLLMError, match=says) as err:
            read(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_text_read_as_llama_cpp_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"one\r\ntwo\r\n")
    assert load_text(str(crlf))[1] == "one\r\ntwo\r\n"  # no newline translation
    assert calibration.load(str(crlf)) == ("crlf.txt", "one\r\ntwo\r")  # llama-imatrix drops the last "\n"
    monkeypatch.setattr(textfile, "MAX_BYTES", 8)
    with pytest.raises(EdgeLLMError, match="larger than"):
        load_text(str(crlf))
