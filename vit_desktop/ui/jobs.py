"""The one job contract of the worker: long work (a weights download, a web fetch, a folder
run, a slow class-specific map or faithfulness score) reports progress, can be cancelled
and says when it finished — all through one frozen :class:`JobUpdate` on one signal,
whatever the job is.

Cancel is counted, not a flag: a press cancels the work that started before it; work
queued later is not affected.  The app closing cancels everything.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace


class JobKind(enum.Enum):
    DOWNLOAD = "download"
    FETCH = "fetch"
    FOLDER = "folder"
    WALK = "walk"
    EXPLAIN = "explain"  # a class-specific map or a faithfulness score
    TEACH = "teach"  # teaching a classifier (File › New Classifier…)


@dataclass(frozen=True)
class JobUpdate:
    """Where one job stands: progress (``total`` 0 = unknown), then one last update with
    ``finished`` set (and ``cancelled`` or ``error`` when it did not complete)."""

    job: int
    kind: JobKind
    generation: int  # the model generation it was started for
    done: int = 0
    total: int = 0
    text: str = ""
    finished: bool = False
    cancelled: bool = False
    error: str = ""


class Cancels:
    """Cancel presses and the app's closing, safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._presses = 0
        self.closing = threading.Event()

    def press(self) -> None:
        with self._lock:
            self._presses += 1

    def close(self) -> None:
        self.closing.set()
        self.press()

    def check(self) -> Callable[[], bool]:
        """A check for work starting now: true once Cancel is pressed or the app closes."""
        mark = self._presses
        return lambda: self._presses != mark or self.closing.is_set()


_ids = itertools.count(1)


def new_job_id() -> int:
    """A fresh job number (the window names the jobs it asks for, so it shows them at once)."""
    return next(_ids)


class Job:
    """One piece of long work; ``emit`` is the worker's ``jobUpdate`` signal's emit."""

    def __init__(self, kind: JobKind, generation: int, cancels: Cancels, emit: Callable[[JobUpdate], None],
                 job_id: int | None = None, cancelled: Callable[[], bool] | None = None) -> None:  # fmt: skip
        """``cancelled``: the cancel check taken when the job was asked for (a press after
        the request cancels it even before the worker starts it); by default, now."""
        self.state = JobUpdate(job_id or new_job_id(), kind, generation)
        self.cancelled = cancelled or cancels.check()
        self._emit = emit

    def progress(self, done: int, total: int, text: str) -> None:
        self.state = replace(self.state, done=done, total=max(0, total), text=text)
        self._emit(self.state)

    def finish(self, cancelled: bool = False, error: str = "") -> None:
        if self.state.finished:
            return
        self.state = replace(self.state, finished=True, cancelled=cancelled, error=error)
        self._emit(self.state)
