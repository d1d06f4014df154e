"""The Chat screen: streaming multi-turn chat with the active model, saved as it happens."""

from __future__ import annotations

import asyncio
from datetime import datetime
from time import monotonic
from urllib.parse import urlsplit

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, ListItem, ListView, Markdown, Static

from sage_tui.core.chat import describe_stats, stats_figures
from sage_tui.core.conversations import ConversationRecord, MessageRecord
from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.manager import EngineStopped
from sage_tui.core.engines.reply import Reply
from sage_tui.core.safe_text import VisibleStream, visible
from sage_tui.errors import SageError, describe_error
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.plain_text import plain
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.widgets.chat_message import ChatMessage

DRAFT_SAVE_SECONDS = 1.0
"""How often the reply being streamed is saved."""
OPENED_SCHEMES = ("http", "https", "mailto")
"""Links ctrl+l opens; others (file:, javascript:, ...) are shown and left alone."""


class ChatScreen(StudioScreen):
    """Chat with the active model; Esc stops a reply, ctrl+n starts a new conversation."""

    MODE = "chat"
    BINDINGS = [
        Binding("escape", "stop", "Stop reply", id="chat.stop"),
        Binding("ctrl+n", "new_conversation", "New chat", id="chat.new"),
        Binding("ctrl+o", "toggle_conversations", "Chats", id="chat.list"),
        Binding("ctrl+y", "copy_reply", "Copy reply", id="chat.copy"),
        Binding("ctrl+r", "reload_engine", "Reload engine", id="chat.reload"),
        # Not in the footer: a click on a link says to press it.
        Binding("ctrl+l", "open_link", "Open link", id="chat.open_link", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.session = self.app.studio.chat()
        self.reply: Reply | None = None
        self.link: str | None = None
        """The last link clicked in a message: shown, opened only by ctrl+l."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chat-layout"):
            yield ListView(id="chat-conversations")
            with Vertical(id="chat-main"):
                with Horizontal(id="chat-settings"):
                    yield Input(placeholder="system prompt (optional)", id="chat-system")
                    yield Label("temp", classes="chat-setting-label")
                    defaults = Sampling()
                    yield Input(
                        str(defaults.temperature), id="chat-temperature", classes="chat-number"
                    )
                    yield Label("top-p", classes="chat-setting-label")
                    yield Input(str(defaults.top_p), id="chat-top-p", classes="chat-number")
                    yield Label("max", classes="chat-setting-label")
                    yield Input(
                        str(defaults.max_tokens), id="chat-max-tokens", classes="chat-number"
                    )
                yield VerticalScroll(id="chat-transcript")
                yield Static("", id="chat-engine")
                yield Input(placeholder="Ask the model (Enter sends)", id="chat-input")

    def on_mount(self) -> None:
        self.query_one("#chat-conversations").display = False
        self.watch(self.app, "engine", self._engine_state_changed)
        self.watch(self.app, "model_status", self._engine_state_changed)
        self.watch(self.app, "active_model", self._engine_state_changed)
        self.query_one("#chat-input", Input).focus()
        # Loading takes 15 s or more: a ticking clock shows it is alive.
        self.set_interval(1.0, self._tick)

    # -- the engine -------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.app.engine.state is EngineState.LOADING:
            self._engine_state_changed()

    def _engine_state_changed(self, _: object = None) -> None:
        app = self.app
        notice = self.query_one("#chat-engine", Static)
        prompt = self.query_one("#chat-input", Input)
        engine: EngineStatus = app.engine
        if engine.ready:
            notice.update("")
            notice.display = False
            prompt.placeholder = f"Ask {visible(app.active_model or '')} (Enter sends, Esc stops)"
            return
        notice.display = True
        notice.update(plain(_engine_notice(engine, app.model_status)))
        if engine.state is EngineState.STOPPED:
            prompt.placeholder = "The engine stopped: Enter reloads it and sends, ctrl+r reloads"
        else:
            prompt.placeholder = "Waiting for the engine: type now, send when it is ready"

    # -- sending ----------------------------------------------------------------------------

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if self.reply is not None:
            self.notify("A reply is still streaming: Esc stops it.", severity="warning")
            return
        if self.app.engine.state not in (EngineState.READY, EngineState.STOPPED):
            self.notify("The engine is not ready yet; your message stays in the box.")
            return
        if not event.value.strip():
            self.notify("The message is empty: type something to send.", severity="warning")
            return
        try:
            sampling = self._sampling()
        except SageError as err:
            self.notify(str(err), severity="error", markup=False)
            return
        self.session.system_prompt = self.query_one("#chat-system", Input).value.strip()
        self.send(event.value, sampling)

    def _sampling(self) -> Sampling:
        def number(widget_id: str, kind: type, label: str) -> float:
            raw = self.query_one(widget_id, Input).value.strip()
            try:
                return kind(raw)
            except ValueError:
                raise SageError(f"{label} {raw!r} is not a number") from None

        return Sampling(
            temperature=number("#chat-temperature", float, "temperature"),
            top_p=number("#chat-top-p", float, "top-p"),
            max_tokens=int(number("#chat-max-tokens", int, "max tokens")),
        ).check()

    @work(exclusive=True, group="chat-reply", exit_on_error=False, description="chat reply")
    async def send(self, text: str, sampling: Sampling) -> None:
        """Send `text`, then stream the reply into the transcript."""
        try:
            reply = await self.session.send(text, sampling)
        except SageError as err:
            self.notify(str(err), title="Not sent", severity="error", markup=False)
            return
        except Exception as err:  # an engine that fails in its own way: say so, keep the text
            self.notify(describe_error(err), title="Not sent", severity="error", markup=False)
            return
        self.reply = reply
        self.query_one("#chat-input", Input).value = ""
        transcript = self.query_one("#chat-transcript", VerticalScroll)
        answer = ChatMessage("assistant", author=reply.stats.model)
        await transcript.mount_all([ChatMessage("user", text.strip()), answer])
        transcript.scroll_end(animate=False)
        stream = Markdown.get_stream(answer.body)
        shown = VisibleStream()  # the reply's own text is kept in `parts`; this is what shows
        parts: list[str] = []
        saved_at, ended = monotonic(), False
        try:
            async for piece in reply:
                parts.append(piece)
                await stream.write(shown.feed(piece))
                transcript.scroll_end(animate=False)
                if monotonic() - saved_at >= DRAFT_SAVE_SECONDS:
                    # What is shown is saved as it comes: a killed studio loses a second of it.
                    await asyncio.to_thread(self.session.save_draft, "".join(parts))
                    saved_at = monotonic()
            await stream.write(shown.end())
            ended = True
        except EngineStopped as err:
            ended = True
            # What arrived is kept and saved; the engine is loaded again on the next message.
            await self.app.studio.engine.check_health()
            self.notify(
                f"{err}. The reply was cut off; send again (or ctrl+r) to reload the engine.",
                title="Engine stopped",
                severity="error",
                markup=False,
            )
        finally:
            await stream.stop()
            self.reply = None
            answer.text = "".join(parts)
            if ended:
                answer.show_stats(describe_stats(stats_figures(reply.stats)))
                await asyncio.to_thread(self.session.finish, answer.text, reply.stats)
            else:  # cancelled: the studio is closing (quit, hung up) in the middle of it
                await asyncio.to_thread(self.session.cut_off, answer.text)

    @on(Markdown.LinkClicked)
    def _link_clicked(self, event: Markdown.LinkClicked) -> None:
        # A reply can hold any link: a click only says where it goes.
        event.stop()
        self.link = event.href
        self.notify(f"{event.href}\nctrl+l opens it in the browser.", title="Link")

    def action_open_link(self) -> None:
        """Open the last link clicked in a message (web links only)."""
        if self.link is None:
            self.notify("Click a link in a message first; ctrl+l then opens it.")
            return
        if urlsplit(self.link).scheme.lower() not in OPENED_SCHEMES:
            self.notify(
                f"Not opened: {self.link} is not a web link (http, https or mailto).",
                severity="warning",
            )
            return
        self.app.open_url(self.link)

    def action_reload_engine(self) -> None:
        """Load the active model again (after the engine stopped or failed)."""
        if self.app.engine.state is EngineState.LOADING:
            self.notify("The engine is loading already.")
            return
        self.app.reload_engine()

    async def action_stop(self) -> None:
        """Stop the reply being generated (what arrived so far is kept)."""
        if self.reply is not None:
            await self.app.studio.engine.manager.abort(self.reply.request_id)

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard (OSC 52 works over SSH)."""
        replies = self.query(".chat-message.-assistant").results(ChatMessage)
        last = next(reversed(list(replies)), None)
        if last is None:
            self.notify("There is no reply to copy yet.")
            return
        self.app.copy_to_clipboard(last.text)
        self.notify(f"Copied {len(last.text)} characters.")

    # -- conversations ----------------------------------------------------------------------

    async def action_new_conversation(self) -> None:
        """An empty conversation; the previous one stays saved."""
        await self.action_stop()
        self.session.new()
        await self.query_one("#chat-transcript").remove_children()
        self.query_one("#chat-input", Input).focus()

    def action_toggle_conversations(self) -> None:
        """Show or hide the saved conversations."""
        listing = self.query_one("#chat-conversations", ListView)
        listing.display = not listing.display
        if listing.display:
            self.load_conversations()
            listing.focus()
        else:
            self.query_one("#chat-input", Input).focus()

    @work(thread=True, exclusive=True, group="chat-list", exit_on_error=False, description="chats")
    def load_conversations(self) -> None:
        """Read saved conversations off the event loop."""
        records = self.session.conversations.recent()
        self.app.call_from_thread(self._fill_conversations, records)

    async def _fill_conversations(self, records: list[ConversationRecord]) -> None:
        listing = self.query_one("#chat-conversations", ListView)
        await listing.clear()
        for record in records:
            when = datetime.fromtimestamp(record.updated_at).strftime("%m-%d %H:%M")
            mark = f"[{len(record.models)} side by side] " if record.models else ""
            item = ListItem(Label(plain(f"{when}  {mark}{record.title or '(untitled)'}")))
            item.conversation_id = record.id
            item.compared = bool(record.models)
            await listing.append(item)
        listing.index = 0 if records else None

    @on(ListView.Selected, "#chat-conversations")
    def _conversation_chosen(self, event: ListView.Selected) -> None:
        if event.item.compared:  # held in compare mode: it reopens there, in its panes
            self.query_one("#chat-conversations").display = False
            self.app.open_compare(conversation_id=event.item.conversation_id)
            return
        self.open_conversation(event.item.conversation_id)

    @work(exclusive=True, group="chat-reply", exit_on_error=False, description="open chat")
    async def open_conversation(self, conversation_id: int) -> None:
        """Show a saved conversation and continue it."""
        await self.action_stop()
        messages = await asyncio.to_thread(self.session.open, conversation_id)
        self.query_one("#chat-system", Input).value = self.session.system_prompt
        await self._show(messages)
        self.query_one("#chat-conversations").display = False
        self.query_one("#chat-input", Input).focus()

    async def _show(self, messages: list[MessageRecord]) -> None:
        transcript = self.query_one("#chat-transcript", VerticalScroll)
        await transcript.remove_children()
        await transcript.mount_all(
            [
                ChatMessage(
                    m.role,
                    m.content,
                    author=m.model or "",
                    stats=describe_stats(m.stats) if m.role == "assistant" else "",
                )
                for m in messages
            ]
        )
        transcript.scroll_end(animate=False)


def _engine_notice(engine: EngineStatus, provisioning: str) -> str:
    """The line above the chat input while the engine cannot answer."""
    if engine.state is EngineState.LOADING:
        elapsed = monotonic() - engine.since
        return f"Loading the engine ({elapsed:.0f} s): {engine.detail or engine.model}"
    if engine.state is EngineState.FAILED:
        return f"The engine could not start: {engine.error}. ctrl+r tries again."
    if engine.state is EngineState.STOPPED:
        return f"The engine stopped: {engine.error}. Send a message or press ctrl+r to reload it."
    if provisioning:
        return f"Preparing the built-in model: {provisioning}"
    return "No model is active: choose one on the Models screen (F2)."
