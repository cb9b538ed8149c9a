"""A new user's first answers: every question README.md asks the default model is answered with the
fact, by the real command on the real bundled model; the model is shown by a readable name; the
registry's system prompt is what the default model answers under unless the user gives one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.models import gguf_file, identity
from edgellm.runtime.engine import Engine

README = Path(__file__).resolve().parent.parent / "README.md"
# what the answer to each question the README asks `default` must contain
FACTS = {"What is the capital of France?": "Paris"}
# `edgellm run default "QUESTION" [OPTIONS]` in the README's shell examples
_EXAMPLE = re.compile(r'^edgellm run default "([^"]+)"([^#\n]*)', re.M)
TEMPLATE_OWN_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def readme_questions() -> list[tuple[str, str]]:
    return [(q, opts.strip()) for q, opts in _EXAMPLE.findall(README.read_text(encoding="utf-8"))]


def edgellm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True, timeout=300)


def test_the_readme_asks_questions_this_test_knows_the_answers_to() -> None:
    questions = [q for q, _ in readme_questions()]
    assert "What is the capital of France?" in questions
    assert not set(questions) - set(FACTS), "add the fact each new README question must be answered with to FACTS"


@pytest.mark.parametrize(("question", "options"), readme_questions())
def test_readme_question_is_answered_with_the_fact(question: str, options: str) -> None:
    done = edgellm("run", "default", question, *options.split())
    assert done.returncode == 0, done.stderr
    assert FACTS[question] in done.stdout, done.stdout


def test_the_set_up_before_answered_without_the_fact() -> None:
    """The control: the same question as edgellm asked it before (the system prompt SmolLM2's
    template writes by itself, no repeat penalty) is answered with French words, not the fact."""
    done = edgellm("run", "default", "What is the capital of France?", "--temperature", "0",
                   "--system", TEMPLATE_OWN_SYSTEM, "--repeat-penalty", "1.0", "--max-tokens", "48")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Paris" not in done.stdout


def test_the_registry_system_prompt_is_sent_only_when_the_conversation_has_none(engine: Engine) -> None:
    question = [{"role": "user", "content": "Hi"}]
    assert engine.system == "You are a helpful assistant."
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>" in engine.render(question)
    assert TEMPLATE_OWN_SYSTEM not in engine.render(question)
    own = engine.render([{"role": "system", "content": "Answer in French."}, *question])
    assert "Answer in French." in own and "You are a helpful assistant." not in own


def test_show_names_the_default_model_readably_and_shows_its_system_prompt() -> None:
    text = edgellm("show", "default").stdout
    assert re.search(r"^\s+name\s+SmolLM2-135M-Instruct$", text, re.M), text
    assert re.search(r"^\s+system prompt\s+You are a helpful assistant\.$", text, re.M), text
    shown = json.loads(edgellm("show", "default", "--json").stdout)
    assert shown["name"] == "SmolLM2-135M-Instruct" and shown["system"] == "You are a helpful assistant."


def test_a_users_models_toml_changes_the_default_models_system_prompt(default_model: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "edgellm"
    config.mkdir(parents=True)
    (config / "models.toml").write_text('[models."smollm2-135m-instruct"]\nsystem = "Answer in French."\n')
    assert identity.default_system(default_model) == "Answer in French."


def test_a_pulled_model_is_shown_by_its_registry_name(default_model: Path) -> None:
    """A file in the store under a registry name (here the bundled file, linked in as if pulled)."""
    folder = Path(os.environ["XDG_DATA_HOME"]) / "edgellm" / "models" / "qwen1.5-0.5b-chat"
    folder.mkdir(parents=True)
    target = folder / "qwen1.5-0.5b-chat-Q4_1.gguf"
    try:
        os.link(default_model, target)
    except OSError:  # another file system
        shutil.copyfile(default_model, target)
    assert identity.registry_name(target) == "qwen1.5-0.5b-chat"
    assert gguf_file.inspect(target).name == "Qwen1.5-0.5B-Chat"
    assert identity.default_system(target) is None  # Qwen1.5 writes its own


@pytest.mark.parametrize(
    ("file", "header", "shown"),
    [
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Qwen2.5 0.5B Instruct", "Qwen2.5-0.5B-Instruct"),
        ("Llama-2-7B-Chat.Q8_0.gguf", "Llama 2 7b Chat Hf", "Llama-2-7B-Chat"),
        ("tinyllama-1.1b-chat-v1.0.IQ4_XS.gguf", None, "tinyllama-1.1b-chat-v1.0"),
        ("ggml-model-q4_k.gguf", "Chinese Alpaca 2 7B", "Chinese Alpaca 2 7B"),  # generic file name: the header's
        ("model.gguf", None, "model"),
    ],
)
def test_files_the_registry_does_not_know_are_shown_by_their_file_name(
    tmp_path: Path, file: str, header: str | None, shown: str
) -> None:
    assert identity.display_name(tmp_path / file, header) == shown


def test_the_chat_apps_settings_show_the_prompt_the_engine_sends(default_model: Path) -> None:
    from edgellm.tui.system_prompt import family_default, model_default, model_template

    template = model_template("default")
    assert model_default("default", template) == "You are a helpful assistant."
    assert model_default("/no/such/model.gguf", template) == family_default(template) == TEMPLATE_OWN_SYSTEM
