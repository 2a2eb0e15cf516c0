"""Where an image comes from: a file, a web link (fetched only after the person agrees) or
image data (a paste, a dragged picture).  Small typed values that cross threads as they
are — a file name that is not valid UTF-8 stays intact, nothing is encoded into strings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileSource:
    path: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path


@dataclass(frozen=True)
class WebSource:
    url: str

    @property
    def name(self) -> str:
        import urllib.parse

        parts = urllib.parse.urlsplit(self.url)
        return os.path.basename(parts.path) or parts.hostname or self.url


@dataclass(frozen=True, eq=False)
class DataSource:
    image: Any  # a PIL image
    name: str = "pasted image"


Source = FileSource | WebSource | DataSource
