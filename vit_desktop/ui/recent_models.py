"""Model › Recent: the model files the window opened lately (checkpoints, classifiers taught
with File › New Classifier…), newest first; choosing one opens it again."""

from __future__ import annotations

import os

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMenu

from ..core.text import display


class RecentModels(QObject):
    def __init__(self, win) -> None:
        super().__init__(win)
        self.win = win
        self.menu = QMenu("&Recent", win)
        self.menu.setToolTipsVisible(True)
        self.model_menu = win.models.menus.model_menu
        # The model control fills the Model menu anew when the catalog arrives: put it back.
        self.model_menu.aboutToShow.connect(self.attach)
        win.worker.worker.catalogReady.connect(self.attach)
        win.modelReady.connect(self._on_ready)
        self.fill()

    def attach(self, *_) -> None:
        if self.menu.menuAction() not in self.model_menu.actions():
            self.model_menu.addMenu(self.menu)

    def _on_ready(self, model_id: str) -> None:
        if (
            isinstance(model_id, str)
            and (os.path.isabs(model_id) or os.sep in model_id)
            and os.path.exists(model_id)
        ):
            self.win.settings.add_recent_model(os.path.abspath(model_id))
            self.fill()

    def paths(self) -> list[str]:
        return self.win.settings.recent_models

    def fill(self) -> None:
        self.menu.clear()
        for path in self.paths():
            act = self.menu.addAction(display(os.path.basename(path) or path))
            act.setToolTip(display(path))
            act.setData(path)
            act.triggered.connect(lambda _=False, p=path: self.win.load_model(p))
        self.menu.setEnabled(bool(self.paths()))
