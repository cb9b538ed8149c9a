"""Issue 16 point 7: the model picker downloads a registry model (the real `edgellm pull` against the
loopback Hub of tests/store/fake_hub.py) with progress, and opens a local .gguf through a file
dialog; a file opened through a symlink keeps the name it was given."""

from __future__ import annotations

import asyncio
import os

import pytest
from textual.widgets import DataTable, Input

from edgellm.tui.screens.model_files import DownloadScreen, GGUFTree, OpenFileScreen
from edgellm.tui.screens.model_picker import ModelPicker
from edgellm.tui.widgets.status_bar import StatusBar
from tests.store.fake_hub import FakeHub
from tests.store.test_pull import env, gguf_bytes, hub, stored  # noqa: F401 (fixtures)
from tests.tui.conftest import chat_view

pytestmark = pytest.mark.anyio


async def open_picker(pilot) -> ModelPicker:  # noqa: ANN001
    await pilot.press("f3")
    picker = pilot.app.screen
    assert isinstance(picker, ModelPicker)
    while not picker.choices:
        await pilot.pause(0.05)
    return picker


async def test_the_picker_downloads_a_registry_model_with_progress(
    make_scripted_app, env: dict[str, str], hub: FakeHub, gguf_bytes: dict[str, bytes], monkeypatch  # noqa: F811
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    hub.stall.add("big-chat.F16.gguf")  # half the file, then the transfer waits: progress is seen mid-way
    app, _ = make_scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        picker = await open_picker(pilot)
        choice = next(c for c in picker.choices if c.ref == "big-chat:F16")
        assert not choice.local and choice.memory > 0
        await pilot.press(*"big-chat")
        await pilot.pause()
        assert picker.query_one(DataTable).row_count == 1
        await pilot.press("enter")
        await pilot.pause()
        download = app.screen
        assert isinstance(download, DownloadScreen)
        bar = download.query_one("ProgressBar")
        for _ in range(200):  # the child pulls; the bar follows the staged bytes
            await pilot.pause(0.1)
            if bar.progress > 0 or app.screen is not download:
                break
        assert app.screen is download, [n.message for n in app._notifications]
        assert bar.progress > 0 and bar.progress < bar.total
        assert " at " in str(download.query_one("#rate").render())  # bytes and rate
        hub.release()
        deadline = asyncio.get_running_loop().time() + 120  # the rest of the file, then the model loads
        while isinstance(app.screen, (DownloadScreen, ModelPicker)) and asyncio.get_running_loop().time() < deadline:
            await pilot.pause(0.1)
        assert chat_view(app).chat.model == "big-chat:F16", [n.message for n in app._notifications]
    assert stored(env, "big-chat", "F16").read_bytes() == gguf_bytes["big"]


async def test_the_picker_opens_a_gguf_file_by_its_given_name(make_scripted_app, default_model, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / ".hidden.gguf").write_text("")
    link = tmp_path / "my-smol.gguf"
    link.symlink_to(default_model)
    tree = GGUFTree(tmp_path)
    assert [p.name for p in tree.filter_paths(sorted(tmp_path.iterdir()))] == ["my-smol.gguf"]
    app, _ = make_scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await open_picker(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, OpenFileScreen)
        box = dialog.query_one(Input)
        box.value = str(tmp_path / "notes.txt")
        await box.action_submit()
        await pilot.pause()
        assert app.screen is dialog, "not a .gguf: the dialog stays open"
        box.value = str(link)
        await box.action_submit()
        await pilot.pause()
        assert chat_view(app).chat.model == str(link) and os.path.islink(chat_view(app).chat.model)
        await pilot.pause(0.2)
        assert app.screen.query_one(StatusBar).status.line().startswith("my-smol ")
