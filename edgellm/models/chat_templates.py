"""Chat templates: the family defaults written into GGUF files, and sandboxed, bounded rendering.

Templates come from model files, which come from strangers: they run in jinja2's immutable
sandbox, which refuses attribute tricks and mutation of the objects passed in, but bounds neither
time nor memory (``{{ 'x' * 10**10 }}``, a string doubled in a loop, loops nested over ranges).
`BoundedSandbox` adds a budget per render: every loop step, call, attribute and operator checks a
deadline, and everything that can build a big value (``*``, ``**``, ``+``, ``%``, ``~``, string
methods and filters with a size argument, ``format``) checks its result size before computing it,
so a hostile template ends in a one-line error within ``MAX_SECONDS`` and ``max_chars``."""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import TemplateError
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.nodes import Concat, For, Node
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


MAX_SECONDS = 2.0  # real templates render in milliseconds
MAX_CHARS = 1_000_000  # plus 4x the messages' own text: a prompt far past any context window
MAX_INT_BITS = 4096  # integers a template may build (``10**10**10`` would compute for ever)


class _Budget:
    """One render's limits: a deadline and a size no value or output may pass."""

    def __init__(self, max_chars: int, seconds: float) -> None:
        self.max_chars, self.seconds = max_chars, seconds
        self.deadline = time.monotonic() + seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(f"rendering took longer than {self.seconds:g} s (a loop that does not end?)")

    def size(self, n: int) -> None:
        if n > self.max_chars:
            raise TemplateError(f"rendering would build a value of {n:,} characters, more than {self.max_chars:,}")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("chat_template_budget")


def _budget() -> _Budget:
    return _BUDGET.get(None) or _Budget(MAX_CHARS, MAX_SECONDS)  # compile-time constant folding


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else len(str(value))


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateError(f"an integer of more than {MAX_INT_BITS} bits")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_widths(widths: Iterable[str | None]) -> None:
    """Field widths and precisions of a format string: no ``*``, none past the budget."""
    for width in widths:
        if width == "*" or (width and int(width) > _budget().max_chars):
            raise TemplateError(f"a format width of {width} characters")


def _estimate_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*" and isinstance(right, int) and not isinstance(left, (int, float)):
        _budget().size(_length(left) * max(right, 0))
    elif operator == "*" and isinstance(left, int) and not isinstance(right, (int, float)):
        _budget().size(_length(right) * max(left, 0))
    elif operator == "*" and isinstance(left, int) and isinstance(right, int):
        _check_int(1 << (abs(left).bit_length() + abs(right).bit_length()))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left).bit_length() * right > MAX_INT_BITS:
            raise TemplateError(f"an integer of more than {MAX_INT_BITS} bits")
    elif operator == "+" and isinstance(left, (str, list, tuple)):
        _budget().size(_length(left) + _length(right))
    elif operator == "%" and isinstance(left, str):
        _check_widths(w for m in _PERCENT_SPEC.finditer(left) for w in m.groups())


def _replace_size(value: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any) -> int:
    n = len(value) + 1 if not _length(old) else _length(value) // _length(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return _length(value) + n * _length(new)


def _join_size(value: Any, items: Any = (), *_: Any) -> int:
    """``sep.join(items)`` (a method: value is the separator) or ``items|join(sep)`` (a filter)."""
    if isinstance(value, str):
        sep, items = value, list(items)
    else:
        sep, items = (items if isinstance(items, str) else ""), list(value)
    return sum(_length(v) for v in items) + len(sep) * len(items)


def _format_size(value: Any, *args: Any, **kwargs: Any) -> int:
    _check_widths(w for m in _PERCENT_SPEC.finditer(str(value)) for w in m.groups())
    return _length(value) + sum(_length(a) for a in (*args, *kwargs.values()))


def _default_size(value: Any, *args: Any, **kwargs: Any) -> int:
    """Input times (1 + every numeric argument) plus the text arguments: a bound for center,
    indent, wordwrap, ljust, zfill, expandtabs, batch and the like."""
    size = sum(_length(v) for v in value) + len(value) if isinstance(value, (list, tuple)) else _length(value)
    arguments = (*args, *kwargs.values())
    numbers = sum(abs(a) for a in arguments if isinstance(a, int) and not isinstance(a, bool))
    return size * (1 + numbers) + sum(_length(a) for a in arguments if isinstance(a, str))


