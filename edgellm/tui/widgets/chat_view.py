"""One chat on screen: its messages, the prompt box, and the answer being written.

Generation runs on a worker thread (`answer.produce`); a 10 Hz timer on the UI thread saves what
has arrived to the database and only then shows it, so a crash never loses anything on screen and
Markdown is re-parsed at most ten times a second however fast tokens come."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.timer import Timer
from textual.widget import Widget

from edgellm.errors import EdgeLLMError
from edgellm.models.identity import model_label
from edgellm.runtime.engine import LoadOptions
from edgellm.runtime.placement import layer_split
from edgellm.tui.answer import Answer, produce
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import EngineSlot
from edgellm.tui.sessions import NEW_CHAT_TITLE, Chat, Message, SessionStore
from edgellm.tui.widgets.message import MessageView, NoticeView
from edgellm.tui.widgets.prompt import PromptInput
from edgellm.tui.widgets.status_bar import StatusBar

FLUSH_SECONDS = 0.1  # repaint (and save) a streaming answer at most 10 times a second
STATUS_LIVE_SECONDS = 0.5  # the live speed in the status bar, at most twice a second
TITLE_LENGTH = 48


def title_from(text: str) -> str:
    """A chat's title from its first message: the first line, shortened."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), NEW_CHAT_TITLE)
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def turn_stats(answer: Answer) -> dict[str, object]:
    """What is saved with an answer and shown in its header and the status bar."""
    s = answer.stats
    data: dict[str, object] = {"model": model_label(answer.model)}  # the one name the app shows it by
    if s is not None:
        data.update(
            prompt_tokens=s.prompt_tokens,
            cached_tokens=s.cached_tokens,
            generated_tokens=s.generated_tokens,
            prompt_tps=round(s.prompt_tps, 2),
            generation_tps=round(s.generation_tps, 2),
            ttft_seconds=round(s.ttft_seconds, 4),
            acceptance_rate=round(s.acceptance_rate, 3),
            stop_reason=s.stop_reason,
        )
    return data


def error_text(err: BaseException) -> str:
    if isinstance(err, EdgeLLMError):
        return str(err)
    return f"the answer failed: {type(err).__name__}: {err}"


