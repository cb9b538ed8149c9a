"""`edgellm chat` refuses bad input in one line before the screen opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.cli import build_parser, main


def test_chat_is_a_verb_with_an_optional_model() -> None:
    args = build_parser().parse_args(["chat"])
    assert args.verb == "chat" and args.model is None
    assert build_parser().parse_args(["chat", "default", "--ctx", "1024"]).ctx == 1024


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "/nonexistent/model.gguf"], "/nonexistent/model.gguf: no such file"),
        (["chat", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    ],
)
def test_bad_model_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_gpu_layers_auto_is_sized_for_the_chat_that_reopens(
    tmp_path: Path, default_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgellm.runtime import planner
    from edgellm.tui.app import ChatApp
    from edgellm.tui.chat_settings import ChatSettings
    from edgellm.tui.sessions import SessionStore

    db = tmp_path / "chats.db"
    store = SessionStore(db)
    store.new_chat(str(default_model), settings=ChatSettings().to_json())
    store.close()
    sized: list[Path] = []

    def plan(path, ctx=None, **kw):  # noqa: ANN001, ANN202 - planner.plan_gpu_layers' signature
        sized.append(Path(path))
        return planner.GpuFit(7, 30, 0, 0, 0)

    started: list[int] = []
    monkeypatch.setattr(planner, "plan_gpu_layers", plan)
    monkeypatch.setattr(ChatApp, "run", lambda app: started.append(app.new_chat_settings.n_gpu_layers))
    assert main(["chat", "--db", str(db), "--gpu-layers", "auto"]) == 0
    assert sized == [default_model] and started == [7]


def test_bad_database_is_one_line_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "chats.db"
    db.write_text("not a database")
    assert main(["chat", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{db}: not a usable chat database" in err and "move it away" in err
    assert db.read_text() == "not a database"


@pytest.mark.anyio
async def test_seed_reaches_the_sampler_of_new_chats(
    make_real_app,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """`chat --seed N`: new chats keep N and every sampled answer in them is repeatable."""
    import dataclasses

    from edgellm.tui.app import ChatApp
    from tests.tui.conftest import chat_view, send, wait_idle

    started = []
    monkeypatch.setattr(ChatApp, "run", lambda app: started.append(app.new_chat_settings))
    argv = ["chat", "default", "--db", str(tmp_path / "cli.db"), "--temperature", "1.0", "--top-k", "0",
            "--top-p", "1", "--min-p", "0", "--max-tokens", "24", "--ctx", "2048"]  # fmt: skip
    assert main([*argv, "--seed", "7"]) == 0 and main(argv) == 0
    seeded, unseeded = started
    assert seeded.sampling().seed == 7 and unseeded.sampling().seed is None

    async def answer(seed: int, name: str) -> str:
        app = make_real_app(dataclasses.replace(seeded, seed=seed), tmp_path / f"{name}.db")
        async with app.run_test(size=(100, 30)) as pilot:
            await send(pilot, "Tell me a story about a cat.")
            await wait_idle(pilot)
            return app.store.messages(chat_view(app).chat.id)[-1].content

    first, again, other = await answer(7, "a"), await answer(7, "b"), await answer(8, "c")
    assert first and first == again and other != first
