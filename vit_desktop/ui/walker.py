"""Walking dropped folders off the GUI thread (dropping /usr must not freeze the window):
each walk is a job (:mod:`.jobs`) on a thread of its own — not the inference worker, which
may be busy loading a model — that hands the images it finds to the window in batches."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QObject, Signal

from ..logs import get_logger
from .jobs import Cancels, Job, JobKind, new_job_id

log = get_logger("walker")

BATCH = 2000  # paths per batch at most
BATCH_S = 0.25  # and a batch at least this often while images are found


class Walker(QObject):
    found = Signal(int, object, bool)  # job id, a batch of paths, whether the walk has ended
    jobUpdate = Signal(object)  # a jobs.JobUpdate (kind WALK)

    def __init__(self, cancels: Cancels, parent=None) -> None:
        super().__init__(parent)
        self.cancels = cancels

    def start(self, paths: list[str], generation: int) -> Job:
        """Walk ``paths`` (files as given, folders walked) in the background; returns the job
        (its ``cancelled`` check tells the window to ignore batches already on their way)."""
        job = Job(JobKind.WALK, generation, self.cancels, self.jobUpdate.emit, new_job_id())
        job.progress(0, 0, "Looking for images…")
        threading.Thread(target=self._walk, args=(job, list(paths)), name="folder-walk", daemon=True).start()
        return job

    def _walk(self, job: Job, paths: list[str]) -> None:
        from ..core.paths import iter_image_paths  # here, not at start-up (Pillow's plug-ins: ~80 ms)

        batch: list[str] = []
        n, last = 0, time.monotonic()
        try:
            for path in iter_image_paths(paths, recursive=True, cancel=job.cancelled):
                if job.cancelled():
                    break
                batch.append(path)
                n += 1
                if len(batch) >= BATCH or time.monotonic() - last > BATCH_S:
                    self.found.emit(job.state.job, batch, False)
                    job.progress(n, 0, f"Looking for images: {n} found")
                    batch, last = [], time.monotonic()
        except Exception:  # a walk never takes the window down; what was found stays
            log.exception("walking %d dropped paths failed", len(paths))
        finally:  # a cancelled walk hands nothing more over
            self.found.emit(job.state.job, [] if job.cancelled() else batch, True)
            job.finish(cancelled=job.cancelled())
