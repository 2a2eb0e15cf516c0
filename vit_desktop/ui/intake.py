"""Getting images into the window: files and folders (walked), image data, web links
(fetched only after the person agrees), by drop, paste, the File menu or the command line."""

from __future__ import annotations

import os

from PySide6.QtGui import QGuiApplication

from ..core.paths import iter_image_paths
from ..core.sources import DataSource, FileSource, WebSource
from . import transfer


class Intake:
    def __init__(self, window) -> None:
        self.win = window

    def add_paths(self, paths: list[str]) -> None:
        """Files and folders (walked); many files run as a background job."""
        win = self.win
        for p in paths:
            win.settings.add_recent(os.path.abspath(p))
        win.fill_recent()
        files = list(iter_image_paths(paths, recursive=True))
        if not files:
            win.status.say("No images found in what was opened", 8000)
            return
        win.add([(p, os.path.basename(p), FileSource(p)) for p in files])

    def add_image_data(self, image, label: str = "pasted image") -> None:
        key, label = self.win.session.next_pasted(label)
        self.win.add([(key, label, DataSource(image, label))])

    def add_urls(self, urls: list[str]) -> None:
        """Web links are fetched only after the person agrees (size cap, timeout, in the worker)."""
        from ..core.remote import MAX_BYTES, TIMEOUT_S, host_of

        what = urls[0] if len(urls) == 1 else f"{len(urls)} links from {host_of(urls[0])}"
        text = (f"Fetch {what} from the web and classify it?\n\nAt most {MAX_BYTES / 1e6:.0f} MB per image, "
                f"{TIMEOUT_S:.0f} s timeout.")  # fmt: skip
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
