"""Why *this* class, in the window: the target class, the cache of class-specific maps and
faithfulness scores, and the requests to the worker.

* **The target** is per image and starts at its top-1 class.  A click on a prediction row
  (or a class chosen in the picker) makes it that class; when the Map shown is a
  class-agnostic one (which looks the same for every class), the Map switches to
  :data:`.methods.FIRST_CLASS_METHOD` (Relevance, Chefer et al.) so the click shows what it
  asks for.
* **Class-specific maps** are computed in the worker (:mod:`.explain_worker`), never here.
  Each is cached per image, class, method and controls (:class:`.methods.MapRequest`); the
  cache of an image goes with its result (a new model, a re-run, the image leaving the last
  :data:`.session.KEEP_DETAILED` shown in full), so going back to a class is instant and asks
  the worker nothing.  Requests are numbered: the latest wins.  While one computes, the
  overlay on screen stays; the status bar says "Computing …" after :data:`SAY_AFTER_MS`.
* **Faithfulness**: "Score this map" asks the worker for the deletion and insertion curves
  of the map on screen (any kind) for the target class; the answer is cached with the map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from . import plain
from .faithfulness_plot import FaithfulnessBox
from .methods import (
    FIRST_CLASS_METHOD,
    TITLES,
    ExplainFailure,
    MapAnswer,
    MapRequest,
    ScoreAnswer,
    ScoreRequest,
    is_class_specific,
)
from .panels import ViewSettings
from .session import KEEP_DETAILED, Item

SAY_AFTER_MS = 300


@dataclass
class ImageMaps:
    """What the window knows about one image's explanations, valid for ``result`` only."""

    result: object  # the ClassificationResult these belong to (compared by identity)
    target: int
    maps: dict[MapRequest, np.ndarray] = field(default_factory=dict)
    scores: dict[tuple, object] = field(default_factory=dict)
    failed: dict[MapRequest, str] = field(default_factory=dict)  # asked again only on a new choice


@dataclass(frozen=True, eq=False)
class _Asked:
    seq: int
    key: Hashable
    result: object
    what: object  # a MapRequest, or a score key

    def same(self, key: Hashable, result: object, what: object) -> bool:
        return self.key == key and self.result is result and self.what == what


