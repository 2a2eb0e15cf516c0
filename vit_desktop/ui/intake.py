"""Getting images into the window: files and folders (walked), image data, web links
(fetched only after the person agrees), by drop, paste, the File menu or the command line."""

from __future__ import annotations

import os

from PySide6.QtGui import QGuiApplication

from ..core.sources import DataSource, FileSource, WebSource
from . import plain, transfer
from .walker import Walker


class Intake:
    def __init__(self, window) -> None:
        self.win = window
        self.walker = Walker(window.worker.worker.cancels, window)
        self.walker.found.connect(self._on_found)
        self.walker.jobUpdate.connect(window.on_job)
        self._walks: dict[int, tuple[bool, object]] = {}  # walk job → (added an image yet?, its cancel check)

    def add_paths(self, paths: list[str]) -> None:
        """Files and folders; folders are walked on a thread of their own and their images
        arrive in batches (the first one shown); many files run as a background job."""
        win = self.win
        models = [p for p in paths if transfer.is_model_path(p)]
        if models:  # a model file or folder is opened as the model, not classified
            win.load_model(os.path.abspath(models[0]))
            if len(models) > 1:
                win.status.say(
                    f"Opened {os.path.basename(os.path.normpath(models[0]))}: one model at a time", 8000
                )
            paths = [p for p in paths if p not in models]
            if not paths:
                return
        for p in paths:
            win.settings.add_recent(os.path.abspath(p))
        win.fill_recent()
        if any(os.path.isdir(p) for p in paths):
            job = self.walker.start(paths, win.session.model_generation)
            self._walks[job.state.job] = (False, job.cancelled)
            return
        self._add_files(paths, show=True)

    def _add_files(self, files: list[str], show: bool) -> None:
        self.win.add([(p, os.path.basename(p), FileSource(p)) for p in files], show=show)

    def _on_found(self, job: int, batch: list, ended: bool) -> None:
        if job not in self._walks:
            return
        added, cancelled = self._walks[job]
        if batch and not cancelled():  # batches already on their way when Cancel was pressed are dropped
            self._add_files(batch, show=not added)
            self._walks[job] = (True, cancelled)
        if ended:
            added, _ = self._walks.pop(job)
            if not added and not cancelled():
                self.win.status.say("No images found in what was opened", 8000)

    def add_image_data(self, image, label: str = "pasted image") -> None:
        key, label = self.win.session.next_pasted(label)
        self.win.add([(key, label, DataSource(image, label))])

    def add_urls(self, urls: list[str]) -> None:
        """Web links are fetched only after the person agrees (size cap, timeout, in the worker)."""
        from ..core.remote import MAX_BYTES, TIMEOUT_S, host_of

        # The host alone (a link's path or query may hold anything, a fake host included).
        hosts = sorted({host_of(u) for u in urls})
        what = "an image" if len(urls) == 1 else f"{len(urls)} images"
        text = (f"Fetch {what} from {', '.join(plain.shown(h, 80) for h in hosts[:3])}"
                f"{' and other sites' if len(hosts) > 3 else ''} and classify {'it' if len(urls) == 1 else 'them'}?"
                f"\n\nAt most {MAX_BYTES / 1e6:.0f} MB per image, {TIMEOUT_S:.0f} s timeout.")  # fmt: skip
        if not self.win.ask("Fetch from the web", text):
            self.win.status.say("Nothing was fetched", 4000)
            return
        self.win.add([(u, WebSource(u).name, WebSource(u)) for u in urls])

    def paste(self) -> None:
        if not self.accept(QGuiApplication.clipboard().mimeData()):
            self.win.status.say("The clipboard holds no image, path or web link", 5000)

    def accept(self, md) -> bool:
        payload = transfer.mime_payload(md)
        if payload.paths:
            self.add_paths(payload.paths)
        for img in payload.images:
            self.add_image_data(img)
        if payload.urls:
            self.add_urls(payload.urls)
        return bool(payload)

    # -- drag and drop (the window forwards its events) ----------------------------------------
    def drag_enter(self, event) -> None:
        ok, text = transfer.describe_drop(event.mimeData())
        self.win.view.set_drop_hint((ok, text))
        self.win.status.say(text, 4000)
        if ok:
            event.acceptProposedAction()
        else:
            event.ignore()

    def drag_leave(self) -> None:
        self.win.view.set_drop_hint(None)

    def drop(self, event) -> None:
        self.win.view.set_drop_hint(None)
        if self.accept(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()
