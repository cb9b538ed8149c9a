"""The small pieces: family system prompts from templates, the layer split, titles, settings JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.models import chat_templates
from edgellm.models.gguf_file import inspect
from edgellm.runtime.placement import layer_split
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.system_prompt import family_default, model_template
from edgellm.tui.widgets.chat_view import title_from
from edgellm.tui.widgets.message import code_blocks
from edgellm.tui.widgets.status_bar import Status

SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (chat_templates.chatml(SYSTEM), SYSTEM),
        (chat_templates.llama2(SYSTEM), SYSTEM),
        (chat_templates.alpaca(SYSTEM), SYSTEM),
        (chat_templates.chatml(), ""),
        (chat_templates.llama2(), ""),
        (None, ""),
        ("{{ raise_exception('no system role') }}", ""),
    ],
)
def test_family_default_is_read_from_the_template(template: str | None, expected: str) -> None:
    assert family_default(template) == expected


def test_default_model_family_prompt(default_model: Path) -> None:
    template = model_template("default")
    assert template == inspect(default_model).chat_template
    prompt = family_default(template)
    assert prompt and prompt in template  # SmolLM2's own words, taken from its template
    assert model_template("/no/such/model.gguf") is None


@pytest.mark.parametrize(
    ("gpu_layers", "blocks", "offload", "expected"),
    [
        (0, 30, True, "100% CPU"),
        (12, 30, True, "60%/40% CPU/GPU"),
        (-1, 30, True, "100% GPU"),
        (99, 30, True, "100% GPU"),
        (-1, 30, False, "100% CPU"),  # a CPU build ignores --gpu-layers
    ],
)
def test_layer_split_reads_like_ollama_ps(gpu_layers: int, blocks: int, offload: bool, expected: str) -> None:
    assert layer_split(gpu_layers, blocks, offload) == expected


def test_status_line_shows_only_what_is_known() -> None:
    assert Status().line() == "no model"
    line = Status(model="SmolLM2", file_type="Q4_1", prompt_tps=280.4, generation_tps=78.06, ttft_seconds=0.1234,
                  context_used=412, context_size=2048, rss_bytes=310_000_000, split="100% CPU").line()
    assert (
        line
        == "SmolLM2 Q4_1 │ prompt 280 tok/s │ gen 78.1 tok/s │ TTFT 123 ms │ ctx 412/2048 │ RAM 310.0 MB │ 100% CPU"
    )


def test_titles_and_code_blocks() -> None:
    assert title_from("\n  Hello there\nsecond line") == "Hello there"
    long = "字" * 60
    assert title_from(long).endswith("…") and len(title_from(long)) == 48
    assert code_blocks("a\n```sh\nls -l\n```\nb\n~~~\nx\n~~~\n") == ["ls -l", "x"]


def test_command_line_sampling_reaches_the_chat() -> None:
    """Every sampling option of `edgellm chat` (--draft, --seed, ...) ends up in the turns' SamplingParams."""
    from edgellm.cli import build_parser
    from edgellm.runtime.engine import LoadOptions

    args = build_parser().parse_args(["chat", "default", "--draft", "off", "--seed", "7", "--temperature", "0.3"])
    sampling = ChatSettings.from_args(args, LoadOptions()).sampling()
    assert (sampling.draft, sampling.seed, sampling.temperature) == (0, 7, 0.3)


def test_settings_json_round_trip_ignores_unknown_keys() -> None:
    s = ChatSettings(temperature=0.2, n_ctx=1024, n_gpu_layers=-1)
    assert ChatSettings.from_json({**s.to_json(), "from_the_future": 1}) == s
    assert (
        s.sampling().temperature == 0.2 and s.reserve(1024) == 512 and ChatSettings(max_tokens=-1).reserve(4096) == 256
    )
