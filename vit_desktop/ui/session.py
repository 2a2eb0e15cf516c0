"""The window's session, free of Qt: the images it holds, the one on screen, which model
generation results belong to (latest wins), which images keep their screen copy (and
whether it is a draft decode's, waiting for its sharp copy), and which go to a detail run
or to a background folder job.

The window asks the session what to do and tells it what happened; the session never
draws and never talks to the worker, so every rule here is tested headless
(tests/ui/test_session.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.results import ClassificationResult
from ..core.sources import FileSource, Source
from ..core.text import display

#: Images kept in full (screen copy, queries and keys); older ones are run again when shown.
KEEP_DETAILED = 8


@dataclass
class Item:
    key: Hashable  # a file's path (may hold undecodable bytes), a web link, or "pasted:N"
    label: str  # what the gallery shows (one line, escapes for odd bytes)
    source: Source
    row: int  # the gallery row
    display: Any = None  # the screen copy (the window's image object; opaque here)
    result: ClassificationResult | None = None
    error: str | None = None
    detailed: bool = False  # full attention and the screen copy are here
    detail_gen: int = -1  # the model generation a full request was last sent for
    sharp: bool = False  # the screen copy is the sharp one (not a draft decode's) of the file as added
    sharp_asked: int = 0  # the request number of the sharp copy asked for (0: none)
    drawing: Any = None  # the result's overlay and per-head maps, drawn by the worker (outcome.Drawing)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def record(self) -> dict:
        """The export record: the command line's fields, or ``{"path", "error"}``."""
        if self.result is not None:
            return self.result.to_dict()
        return {"path": self.key if isinstance(self.key, str) else str(self.key), "error": self.error or ""}


@dataclass(frozen=True)
class Plan:
    """Where newly added images go: ``detail`` now (the one on screen), the files to one
    background ``folder`` job, and the other sources (web links, image data) one by one."""

    detail: tuple[Hashable, ...] = ()
    folder: tuple[str, ...] = ()
    singles: tuple[Hashable, ...] = ()


