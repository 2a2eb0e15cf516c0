"""Finding the images to classify: files as given and the images inside folders.

The command line and the window both walk folders with :func:`iter_image_paths`: files
named on purpose are kept whatever their extension (the loader will say what is wrong);
inside folders only image names are taken, sorted, and a symlink loop is never followed.
The command line's SOURCE arguments may also be list files and globs (:func:`iter_sources`).
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


# -- the command line's sources: folders, list files, globs -----------------------------------

#: A file named on the command line with one of these endings is a list of paths, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
_GLOB_CHARS = frozenset("*?[")


def is_list_file(path: str) -> bool:
    return path.lower().endswith(LIST_SUFFIXES) and not os.path.isdir(path)


def is_glob(source: str) -> bool:
    """A pattern for :func:`glob.iglob`: it has ``*``, ``?`` or ``[`` and is not a path that
    exists under that very name."""
    return bool(_GLOB_CHARS & set(source)) and not os.path.lexists(source)


def iter_sources(sources: Sequence[str], recursive: bool = False,
                 cancel: Callable[[], bool] | None = None) -> Iterator[str]:  # fmt: skip
    """Every image path the command line's SOURCE arguments name, streamed (millions of
    files are never held in one list):

    * a folder: the images inside it (:func:`iter_image_paths`);
    * a list file (``.txt``, ``.lst``, ``.list``): one path per line, a path relative to the
      list file's folder; blank lines and lines starting with ``#`` are skipped; a line that
      names a folder gives that folder's images;
    * a glob (``'photos/**/*.jpg'``, quoted so that the shell leaves it; ``**`` crosses
      folders): the image files it matches, in the order the file system lists them;
    * anything else: the file as given (the loader says what is wrong with it)."""
    for source in sources:
        if cancel is not None and cancel():
            return
        if is_glob(source):
            yield from _glob(source)
        elif is_list_file(source):
            for line in _list_lines(source):
                yield from iter_image_paths([line], recursive, cancel)
        else:
            yield from iter_image_paths([source], recursive, cancel)


def _glob(pattern: str) -> Iterator[str]:
    import glob

    for match in glob.iglob(pattern, recursive=True):
        if is_image_path(match) and not os.path.isdir(match):
            yield match


def _list_lines(list_file: str) -> Iterator[str]:
    """The paths a list file names, read as they are used (a list of ten million lines is
    never held whole).  Bytes that are not UTF-8 stay as they were, as in a file name."""
    base = os.path.dirname(list_file)
    with open(list_file, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for raw in f:
            line = raw.rstrip("\n").rstrip("\r")
            if line and not line.startswith("#"):
                yield os.path.join(base, line)
