"""The Compare screen: one prompt answered by 2-4 models of one base side by side, or blind A/B.

The models are picked on the left (the base and its adapters: one engine serves them all, each
request with its own adapter, so nothing reloads). Each prompt streams into every pane at once;
a conversation is saved with which model said what and reopens from Chat's list (ctrl+o there).
In blind mode (ctrl+b, two models) the panes are A and B in a random order; one key votes, then
the names are shown and the leaderboard of their base (ctrl+t) counts the vote.
"""

from __future__ import annotations

import asyncio
import contextlib

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, SelectionList, Static

from sage_tui.core.chat import describe_stats, stats_figures
from sage_tui.core.engines.base import Sampling
from sage_tui.errors import SageError, describe_error
from sage_tui.studio import EngineState
from sage_tui.studio.arena import LEADERBOARD_HEADINGS, standing_cells
from sage_tui.studio.compare import Compared
from sage_tui.studio.compare_session import Turn
from sage_tui.ui.messages import ModelsChanged
from sage_tui.ui.plain_text import plain
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.widgets.chat_message import ChatMessage
from sage_tui.ui.widgets.compare_pane import ComparePane, VoteBar

FLUSH_SECONDS = 0.05
PICK_HINT = "Pick 2 to 4 models of one base (space toggles)."


def result_line(result: Compared) -> str:
    """The figures line under one pane's reply (or what went wrong)."""
    if result.error is not None:
        return f"{result.model} · failed: {result.error}"
    figures = stats_figures(result.stats) if result.stats else {"model": result.model}
    return describe_stats(figures)


