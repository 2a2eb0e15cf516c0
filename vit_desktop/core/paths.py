"""Finding the images to classify: files as given and the images inside folders.

The command line and the window both walk folders with :func:`iter_image_paths`: files
named on purpose are kept whatever their extension (the loader will say what is wrong);
inside folders only image names are taken, sorted, and a symlink loop is never followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .images import is_image_path


def iter_image_paths(paths: Sequence[str], recursive: bool = True,
                     cancel: Callable[[], bool] | None = None) -> Iterator[str]:  # fmt: skip
    """Files as given and the images inside folders (walked into sub-folders when
    ``recursive``), streamed: a folder of millions is never held in one list.  ``cancel``
    is checked before each folder is read (a tree with few images stops promptly too)."""
    for raw in paths:
        if cancel is not None and cancel():
            return
        if Path(raw).is_dir():
            yield from _walk(Path(raw), recursive, cancel)
        else:
            yield raw


def _walk(root: Path, recursive: bool, cancel: Callable[[], bool] | None = None) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        if cancel is not None and cancel():
            return
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:  # a symlink that loops: the loader will say so, not silence
                is_dir = False
            if is_dir:
                if recursive:
                    subdirs.append(Path(e.path))
            elif is_image_path(e.name):
                yield e.path
        stack.extend(reversed(subdirs))
