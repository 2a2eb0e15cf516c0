"""A small typed wrapper around QSettings (created after the app's names are set)."""

from __future__ import annotations

import math

from PySide6.QtCore import QByteArray, QSettings

from ..core import defaults

MAX_RECENT = 10


def _flag(key: str, doc: str) -> property:
    """A yes/no setting (stored as "true"/"false", so any QSettings format reads it back)."""

    def get(self) -> bool:
        return self._get(key, "false", str) in ("true", "1", "True")

    def put(self, value: bool) -> None:
        self._s.setValue(key, "true" if value else "false")

    return property(get, put, doc=doc)


class Settings:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self._s = qsettings or QSettings()

    def _get(self, key: str, default, kind):
        value = self._s.value(key, default)
        try:
            return kind(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    @property
    def last_model(self) -> str | None:
        v = self._s.value("model/last")
        return str(v) if v else None

    @last_model.setter
    def last_model(self, value: str) -> None:
        self._s.setValue("model/last", value)

    @property
    def device(self) -> str:
        return self._get("model/device", "auto", str)

    @device.setter
    def device(self, value: str) -> None:
        self._s.setValue("model/device", value)

    fast = _flag("model/fast", "fast mode on")
    offer_dismissed = _flag("model/offer_dismissed", "the ViT-B/16 download offer dismissed for good")

    def _recent(self, key: str) -> list[str]:
        v = self._s.value(key, [])
        return [str(x) for x in ([v] if isinstance(v, str) else v or [])]

    def _add_recent(self, key: str, path: str) -> None:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes would be dropped: a wrong entry
            return
        items = [path] + [p for p in self._recent(key) if p != path]
        self._s.setValue(key, items[:MAX_RECENT])

    @property
    def recent_files(self) -> list[str]:
        return self._recent("files/recent")

    def add_recent(self, path: str) -> None:
        self._add_recent("files/recent", path)

    @property
    def recent_models(self) -> list[str]:
        """Model files opened lately (Model › Recent), newest first."""
        return self._recent("models/recent")

    def add_recent_model(self, path: str) -> None:
        self._add_recent("models/recent", path)

    def _fraction(self, key: str, default: float, top: float = 1.0) -> float:
        """A number in [0, top] (a hand-edited ini may hold anything, NaN included)."""
        value = self._get(key, default, float)
        return value if math.isfinite(value) and 0.0 <= value <= top else default

    def overlay(self) -> dict:
        return {
            "kind": self._get("overlay/kind", defaults.MAP_KIND, str),
            "fusion": self._get("overlay/fusion", defaults.MAP_FUSION, str),
            "discard": self._fraction("overlay/discard", defaults.MAP_DISCARD, 0.99),
            "opacity": self._fraction("overlay/opacity", defaults.OVERLAY_OPACITY),
            "cmap": self._get("overlay/cmap", defaults.OVERLAY_CMAP, str),
            "grid": self._get("overlay/grid", str(defaults.OVERLAY_GRID).lower(), str)
            in ("true", "1", "True"),
        }

    def set_overlay(self, **values) -> None:
        for k, v in values.items():
            self._s.setValue(f"overlay/{k}", v)

    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self._s.value("window/geometry"), self._s.value("window/state")

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self._s.setValue("window/geometry", geometry)
        self._s.setValue("window/state", state)

    def sync(self) -> None:
        self._s.sync()