_ESTIMATES: dict[str, Callable[..., int]] = {"replace": _replace_size, "join": _join_size, "format": _format_size}


def _sized(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter or string method whose result may be far larger than its input: refused when the
    estimate of its result (`_ESTIMATES`, else `_default_size`) passes the budget, before it runs."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        budget.size(_ESTIMATES.get(name, _default_size)(value, *args, **kwargs))
        result = func(value, *args, **kwargs)
        if isinstance(result, (str, list)):
            budget.size(len(result))
        return result

    bounded.__name__ = name
    return bounded


_GROWING_FILTERS = ("center", "indent", "wordwrap", "format", "join", "replace", "batch", "slice", "truncate")
_GROWING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format_map",
                              "encode", "splitlines", "split", "rsplit"})  # fmt: skip


class _BoundedCodeGenerator(CodeGenerator):
    """jinja2's code generator with every for-loop's iterable and every ``~`` concatenation routed
    through the environment, where the budget is checked."""

    def visit_For(self, node: For, frame: Frame) -> None:
        self._loop_iters = {*getattr(self, "_loop_iters", ()), id(node.iter)}
        super().visit_For(node, frame)

    def visit(self, node: Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in getattr(self, "_loop_iters", ()):
            return super().visit(node, *args, **kwargs)
        self.write("environment.bounded_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    @optimizeconst
    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            return super().visit_Concat(node, frame)
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")
        return None


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with a time and size budget (set per render by `render`)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in _GROWING_FILTERS:
            self.filters[name] = _sized(name, self.filters[name])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        _estimate_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja2's names
        _budget().tick()
        for value in (*args, *kwargs.values()):
            _check_int(value)
            if isinstance(value, int) and not isinstance(value, bool) and value > _budget().max_chars:
                raise TemplateError(f"an argument of {value:,} to {getattr(__obj, '__name__', 'a call')}()")
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format in a function of its own
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str) and name in ("format", "format_map"):
            specs = [spec for _, _, spec, _ in string.Formatter().parse(owner) if spec]
            _check_widths(["*" if "{" in spec else w for spec in specs for w in re.findall(r"\d+|\{", spec)])
        if isinstance(owner, str) and name in _GROWING_METHODS:
            if name == "join" and args:
                args = (list(__self.bounded_iter(args[0])), *args[1:])
            return _sized(name, lambda s, *a, **k: getattr(s, name)(*a, **k))(owner, *args, **kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, (str, list)):
            _budget().size(len(result))
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        return super().getitem(obj, argument)

    @staticmethod
    def bounded_iter(iterable: Any) -> Iterator[Any]:
        budget = _budget()
        for i, item in enumerate(iterable):
            if not i % 64:
                budget.tick()
            yield item

    @staticmethod
    def bounded_concat(values: tuple[Any, ...]) -> str:
        parts = [str(v) for v in values]
        _budget().size(sum(map(len, parts)))
        return "".join(parts)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def _compile(template: str):  # noqa: ANN202 - jinja2.Template
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    env.filters["tojson"] = _sized("tojson", lambda v, indent=None, **_: json.dumps(v, ensure_ascii=False,
                                                                                     indent=indent))  # fmt: skip
    return env.from_string(template)


def render(
    template: str,
    messages: list[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    seconds: float = MAX_SECONDS,
) -> str:
    """The prompt text for ``messages``; a broken or hostile template (one that fails, loops for
    longer than ``seconds`` or builds more than ``MAX_CHARS`` plus 4x the messages' text) is an
    EdgeLLMError, raised within that budget."""
    text = sum(len(str(m.get("content", ""))) for m in messages)
    budget = _Budget(MAX_CHARS + 4 * text, seconds)
    token = _BUDGET.set(budget)
    try:
        out, size = [], 0
        for chunk in _compile(template).generate(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        ):
            size += len(chunk)
            budget.size(size)
            budget.tick()
            out.append(chunk)
        return "".join(out)
    except TemplateError as err:
        raise EdgeLLMError(f"the model's chat template failed: {err}") from None
    except (RecursionError, OverflowError, MemoryError, ArithmeticError) as err:
        raise EdgeLLMError(f"the model's chat template failed: {type(err).__name__}: {err}") from None
    finally:
        _BUDGET.reset(token)
