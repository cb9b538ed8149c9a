"""Chat templates: the family defaults written into GGUF files, and sandboxed rendering.

Templates come from model files, which come from strangers: they run in jinja2's immutable
sandbox, which refuses attribute tricks and mutation of the objects passed in."""

from __future__ import annotations

import datetime
import functools
import json

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgellm.errors import EdgeLLMError

Message = dict[str, str]


def chatml(default_system: str | None = None) -> str:
    """ChatML (Qwen, SmolLM2): `<|im_start|>role\\n...<|im_end|>`."""
    first = ""
    if default_system:
        first = (
            "{%- if messages[0]['role'] != 'system' -%}"
            f"{{{{ '<|im_start|>system\\n' + {json.dumps(default_system)} + '<|im_end|>\\n' }}}}"
            "{%- endif -%}"
        )
    return (
        first + "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def llama2(default_system: str | None = None) -> str:
    """Meta's Llama-2 chat format: `<s>[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n... [/INST]`."""
    system = json.dumps(default_system) if default_system else "false"
    return (
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
        f"{{%- else -%}}{{%- set system = {system} -%}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- set content = message['content'] -%}"
        "{%- if loop.first and system -%}"
        "{%- set content = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + content -%}"
        "{%- endif -%}"
        "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


def alpaca(default_system: str = ALPACA_SYSTEM) -> str:
    """Stanford Alpaca's "### Instruction: / ### Response:" format."""
    return (
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
        f"{{%- else -%}}{{%- set system = {json.dumps(default_system)} -%}}"
        "{%- endif -%}"
        "{{ bos_token + system + '\\n\\n' }}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ message['content'] + eos_token + '\\n\\n' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def _raise(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def _compile(template: str):  # noqa: ANN202 - jinja2.Template
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, ensure_ascii=False, indent=indent)
    return env.from_string(template)


def render(
    template: str,
    messages: list[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages``; a broken or hostile template is an EdgeLLMError."""
    try:
        return _compile(template).render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except TemplateError as err:
        raise EdgeLLMError(f"the model's chat template failed: {err}") from None