class CompareScreen(StudioScreen):
    """Models side by side; Esc stops the replies, ctrl+b blind A/B, ctrl+t the leaderboard."""

    MODE = "compare"
    BINDINGS = [
        Binding("escape", "stop", "Stop replies", id="compare.stop"),
        Binding("ctrl+n", "new_conversation", "New", id="compare.new"),
        Binding("ctrl+b", "toggle_blind", "Blind A/B", id="compare.blind"),
        Binding("ctrl+t", "toggle_leaderboard", "Leaderboard", id="compare.leaderboard"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.session = self.app.studio.compare_session()
        self.base: str | None = None
        self.blind = False
        self.pending_vote: tuple[str, list[Compared]] | None = None
        """A blind turn answered and not voted on yet: its prompt and replies."""
        self.streaming = False
        self.turns = 0
        """Prompts answered (or refused) on this screen, for whoever waits for the next."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="compare-layout"):
            with Vertical(id="compare-side"):
                yield Label("Models", classes="compare-label")
                yield SelectionList[str](id="compare-models")
                yield Static(plain(PICK_HINT), id="compare-base")
            with Vertical(id="compare-main"):
                yield Horizontal(id="compare-panes")
                yield Label("Leaderboard", classes="compare-label", id="compare-board-label")
                yield DataTable(id="compare-leaderboard", cursor_type="row", zebra_stripes=True)
                yield VoteBar(id="compare-vote")
                yield Input(
                    placeholder="One prompt for every model (Enter sends)", id="compare-input"
                )

    def on_mount(self) -> None:
        self.query_one("#compare-vote").display = False
        self._show_leaderboard(False)
        self.query_one("#compare-leaderboard", DataTable).add_columns(*LEADERBOARD_HEADINGS)
        self.set_interval(FLUSH_SECONDS, self._flush)
        self.load_models(self.app.compare_request.models if self.app.compare_request else None)
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        request, self.app.compare_request = self.app.compare_request, None
        if request is not None and request.conversation_id is not None:
            self.open_conversation(request.conversation_id)
        elif request is not None:
            self.load_models(request.models)
        self.query_one("#compare-input", Input).focus()

    @on(ModelsChanged)
    def _models_changed(self) -> None:
        self.load_models(None)

    # -- choosing the models ---------------------------------------------------------------

    @work(
        thread=True,
        exclusive=True,
        group="compare-models",
        exit_on_error=False,
        description="models",
    )
    def load_models(self, chosen: list[str] | None) -> None:
        """Read the registered models off the event loop; select `chosen` (or keep the
        current choice)."""
        names = [record.name for record in self.app.studio.models.list()]
        self.app.call_from_thread(self._fill_models, names, chosen)

    def _fill_models(self, names: list[str], chosen: list[str] | None) -> None:
        listing = self.query_one("#compare-models", SelectionList)
        keep = chosen if chosen is not None else list(listing.selected) or self.session.models
        with listing.prevent(SelectionList.SelectedChanged):
            listing.clear_options()
            listing.add_options([(plain(name), name, name in keep) for name in names])
        self.choose()

    @on(SelectionList.SelectedChanged, "#compare-models")
    def _picked(self) -> None:
        self.choose()

    def chosen(self) -> list[str]:
        """The picked models in list order."""
        listing = self.query_one("#compare-models", SelectionList)
        picked = set(listing.selected)
        return [
            listing.get_option_at_index(i).value
            for i in range(listing.option_count)
            if listing.get_option_at_index(i).value in picked
        ]

    @work(exclusive=True, group="compare-choose", exit_on_error=False, description="compare")
    async def choose(self) -> None:
        """Check the picked models together and lay out their panes."""
        names = self.chosen()
        line = self.query_one("#compare-base", Static)
        same = set(names) == set(self.session.models) and self.blind == bool(self.session.blind)
        if same and self.base is not None and self.panes:
            return  # the same models: the conversation goes on
        if len(names) < 2:
            line.update(plain(PICK_HINT))
            self.base = None
            await self._lay_out([])
            return
        try:
            self.base = await asyncio.to_thread(self.session.choose, names, self.blind)
        except SageError as err:
            self.base = None
            line.update(plain(str(err), style="bold red"))
            await self._lay_out([])
            return
        mode = "blind A/B: the names show after your vote" if self.blind else "side by side"
        line.update(plain(f"{len(names)} models of {self.base}, {mode}"))
        self.pending_vote = None
        self.query_one("#compare-vote").display = False
        await self._lay_out(self.session.pane_names())
        self.refresh_leaderboard()

    async def _lay_out(self, titles: list[str]) -> None:
        panes = self.query_one("#compare-panes", Horizontal)
        await panes.remove_children()
        await panes.mount_all([ComparePane(title) for title in titles])

    @property
    def panes(self) -> list[ComparePane]:
        return list(self.query(ComparePane).results(ComparePane))

    async def _flush(self) -> None:
        for pane in self.panes:
            await pane.flush()

    def action_toggle_blind(self) -> None:
        """Blind A/B on two models, or back to side by side."""
        self.blind = not self.blind
        if self.blind and len(self.chosen()) != 2:
            self.notify("Blind A/B compares two models: pick two.")
        self.choose()

    # -- a turn ----------------------------------------------------------------------------

    @on(Input.Submitted, "#compare-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if self.streaming:
            self.notify("The replies are still streaming: Esc stops them.", severity="warning")
            return
        if self.base is None:
            self.notify(self.query_one("#compare-base", Static).content.plain or PICK_HINT)
            return
        if self.app.engine.state is EngineState.LOADING:
            self.notify("The engine is loading; your prompt stays in the box.")
            return
        if not event.value.strip():
            self.notify("The prompt is empty: type something to send.", severity="warning")
            return
        if self.pending_vote is not None:
            self.notify("The last blind pair was not voted on; it is left out.")
        self.send(event.value.strip())

    @work(exclusive=True, group="chat-reply", exit_on_error=False, description="compare replies")
    async def send(self, text: str) -> None:
        """Send `text` to every model and stream the replies into their panes."""
        self.streaming = True
        self.pending_vote = None
        self.query_one("#compare-vote").display = False
        self.query_one("#compare-input", Input).value = ""
        panes = self.panes
        try:
            # Blind: a new random order for this prompt (the pane titles stay A and B).
            for pane, author in zip(panes, self._authors(), strict=False):
                pane.set_title(author)
                await pane.start_turn(text, author)
            results = await self.session.send(
                text, Sampling(), lambda index, piece: panes[index].feed(piece)
            )
        except SageError as err:
            self.notify(str(err), title="Not sent", severity="error")
            self.query_one("#compare-input", Input).value = text
            for pane in panes:
                await pane.end_turn("", "not sent")
            return
        except Exception as err:  # an engine failing in its own way: say so, keep the text
            self.notify(describe_error(err), title="Not sent", severity="error")
            return
        finally:
            self.streaming = False
            self.turns += 1
        for pane, result in zip(panes, results, strict=True):
            line = result_line(result)
            if self.session.blind is not None:
                line = line.replace(result.model, "", 1).lstrip(" ·")
            await pane.end_turn(result.text, line)
        if self.session.blind is not None:
            self.pending_vote = (text, results)
            vote = self.query_one("#compare-vote", VoteBar)
            vote.display = True
            vote.focus()

    def _authors(self) -> list[str]:
        return ["A", "B"] if self.session.blind is not None else list(self.session.models)

    async def action_stop(self) -> None:
        """Stop every reply streaming (what arrived is kept)."""
        await self.session.stop()

    async def action_new_conversation(self) -> None:
        """Empty panes with the same models; the conversation so far stays saved."""
        await self.session.stop()
        self.session.new()
        for pane in self.panes:
            await pane.transcript.remove_children()
        self.query_one("#compare-input", Input).focus()

    # -- the blind vote --------------------------------------------------------------------

    @on(VoteBar.Cast)
    def _vote_cast(self, message: VoteBar.Cast) -> None:
        if self.pending_vote is None:
            self.notify("Nothing to vote on: send a prompt in blind mode first.")
            return
        self.cast_vote(message.verdict)

    @work(
        thread=True, exclusive=True, group="compare-vote", exit_on_error=False, description="vote"
    )
    def cast_vote(self, verdict) -> None:
        """Store the vote, then show who was who."""
        prompt, results = self.pending_vote
        try:
            self.session.vote(prompt, results, verdict)
        except SageError as err:
            self.app.call_from_thread(self.notify, f"Vote not counted: {err}", severity="error")
            return
        self.app.call_from_thread(self._revealed)

    def _revealed(self) -> None:
        pair = self.session.blind
        self.pending_vote = None
        self.query_one("#compare-vote").display = False
        for pane, (side, model) in zip(
            self.panes, (("A", pair.model_a), ("B", pair.model_b)), strict=False
        ):
            pane.reveal(f"{side}: {model}")
            pane.set_title(f"{side}: {model}")
        self.notify(f"Vote counted. {pair.reveal()}.")
        self._show_leaderboard(True)
        self.refresh_leaderboard()
        self.query_one("#compare-input", Input).focus()

    # -- the leaderboard -------------------------------------------------------------------

    def action_toggle_leaderboard(self) -> None:
        """Show or hide the leaderboard of the picked models' base."""
        shown = not self.query_one("#compare-leaderboard").display
        self._show_leaderboard(shown)
        if shown:
            self.refresh_leaderboard()

    def _show_leaderboard(self, shown: bool) -> None:
        self.query_one("#compare-leaderboard").display = shown
        self.query_one("#compare-board-label").display = shown

    @work(
        thread=True,
        exclusive=True,
        group="compare-board",
        exit_on_error=False,
        description="leaderboard",
    )
    def refresh_leaderboard(self) -> None:
        """Read the votes of the picked base (every vote without one) off the event loop."""
        rows = [standing_cells(s) for s in self.app.studio.arena.stats(self.base)]
        self.app.call_from_thread(self._fill_leaderboard, rows)

    def _fill_leaderboard(self, rows: list[tuple[str, ...]]) -> None:
        table = self.query_one("#compare-leaderboard", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*(plain(cell) for cell in row))
        label = f"Leaderboard of {self.base}" if self.base else "Leaderboard"
        self.query_one("#compare-board-label", Label).update(
            plain(label if rows else f"{label}: no votes yet")
        )

    # -- a saved conversation --------------------------------------------------------------

    @work(exclusive=True, group="chat-reply", exit_on_error=False, description="open comparison")
    async def open_conversation(self, conversation_id: int) -> None:
        """Show a saved compare conversation in its panes and continue it."""
        await self.session.stop()
        try:
            turns = await asyncio.to_thread(self.session.open, conversation_id)
        except SageError as err:
            self.notify(str(err), title="Not opened", severity="error")
            return
        self.blind = False
        names = list(self.session.models)
        listing = self.query_one("#compare-models", SelectionList)
        with listing.prevent(SelectionList.SelectedChanged):
            listing.deselect_all()
            for name in names:
                # A model unregistered since is not in the list: its pane still shows.
                with contextlib.suppress(Exception):
                    listing.select(name)
        self.base = await asyncio.to_thread(self._base_or_none, names)
        line = (
            f"{len(names)} models of {self.base}, side by side"
            if self.base
            else ("A model of this conversation is no longer registered: pick others to go on")
        )
        self.query_one("#compare-base", Static).update(plain(line))
        await self._lay_out(names)
        for pane, name in zip(self.panes, names, strict=True):
            await pane.show(_pane_messages(turns, name))

    def _base_or_none(self, names: list[str]) -> str | None:
        try:
            return self.session.desk.base_for(names).name
        except SageError:
            return None


def _pane_messages(turns: list[Turn], model: str) -> list[ChatMessage]:
    """One model's side of saved turns: each prompt and its reply (if it gave one)."""
    shown: list[ChatMessage] = []
    for turn in turns:
        shown.append(ChatMessage("user", turn.prompt))
        reply = turn.replies.get(model)
        if reply is not None:
            shown.append(
                ChatMessage(
                    "assistant", reply.content, author=model, stats=describe_stats(reply.stats)
                )
            )
    return shown