@dataclass
class Session:
    items: dict[Hashable, Item] = field(default_factory=dict)
    keys: list[Hashable] = field(default_factory=list)  # by gallery row
    current: Hashable | None = None
    model_generation: int = 0  # results of older generations are dropped
    model_ready: bool = False
    detail_seq: int = 0  # moving through the gallery: only the latest full request runs
    _generations: int = 0
    _pasted: int = 0
    _detailed_order: list[Hashable] = field(default_factory=list)  # most recently shown last

    # -- adding images ---------------------------------------------------------------------
    def add(self, entries: list[tuple[Hashable, str, Source]],
            make_current: bool = True) -> tuple[list[Item], list[Hashable]]:  # fmt: skip
        """Add (or reset, when already there) images; returns (the new items, every key
        added) — the first becomes the current image when ``make_current``."""
        created, keys = [], []
        for key, label, source in entries:
            item = self.items.get(key)
            if item is None:
                item = Item(key, display(label), source, row=len(self.keys))
                self.keys.append(key)
                self.items[key] = item
                created.append(item)
            item.result, item.error, item.detailed, item.detail_gen = None, None, False, -1
            item.drawing = None
            item.sharp, item.sharp_asked = False, 0  # the file may have changed: its copy is redone
            keys.append(key)
        if keys and (make_current or self.current is None):
            self.current = keys[0]
        return created, keys

    def next_pasted(self, label: str) -> tuple[str, str]:
        self._pasted += 1
        return f"pasted:{self._pasted}", label if self._pasted == 1 else f"{label} {self._pasted}"

    def plan(self, keys: list[Hashable]) -> Plan:
        """What to run for ``keys`` once the model is ready (nothing before)."""
        if not self.model_ready or not keys:
            return Plan()
        detail = (self.current,) if self.current in keys else ()
        folder = tuple(k for k in keys if k != self.current and isinstance(self.items[k].source, FileSource))
        singles = tuple(k for k in keys if k != self.current and k not in folder)
        return Plan(detail, folder, singles)

    def waiting(self) -> list[Hashable]:
        """Images with neither a result nor an error."""
        return [k for k, i in self.items.items() if not i.done]

    # -- generations -------------------------------------------------------------------------
    def next_generation(self) -> int:
        """A new model generation: results of the older ones are stale from now on."""
        self._generations += 1
        self.model_generation = self._generations
        self.model_ready = False
        return self.model_generation

    def model_loaded(self) -> None:
        """A new model: every image runs again."""
        self.model_ready = True
        self.forget_details()

    def forget_details(self) -> None:
        for item in self.items.values():
            item.detailed, item.detail_gen = False, -1

    def stale(self, generation: int) -> bool:
        return generation < self.model_generation

    def detail_request(self, key: Hashable, latest_wins: bool = True) -> int | None:
        """The request number for a full run of ``key`` (0: always wanted), or None when
        one is already asked for with this model or no model is ready."""
        item = self.items[key]
        if item.detail_gen == self.model_generation or not self.model_ready:
            return None
        item.detail_gen = self.model_generation
        if not latest_wins:
            return 0
        self.detail_seq += 1
        return self.detail_seq

    def dropped(self, generation: int, key: Hashable) -> str | None:
        """The worker skipped a full request (a newer one replaced it): "detail" to ask
        again now (it is on screen), "background" to run it unseen, or None."""
        item = self.items.get(key)
        if item is None or self.stale(generation) or item.detailed:
            return None
        item.detail_gen = -1
        if key == self.current:
            return "detail"
        return None if item.done else "background"

    # -- the screen copy: a draft first, then the sharp one ----------------------------------
    def take_display(self, item: Item, display: Any, draft: bool) -> None:
        """A full result's screen copy (``draft``: from the model's reduced decode).  A draft
        never replaces the sharp copy of the same file (a new model's result, say)."""
        if draft and item.sharp and item.display is not None:
            return
        item.display, item.sharp = display, not draft

    def sharp_request(self, key: Hashable) -> int | None:
        """The request number for the sharp copy of ``key`` while it is shown from a draft
        (it takes part in "latest wins" with full requests), or None when it needs none or
        one is already asked for."""
        item = self.items.get(key)
        if (item is None or item.display is None or item.sharp or item.sharp_asked or not item.detailed
                or item.error is not None):  # fmt: skip
            return None
        self.detail_seq += 1
        item.sharp_asked = self.detail_seq
        return item.sharp_asked

    def sharp_arrived(self, key: Hashable, seq: int, display: Any) -> Item | None:
        """The worker's answer to sharp request ``seq``: the item when ``display`` (the sharp
        copy) took the draft's place; None when it was skipped, or is not the latest asked for
        (the file was added again, or its copy dropped meanwhile)."""
        item = self.items.get(key)
        if item is None or not seq or item.sharp_asked != seq:
            return None
        item.sharp_asked = 0
        if display is None:
            return None  # skipped: asked again when the image is shown again
        item.display, item.sharp = display, True
        return item

    # -- results ---------------------------------------------------------------------------
    def accept(self, generation: int, key: Hashable, result: ClassificationResult, detailed: bool,
               drawing: Any = None) -> Item | None:  # fmt: skip
        """Store a result (and the worker's ``drawing`` of it); None when it is stale or a
        lighter folder result would replace a full one."""
        item = self.items.get(key)
        if item is None or self.stale(generation):
            return None
        if item.detailed and not detailed:
            return None
        item.result, item.error, item.detailed, item.drawing = result, None, detailed, drawing
        return item

    def fail(self, generation: int, key: Hashable, message: str) -> Item | None:
        item = self.items.get(key)
        if item is None or self.stale(generation):
            return None
        item.result, item.error, item.drawing = None, message, None  # never an older model's answer
        return item

    def keep_detailed(self, key: Hashable) -> list[Item]:
        """Memory stays bounded however many images the session sees: beyond the last
        KEEP_DETAILED shown in full, an image keeps its predictions, CLS attention and
        thumbnail, and is run again in full when shown again.  Returns the evicted items."""
        order = self._detailed_order
        if key in order:
            order.remove(key)
        order.append(key)
        excess = [k for k in order if k != self.current][: max(0, len(order) - KEEP_DETAILED)]
        evicted = []
        for k in excess:  # the oldest first; the image on screen is never dropped
            order.remove(k)
            old = self.items.get(k)
            if old is None:
                continue
            old.display, old.detailed, old.detail_gen = None, False, -1
            old.sharp, old.sharp_asked, old.drawing = False, 0, None
            res = old.result
            if res is not None and res.attention is not None and res.attention.q is not None:
                light = dataclasses.replace(res.attention, q=None, k=None)
                old.result = dataclasses.replace(res, attention=light)
            evicted.append(old)
        return evicted

    def not_run(self) -> list[Item]:
        """Files a cancelled folder run did not reach."""
        return [i for i in self.items.values() if not i.done and isinstance(i.source, FileSource)
                and i.detail_gen != self.model_generation]  # fmt: skip

    # -- reading ---------------------------------------------------------------------------
    def item(self, key: Hashable | None) -> Item | None:
        return self.items.get(key) if key is not None else None

    @property
    def shown(self) -> Item | None:
        return self.item(self.current)

    def idle(self) -> bool:
        """The model is ready, every image has its result or its error, and no sharp copy
        is awaited."""
        return self.model_ready and all(i.done and not i.sharp_asked for i in self.items.values())

    def classified(self) -> int:
        return sum(i.result is not None for i in self.items.values())

    def records(self) -> Iterator[dict]:
        """Export records of every image that finished, in gallery order."""
        for key in self.keys:
            item = self.items[key]
            if item.done:
                yield item.record()