class ExplainController(QObject):
    # generation, key, source, request number, MapRequest / ScoreRequest, cancel check
    requestMap = Signal(int, object, object, int, object, object)
    requestScore = Signal(int, object, object, int, object, object)
    mapArrived = Signal(object)  # a MapAnswer now in the cache
    scoreArrived = Signal(object)  # a ScoreAnswer now in the cache

    def __init__(self, win) -> None:
        super().__init__(win)
        self.win = win
        self.images: OrderedDict[Hashable, ImageMaps] = OrderedDict()
        self.names: tuple[str, ...] = ()  # the model's labels
        self._seq = 0
        self._pending: dict[int, _Asked] = {}  # maps and scores asked for, not answered yet
        self._latest: dict[str, _Asked | None] = {"map": None, "score": None}
        self._said = ""
        self._kind = win.attention.settings().kind
        runs = win.worker.worker.explainer
        self.runs = runs
        self.requestMap.connect(runs.explain)
        self.requestScore.connect(runs.score)
        runs.mapReady.connect(self._on_map)
        runs.scoreReady.connect(self._on_score)
        runs.failed.connect(self._on_failed)
        runs.labelsReady.connect(self._on_labels)
        self.box = FaithfulnessBox()
        win.attention.add_section(self.box)
        self.box.scoreRequested.connect(self.score)
        win.predictions.targetChosen.connect(self.choose)
        win.overlay.class_maps = self
        win.overlay.shown.connect(self._on_shown)
        win.attention.changed.connect(self._on_settings)  # after the overlay's redraw

    # -- the cache --------------------------------------------------------------------------
    def entry(self, item: Item | None) -> ImageMaps | None:
        res = item.result if item is not None else None
        if res is None:
            return None
        e = self.images.get(item.key)
        if e is None or e.result is not res:
            e = self.images[item.key] = ImageMaps(res, res.top1.index)
            self._prune(item.key)
        self.images.move_to_end(item.key)
        return e

    def _prune(self, keep: Hashable) -> None:
        """Forget images whose result is gone (evicted, re-run, another model), and all but
        the last KEEP_DETAILED."""
        session = self.win.session
        for k in [k for k, e in self.images.items() if k != keep
                  and (session.item(k) is None or session.item(k).result is not e.result)]:  # fmt: skip
            del self.images[k]
        while len(self.images) > KEEP_DETAILED:
            old = next(k for k in self.images if k != keep)
            del self.images[old]

    def target_of(self, item: Item | None) -> int | None:
        e = self.entry(item)
        return e.target if e is not None else None

    def request_of(self, s: ViewSettings, target: int) -> MapRequest:
        return MapRequest.of(s.kind, target, s.layer, s.fusion)

    # -- the overlay asks (OverlayPresenter.class_maps) ----------------------------------------
    def map_for(self, item: Item, s: ViewSettings) -> np.ndarray | None:
        """The cached map the panel asks for, else None (and it is asked for)."""
        e = self.entry(item)
        if e is None:
            return None
        req = self.request_of(s, e.target)
        grid = e.maps.get(req)
        if grid is None and req not in e.failed:
            self._ask_map(item, req)
        return grid

    def busy(self) -> bool:
        """A map or a score asked of the worker and not answered yet."""
        return bool(self._pending)

    def waiting(self, item: Item, s: ViewSettings) -> bool:
        e = self.entry(item)
        latest = self._latest["map"]
        return (e is not None and latest is not None and latest.seq in self._pending
                and latest.same(item.key, item.result, self.request_of(s, e.target)))  # fmt: skip

    def _ask_map(self, item: Item, req: MapRequest) -> None:
        latest = self._latest["map"]
        if latest is not None and latest.seq in self._pending and latest.same(item.key, item.result, req):
            return  # already on its way
        asked = self._ask("map", item, req)
        label = self._label(req.target)
        self.requestMap.emit(self.win.session.model_generation, item.key, item.source, asked.seq, req,
                             self.win.worker.worker.cancels.check())  # fmt: skip
        QTimer.singleShot(
            SAY_AFTER_MS, self, lambda: self._say(asked.seq, f"Computing {req.title} for {label}…")
        )

    def _ask(self, what: str, item: Item, thing: object) -> _Asked:
        self._seq += 1
        asked = _Asked(self._seq, item.key, item.result, thing)
        self._pending[asked.seq] = asked
        self._latest[what] = asked
        self.runs.bump(what, asked.seq)  # older requests of this kind are dropped by the worker
        return asked

    def _say(self, seq: int, text: str) -> None:
        """Say what computes, if it still does and is still wanted (the latest of its kind)."""
        if seq in self._pending and any(a is not None and a.seq == seq for a in self._latest.values()):
            self._said = plain.shown(text, 200)
            self.win.status.say(self._said, 60000)

    def _answered(self, seq: int) -> _Asked | None:
        """The request ``seq`` answered; the older ones were answered or dropped before it."""
        asked = self._pending.pop(seq, None)
        for s in [s for s in self._pending if s < seq]:
            del self._pending[s]
        if self._said and self.win.statusBar().currentMessage() == self._said and not self._pending:
            self.win.statusBar().clearMessage()
        if asked is None:
            return None
        item = self.win.session.item(asked.key)
        if item is None or item.result is not asked.result:
            return None  # the image was re-run or left: the answer belongs to nothing on hand
        return asked

    # -- answers ----------------------------------------------------------------------------
    def _on_map(self, gen: int, ans: MapAnswer) -> None:
        asked = self._answered(ans.seq)
        if asked is None or self.win.session.stale(gen):
            return
        item = self.win.session.item(asked.key)
        self.entry(item).maps[asked.what] = ans.grid_map
        if asked.key == self.win.current:
            self.win.overlay.redraw()
            self._refresh()
        self.mapArrived.emit(ans)

    def _on_score(self, gen: int, ans: ScoreAnswer) -> None:
        asked = self._answered(ans.seq)
        if asked is None or self.win.session.stale(gen):
            return
        self.entry(self.win.session.item(asked.key)).scores[asked.what] = ans.faithfulness
        self._refresh()
        self.scoreArrived.emit(ans)

    def _on_failed(self, gen: int, fail: ExplainFailure) -> None:
        asked = self._answered(fail.seq)
        if asked is None or self.win.session.stale(gen):
            return
        e = self.entry(self.win.session.item(asked.key))
        if fail.what == "map":
            e.failed[asked.what] = fail.message
            title = TITLES[asked.what.method]
            self.win.status.say(
                f"{title}: cancelled" if fail.cancelled else f"{title} failed: {fail.message}", 10000
            )
            self._refresh()
        elif asked is self._latest["score"]:
            self._refresh(note="Scoring cancelled" if fail.cancelled else f"Not scored: {fail.message}")

    def _on_labels(self, gen: int, names: tuple) -> None:
        if self.win.session.stale(gen):
            return
        self.names = tuple(str(n) for n in names)
        self.images.clear()
        self._pending.clear()

    # -- the person's choices ----------------------------------------------------------------
    def choose(self, index: int) -> None:
        """Explain class ``index`` for the image on screen (a row clicked, a class picked)."""
        item = self.win.session.shown
        e = self.entry(item)
        if e is None:
            return
        e.target = int(index)
        e.failed.clear()  # a choice asks again for what failed or was cancelled
        panel = self.win.attention
        if not is_class_specific(panel.settings().kind):
            panel.kind.setCurrentIndex(panel.kind.findData(FIRST_CLASS_METHOD))  # redraws
        else:
            self.win.overlay.redraw()
        self._refresh()

    def score(self) -> None:
        """Score the map on screen (any kind) for the target class, in the worker."""
        item = self.win.session.shown
        e = self.entry(item)
        grid = self.win.overlay.plain_map() if e is not None else None
        if grid is None:
            self.win.status.say("No map to score yet", 5000)
            return
        s = self.win.attention.settings()
        title = TITLES.get(s.kind) or self.win.attention.kind.currentText()
        asked = self._ask("score", item, self._score_key(s, e.target))
        baseline = next((f for f in e.scores.values() if f.target == e.target), None)  # its random curves
        req = ScoreRequest(np.array(grid, dtype=np.float32), e.target, title, baseline)
        self.requestScore.emit(self.win.session.model_generation, item.key, item.source, asked.seq, req,
                               self.win.worker.worker.cancels.check())  # fmt: skip
        QTimer.singleShot(SAY_AFTER_MS, self, lambda: self._say(asked.seq, f"Scoring the {title} map…"))
        self._refresh()

    @staticmethod
    def _score_key(s: ViewSettings, target: int) -> tuple:
        if is_class_specific(s.kind):
            return ("class", MapRequest.of(s.kind, target, s.layer, s.fusion))
        return ("attention", s.map_spec(), s.query, target)

    # -- what the panels show ----------------------------------------------------------------
    def _on_settings(self) -> None:
        kind = self.win.attention.settings().kind
        if kind != self._kind:  # choosing a method again asks again for what failed
            self._kind = kind
            e = self.images.get(self.win.current)
            if e is not None and e.failed:
                e.failed.clear()
                self.win.overlay.redraw()
        self._refresh()

    def _on_shown(self) -> None:
        item = self.win.overlay.item
        res = item.result if item is not None else None
        if res is not None:
            n = len(res.probs)
            self.win.predictions.set_class_names(tuple(self._label(j) for j in range(n)))
        self._refresh()

    def _label(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"class {index}"

    def _refresh(self, note: str = "") -> None:
        """The chosen row, the picker, the panel's target line and the faithfulness box."""
        item = self.win.overlay.item
        e = self.entry(item) if item is not None and item.detailed else None
        target = e.target if e is not None else None
        self.win.predictions.set_target(target)
        s = self.win.attention.settings()
        panel = self.win.attention
        if e is None:
            panel.set_target_note("")
            self.box.show_score(None, can_score=False)
            return
        label = self._label(target)
        if is_class_specific(s.kind):
            failed = e.failed.get(self.request_of(s, target))
            panel.set_target_note(f"Why “{label}”" + (f" — not computed: {failed}" if failed else ""))
        else:
            panel.set_target_note("The same for every class: click a prediction to explain one")
        key = self._score_key(s, target)
        latest = self._latest["score"]
        scoring = (
            latest is not None and latest.seq in self._pending and latest.same(item.key, item.result, key)
        )
        ready = e.maps.get(self.request_of(s, target)) is not None if is_class_specific(s.kind) else True
        self.box.show_score(e.scores.get(key), can_score=ready and not scoring,
                            note="Scoring…" if scoring else note)  # fmt: skip
