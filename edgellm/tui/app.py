"""`edgellm chat`: the Textual app. It owns the chat store and the engine slot; the screens do the rest."""

from __future__ import annotations

import select
import sys
from collections.abc import Callable, Iterable
from functools import partial

import psutil
from textual.app import App, SystemCommand
from textual.screen import Screen

from edgellm.runtime.engine import LoadOptions
from edgellm.runtime.hardware import gpu_offload_supported
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import EngineSlot
from edgellm.tui.screens.chat import ACTIONS, ChatScreen
from edgellm.tui.sessions import SessionStore

THEMES = ("textual-dark", "textual-light")


def process_rss() -> int:
    """Resident memory of this process: the mapped model pages in use plus the KV cache and the UI."""
    return psutil.Process().memory_info().rss


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "edgellm chat"

    def __init__(
        self,
        store: SessionStore,
        *,
        slot: EngineSlot | None = None,
        model: str | None = None,
        base_options: LoadOptions | None = None,
        new_chat_settings: ChatSettings | None = None,
        new_chat_system: str | None = None,
        memory_probe: Callable[[], int] = process_rss,
    ) -> None:
        """``model``: open a chat with this model (the last chat if it used it); None: where the user left off."""
        super().__init__()
        self.store = store
        self.slot = slot or EngineSlot()
        self.start_model = model
        self.base_options = base_options or LoadOptions()
        self.new_chat_settings = new_chat_settings or ChatSettings()
        self.new_chat_system = new_chat_system
        self.memory_in_use = memory_probe
        self.gpu_offload = gpu_offload_supported()
        theme = store.pref("theme")
        if theme in self.available_themes:  # the toggle's two, or any picked in the palette
            self.theme = theme

    def get_default_screen(self) -> Screen:
        return ChatScreen(self.start_model)

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, lambda theme: self.store.set_pref("theme", theme.name))
        if not self.is_headless and hasattr(select, "poll"):
            self.set_interval(1.0, self._quit_if_terminal_gone)

    async def _quit_if_terminal_gone(self) -> None:
        """A terminal can vanish without a SIGHUP reaching us (the app was not its session leader):
        stdin then reads EOF forever and Textual's input thread spins at 100% CPU. Quit instead,
        keeping the answer in progress."""
        poller = select.poll()
        poller.register(sys.__stdin__.fileno(), select.POLLIN)
        if any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in poller.poll(0)):
            await self.action_quit()

    def toggle_dark(self) -> None:
        self.theme = THEMES[1] if self.current_theme.dark else THEMES[0]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if isinstance(screen, ChatScreen):
            for action, title, help_text in ACTIONS:
                yield SystemCommand(title, help_text, partial(screen.run_action, action))
        yield from super().get_system_commands(screen)

    async def action_quit(self) -> None:
        """Quit, keeping what an unfinished answer has written so far."""
        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen):
                await screen.chat_view.stop_and_wait()
                screen.chat_view.save_draft()
        self.store.discard_blank()  # a chat opened and left empty is not kept
        self.exit()
