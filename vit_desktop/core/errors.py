"""Typed errors at the core boundary.

Each carries a message meant for a person: the UI and the command line show ``str(err)``
as one line; tracebacks go to the log file.
"""

from __future__ import annotations


class VitDesktopError(Exception):
    """Base class of every error the core raises on purpose."""

    def one_line(self) -> str:
        return " ".join(str(self).split())


class ImageLoadError(VitDesktopError):
    """A file could not be read as an image (missing, not an image, truncated, too large…)."""


class WeightsError(VitDesktopError):
    """Pretrained weights could not be provided."""


class OfflineError(WeightsError):
    """The weights are not on disk and the network cannot be reached."""


class ChecksumError(WeightsError):
    """A download did not match its published hash; nothing was cached."""


class CorruptCacheError(WeightsError):
    """A cached weights file failed its check; it was removed."""


class DownloadCancelled(WeightsError):
    """The person cancelled a download; the partial file was removed."""


class CheckpointError(VitDesktopError):
    """A local checkpoint could not be understood as a Vision Transformer."""


class DeviceError(VitDesktopError):
    """The requested device is not available."""


class ModelNotFoundError(VitDesktopError):
    """No catalog entry or file by that name."""


class OverlayError(VitDesktopError):
    """An overlay could not be drawn or saved."""