class ChatView(Vertical):
    """Shows one chat; `open` switches to another, `send` / `regenerate` / `edit_last` act on it."""

    DEFAULT_CSS = """
    ChatView { height: 1fr; width: 1fr; }
    ChatView > #messages { height: 1fr; padding: 1 1 0 1; }
    """

    class Changed(TextualMessage):
        """The chat's title or order in the sidebar changed."""

    def __init__(
        self, store: SessionStore, slot: EngineSlot, base_options: LoadOptions, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.store = store
        self.slot = slot
        self.base_options = base_options
        self.chat: Chat | None = None
        self.rows: list[Message] = []
        self.answer: Answer | None = None
        self.editing: Message | None = None
        self._answer_row: Message | None = None
        self._answer_view: MessageView | None = None
        self._timer: Timer | None = None
        self._flushing = False
        self._status_at = 0.0
        self._send_when_open = False  # Enter was pressed before the first chat was open

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="messages")
        yield PromptInput(id="prompt")

    # -- helpers -------------------------------------------------------------------------------
    @property
    def settings(self) -> ChatSettings:
        assert self.chat is not None
        return ChatSettings.from_json(self.chat.settings)

    @property
    def load_options(self) -> LoadOptions:
        return self.settings.load_options(self.base_options)

    @property
    def messages_box(self) -> VerticalScroll:
        return self.query_one("#messages", VerticalScroll)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def status_bar(self) -> StatusBar | None:
        return self.screen.query_one_optional(StatusBar)  # breadth-first: the bar is near the top

    @property
    def busy(self) -> bool:
        return self.answer is not None

    def history(self) -> list[dict[str, str]]:
        """What the model is shown: the system prompt (if the chat sets one) and every turn with text."""
        assert self.chat is not None
        system = [{"role": "system", "content": self.chat.system}] if self.chat.system is not None else []
        turns = [{"role": m.role, "content": m.content} for m in self.rows if m.role in ("user", "assistant")]
        return system + [t for t in turns if t["content"]]

    def _author(self, message: Message) -> str:
        if message.role == "user":
            return "You"
        return str(message.stats.get("model") or (self.chat.model if self.chat else "assistant"))

    def _view_for(self, message: Message) -> Widget:
        return NoticeView(message) if message.role == "notice" else MessageView(message, self._author(message))

    async def _add_notice(self, text: str) -> None:
        assert self.chat is not None
        row = self.store.add_message(self.chat.id, "notice", text)
        self.rows.append(row)
        view = NoticeView(row)
        if self._answer_view is not None and self._answer_view.parent is not None:
            await self.messages_box.mount(view, before=self._answer_view)
        else:
            await self.messages_box.mount(view)

    async def _forget_from(self, message: Message) -> None:
        """Delete a message and all after it, in the database and on screen."""
        assert self.chat is not None
        self.store.delete_messages_from(self.chat.id, message.id)
        self.rows = [m for m in self.rows if m.id < message.id]
        doomed = [v for v in self.messages_box.children if getattr(v, "message", None) and v.message.id >= message.id]
        await self.messages_box.remove_children(doomed)

    # -- opening -------------------------------------------------------------------------------
    async def open(self, chat: Chat) -> None:
        """Show ``chat`` (stopping an answer still being written elsewhere) and get its model ready;
        the unsent text of the box stays with the chat it was typed in."""
        if self.busy and self.chat is not None:
            self.notify(f"Stopped the answer in “{self.chat.title}”; Ctrl+R there writes it again")
        await self.stop_and_wait()
        self.save_draft()
        self.store.discard_blank(keep=chat.id)  # the blank chat being left, if it is one
        typed_before_open = self.prompt.text if self.chat is None else ""
        self.chat = chat
        self.editing = None
        self.rows = self.store.messages(chat.id)
        box = self.messages_box
        await box.remove_children()
        await box.mount_all([self._view_for(m) for m in self.rows])
        box.anchor()
        self.prompt.border_title = None
        self.prompt.text = typed_before_open or self.store.pref(f"draft:{chat.id}", "") or ""
        self.prompt.move_cursor(self.prompt.document.end)
        self.store.touch(chat.id)
        self.show_model_status()
        self.preload()
        if self._send_when_open:
            self._send_when_open = False
            await self.send(self.prompt.text)

    def save_draft(self) -> None:
        """Keep what was typed but not sent (not while editing a sent message)."""
        if self.chat is not None and self.editing is None:
            self.store.set_pref(f"draft:{self.chat.id}", self.prompt.text)

    def replace_chat(self, chat: Chat) -> None:
        """The same chat with new settings, model or title."""
        self.chat = chat
        self.show_model_status()
        self.preload()

    @work(thread=True, group="preload", exclusive=False, exit_on_error=False)
    def preload(self) -> None:
        """Load the chat's model in the background so the first answer starts at once."""
        chat = self.chat
        if chat is None or self.slot.held(chat.model, self.load_options) is not None:
            return
        self.app.call_from_thread(self._set_activity, "loading model…")
        try:
            self.slot.load(chat.model, self.load_options)
        except Exception as err:
            self.app.call_from_thread(self._load_failed, err)
            return
        self.app.call_from_thread(self.show_model_status)

    def _load_failed(self, err: BaseException) -> None:
        self.notify(error_text(err), title="Model not loaded", severity="error", timeout=10)
        self._set_activity("model not loaded")

    # -- status bar ----------------------------------------------------------------------------
    def _set_activity(self, activity: str) -> None:
        bar = self.status_bar
        if bar is not None:
            bar.status.activity = activity
            bar.refresh_status()

    def show_model_status(self) -> None:
        """Model, type, context size and layer split of the loaded engine; the chat's last answer's speed."""
        bar = self.status_bar
        if bar is None or self.chat is None:
            return
        st = bar.status
        engine = self.slot.held(self.chat.model, self.load_options)
        if engine is not None:
            st.model, st.file_type, st.context_size = self.chat.model, engine.info.file_type, engine.n_ctx
            st.split = layer_split(engine.options.n_gpu_layers, engine.info.block_count, self.app.gpu_offload)
            st.activity = "" if not self.busy else st.activity
        else:
            st.model, st.file_type, st.context_size, st.split = self.chat.model, "", 0, ""
        last = next((m for m in reversed(self.rows) if m.role == "assistant" and m.stats), None)
        stats = last.stats if last else {}
        st.prompt_tps = float(stats.get("prompt_tps", 0.0) or 0.0)  # type: ignore[arg-type]
        st.generation_tps = float(stats.get("generation_tps", 0.0) or 0.0)  # type: ignore[arg-type]
        st.ttft_seconds = float(stats.get("ttft_seconds", 0.0) or 0.0)  # type: ignore[arg-type]
        st.acceptance = float(stats.get("acceptance_rate", 0.0) or 0.0)  # type: ignore[arg-type]
        used = int(stats.get("prompt_tokens", 0) or 0) + int(stats.get("generated_tokens", 0) or 0)  # type: ignore[call-overload]
        st.context_used = used
        st.rss_bytes = self.app.memory_in_use()
        bar.refresh_status()

    # -- sending -------------------------------------------------------------------------------
    @on(PromptInput.EditLast)
    def _on_edit_last(self, event: PromptInput.EditLast) -> None:
        event.stop()
        self.edit_last()

    @on(PromptInput.Submitted)
    async def _on_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        await self.send(event.text)

    async def send(self, text: str) -> None:
        """Save and show the user's message, then start the answer (once a chat is open: Enter
        pressed while the first one opens sends then)."""
        if not text.strip():
            return
        if self.chat is None:
            self._send_when_open = True
            return
        if self.busy:
            self.notify("An answer is being written: wait for it or press Esc to stop it", severity="warning")
            return
        if self.editing is not None:
            await self._forget_from(self.editing)
            self.editing = None
            self.prompt.border_title = None
        row = self.store.add_message(self.chat.id, "user", text)
        if self.chat.title == NEW_CHAT_TITLE:
            self.chat = self.store.update_chat(self.chat.id, title=title_from(text))
        self.rows.append(row)
        self.prompt.clear()
        await self.messages_box.mount(MessageView(row, "You"))
        self.post_message(self.Changed())
        await self._start_answer()

    async def _start_answer(self) -> None:
        assert self.chat is not None
        self.answer = Answer(self.chat.model, self.load_options, self.history(), self.settings)
        self._answer_row = None
        author = model_label(self.chat.model)
        placeholder = Message(0, self.chat.id, "assistant", "", "streaming", {"model": author})
        self._answer_view = MessageView(placeholder, author, live=True)
        box = self.messages_box
        await box.mount(self._answer_view)
        box.anchor()
        self._timer = self.set_interval(FLUSH_SECONDS, self._flush)
        self._run(self.answer)

    @work(thread=True, group="answer", exit_on_error=False)
    def _run(self, answer: Answer) -> None:
        produce(answer, self.slot)

    async def _flush(self) -> None:
        """Timer tick: save, then show, what the worker produced since the last tick."""
        answer = self.answer
        if answer is None or self._flushing or self.chat is None:
            return
        self._flushing = True
        try:
            done = answer.done  # read before draining: once done, nothing more can arrive
            if answer.dropped and not answer.dropped_noted:
                answer.dropped_noted = True
                n_ctx = answer.engine.n_ctx if answer.engine else 0
                await self._add_notice(
                    f"Left out the {answer.dropped} oldest messages: the conversation no longer fits "
                    f"the {n_ctx}-token context"
                )
            text = answer.drain()
            if text:
                content = (self._answer_view.content if self._answer_view else "") + text
                if self._answer_row is None:
                    self._answer_row = self.store.add_message(
                        self.chat.id, "assistant", content, state="streaming", stats=turn_stats(answer)
                    )
                else:
                    self.store.save_progress(self._answer_row.id, content)
                assert self._answer_view is not None
                with self.app.batch_update():  # one repaint for the text and the status line
                    await self._answer_view.append(text)
                    self._live_status(answer)
            else:
                self._live_status(answer)
            if done:
                await self._finish(answer)
                timer, self._timer = self._timer, None
                if timer is not None:
                    timer.stop()  # last: this tick may be running in the timer's own task, which stop() cancels
        finally:
            self._flushing = False

    def _live_status(self, answer: Answer) -> None:
        """What the answer is doing; its speed so far at most twice a second (each repaint of the
        bar costs the model CPU time on a small machine)."""
        bar = self.status_bar
        if bar is None:
            return
        if answer.engine is not None and not bar.status.context_size:
            self.show_model_status()
        activity_changed = bar.status.activity != answer.activity
        bar.status.activity = answer.activity
        now = time.monotonic()
        if not activity_changed and now - self._status_at < STATUS_LIVE_SECONDS:
            return
        self._status_at = now
        if answer.pieces and answer.stats is not None:  # the engine's TTFT: the number shown when it ends
            bar.status.generation_tps = answer.live_tps
            bar.status.ttft_seconds = answer.stats.ttft_seconds
        bar.refresh_status()

    async def _finish(self, answer: Answer) -> None:
        """Save the final answer and its statistics, render its Markdown in full, say what went wrong."""
        assert self.chat is not None and self._answer_view is not None
        stats = answer.stats
        content = self._answer_view.content
        stop = stats.stop_reason if stats else ""
        state = "error" if answer.error else ("stopped" if stop == "cancelled" or answer.stop_requested else "done")
        data = turn_stats(answer)
        if self._answer_row is None and content:
            self._answer_row = self.store.add_message(self.chat.id, "assistant", content, state=state, stats=data)
        view = self._answer_view
        if self._answer_row is not None:
            self.store.finish_message(self._answer_row.id, content, state, data)
            row = dataclasses.replace(self._answer_row, content=content, state=state, stats=data)
            self.rows.append(row)
            await view.finish(row)
        else:  # stopped or failed before the first word: nothing to keep
            await view.remove()
        self.answer, self._answer_row, self._answer_view = None, None, None
        if answer.error is not None:
            await self._add_notice(error_text(answer.error))
        elif stop == "context":
            n_ctx = answer.engine.n_ctx if answer.engine else 0
            await self._add_notice(
                f"The answer stopped: the {n_ctx}-token context is full. Raise the context size (F4) "
                "or start a new chat"
            )
        self.show_model_status()
        self.messages_box.anchor()
        self.post_message(self.Changed())

    # -- actions -------------------------------------------------------------------------------
    def stop(self) -> bool:
        """Esc: stop the answer now (also while the model loads or reads the prompt)."""
        if self.answer is None:
            return False
        self.answer.stop()
        return True

    async def stop_and_wait(self) -> None:
        """Stop the answer and keep what was written (before switching chats or quitting)."""
        answer = self.answer
        if answer is None:
            return
        answer.stop()
        while self.answer is answer:
            if answer.done and not self._flushing:
                await self._flush()
            else:
                await asyncio.sleep(FLUSH_SECONDS / 4)

    async def regenerate(self) -> None:
        """Write the last answer again (or answer the last message if it has none)."""
        if self.chat is None or self.busy:
            return
        turns = [m for m in self.rows if m.role in ("user", "assistant")]
        if not turns:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        last = turns[-1]
        if last.role == "assistant":
            await self._forget_from(last)
        else:
            notices = [m for m in self.rows if m.role == "notice" and m.id > last.id]
            if notices:
                await self._forget_from(notices[0])
        await self._start_answer()

    def edit_last(self) -> None:
        """Put the last message back in the box; sending replaces it and its answer."""
        if self.chat is None or self.busy:
            return
        last = next((m for m in reversed(self.rows) if m.role == "user"), None)
        if last is None:
            self.notify("No message to edit yet", severity="warning")
            return
        self.editing = last
        prompt = self.prompt
        prompt.text = last.content
        prompt.move_cursor(prompt.document.end)
        prompt.border_title = "Editing your last message · Esc cancels"
        prompt.focus()

    def cancel_edit(self) -> bool:
        if self.editing is None:
            return False
        self.editing = None
        self.prompt.clear()
        self.prompt.border_title = None
        return True

    def last_answer(self) -> Message | None:
        return next((m for m in reversed(self.rows) if m.role == "assistant"), None)
