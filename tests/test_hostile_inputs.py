"""Issue 14, item 3: hostile inputs on the running side. GGUF files that pass every header check
and llama.cpp's load, then make llama.cpp abort or segfault at the first tokenization or decode
(vocabulary, tensor types): the runner process dies, the caller gets one line naming the file and
llama.cpp's last words, and the next turn starts a fresh runner. Chat templates that would render
for ever or without bound: one line, within the render budget. Each is also run through the CLI
in a child limited to 4 GB of address space."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgellm.errors import EdgeLLMError
from edgellm.models import chat_templates
from edgellm.models.gguf_header import read_header
from edgellm.runtime.client import RemoteEngine, RunnerDied
from edgellm.runtime.engine import LoadOptions
from tests import gguf_edit, limited
from tests.gguf_edit import T

Q = gguf.GGMLQuantizationType
PROMPT = "Grüße, 世界!"  # bytes outside the ASCII pieces of the vocabulary

# name -> (how to make it from the default model, what llama.cpp says as it dies)
CRASHERS = {
    # a SentencePiece vocabulary without its <0xXX> byte-fallback pieces: loads, then the first
    # character outside the vocabulary throws std::out_of_range from llama_tokenize
    "spm vocabulary without byte tokens": (
        lambda src, dst: gguf_edit.with_metadata(src, dst, {"tokenizer.ggml.model": (T.STRING, "llama")}),
        "unordered_map::at",
    ),
    # "no_vocab": llama.cpp loads the weights and asserts at the first tokenization
    "no vocabulary": (
        lambda src, dst: gguf_edit.with_metadata(src, dst, {"tokenizer.ggml.model": (T.STRING, "no_vocab")}),
        "Tokenizer not initialized",
    ),
    # a norm weight in f16: the type is valid, the CPU's binary ops abort at the first decode
    "f16 norm weight": (
        lambda src, dst: gguf_edit.with_tensor(src, dst, "output_norm.weight", lambda x: (x.astype(np.float16), Q.F16)),
        "unsupported types",
    ),
    # a matrix in i32 (same bytes as f32): loads, then the matrix multiply has no kernel: SIGSEGV
    "i32 weight matrix": (
        lambda src, dst: gguf_edit.with_tensor(src, dst, "blk.0.ffn_down.weight", lambda x: (x.view(np.int32), Q.I32)),
        "SIGSEGV",
    ),
}


@pytest.fixture(scope="module")
def crashers(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crashers")
    return {name: make(default_model, root / f"{i}.gguf") for i, (name, (make, _)) in enumerate(CRASHERS.items())}


RUNNER_CASES = list(CRASHERS)


@pytest.mark.parametrize("case", RUNNER_CASES)
def test_the_runner_dies_and_the_caller_does_not(crashers: dict[str, Path], case: str) -> None:
    path, words = crashers[case], CRASHERS[case][1]
    read_header(path)  # every header check passes
    try:
        engine = RemoteEngine(path, LoadOptions(n_ctx=256))
    except EdgeLLMError as err:  # the load-time probe decodes one token: a decode crash shows there
        assert str(path) in str(err) and words in str(err) and "\n" not in str(err)
        return
    with engine:
        for _ in range(2):  # the second turn starts a fresh runner, which dies the same way
            with pytest.raises(RunnerDied) as err:
                engine.chat([{"role": "user", "content": PROMPT}]).result()
            message = str(err.value)
            assert message.startswith(f"{path}: the model runner died") and words in message and "\n" not in message


@pytest.mark.parametrize("case", RUNNER_CASES)
def test_cli_under_a_4gb_limit(crashers: dict[str, Path], case: str) -> None:
    path, words = crashers[case], CRASHERS[case][1]
    limited.one_line_error(limited.cli("run", path, PROMPT, "--ctx", "256"), str(path), words)


HOSTILE_TEMPLATES = {
    "string times a huge number": "{{ 'x' * 10**10 }}",
    "a string doubled in a loop": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "nested loops that never end": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops over a long string": "{% set s = ' ' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}"
                                       "{% endfor %}",
    "endless output": "{% for a in range(100000) %}{% for b in range(100000) %}{{ messages }}{% endfor %}{% endfor %}",
    "a huge padding filter": "{{ 'a'|center(10000000000) }}",
    "a huge str method argument": "{{ 'a'.ljust(10000000000) }}",
    "a huge format width": "{{ '{:>10000000000}'.format(1) }}",
    "a huge percent width": "{{ '%10000000000d' % 1 }}",
    "replace that multiplies": "{{ ('a' * 100000).replace('', 'b' * 100000) }}",
    "join of a huge list": "{{ (['x' * 100000] * 100000)|join }}",
    "a huge integer": "{{ (10**4000) ** 4000 }}",
    "endless recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


@pytest.mark.parametrize("case", HOSTILE_TEMPLATES)
def test_hostile_template_is_one_line_within_the_budget(case: str) -> None:
    start = time.monotonic()
    with pytest.raises(EdgeLLMError) as err:
        chat_templates.render(HOSTILE_TEMPLATES[case], [{"role": "user", "content": "hi"}], seconds=1.0)
    assert str(err.value).startswith("the model's chat template failed: ") and "\n" not in str(err.value)
    assert time.monotonic() - start < 60  # a bound that fails instead of hanging; the budget is 1 s of it


def test_real_templates_render_as_jinja2_renders_them(default_model: Path) -> None:
    """The bounds change nothing for a real template: the default model's own, and the family
    defaults, render byte for byte as jinja2's plain immutable sandbox renders them."""
    reader = gguf.GGUFReader(default_model)
    own = str(reader.get_field("tokenizer.chat_template").contents())
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi " * 500},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Grüße, 世界"}]  # fmt: skip
    for template in (own, chat_templates.chatml("sys"), chat_templates.llama2("sys"), chat_templates.alpaca()):
        plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
        expected = plain.render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
        assert chat_templates.render(template, messages, bos_token="<s>", eos_token="</s>") == expected


def test_hostile_template_in_a_gguf_under_a_4gb_limit(default_model: Path, tmp_path: Path) -> None:
    bad = gguf_edit.with_metadata(default_model, tmp_path / "template.gguf", {
        "tokenizer.chat_template": (T.STRING, HOSTILE_TEMPLATES["a string doubled in a loop"])})
    limited.one_line_error(limited.cli("run", bad, "hi", "--ctx", "256"), "chat template failed")
