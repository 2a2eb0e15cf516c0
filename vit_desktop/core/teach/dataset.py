"""A folder of examples: one sub-folder per class, any number of images in each.

:func:`scan` lists it (sorted, deterministic), hashes every file's content (the feature cache
key, and how duplicates are found) and says in one line what cannot be used: a folder that is
not there or has fewer than two classes with images.  What can be worked around is a warning
(:attr:`Examples.warnings`): an empty class folder (left out), a class with fewer than
:data:`FEW` images, the same image in two classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import VitDesktopError
from ..images import is_image_path
from ..text import display
from ..weights import sha256_file

#: A class with fewer images than this gets a warning (and k-fold cross-validation).
FEW = 5


class TeachError(VitDesktopError):
    """A classifier cannot be taught from what was given (one line saying why)."""


class TeachCancelled(TeachError):
    """Teaching was cancelled."""


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    digest: str  # SHA-256 of the file's bytes


@dataclass(frozen=True)
class Examples:
    root: str
    classes: tuple[str, ...]
    items: tuple[Example, ...]
    warnings: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]  # (path, why) of files that could not even be read

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for ex in self.items:
            out[self.classes[ex.label]] += 1
        return out


def _images_in(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and is_image_path(f)]
    return out


def scan(folder: str | os.PathLike[str], cancel: Callable[[], bool] | None = None,
         digests: bool = True) -> Examples:  # fmt: skip
    """The classes (sub-folders, sorted by name) and their images (also in deeper folders).
    ``digests=False``: a quick look (no file is read: no digests, no duplicate check)."""
    root = Path(folder)
    if not root.is_dir():
        raise TeachError(f"{display(str(root))}: no such folder")
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise TeachError(f"{display(str(root))}: cannot be read ({exc.strerror or exc})") from None
    warnings: list[str] = []
    found: list[tuple[str, list[Path]]] = []
    for sub in subs:
        try:
            images = _images_in(sub)
        except OSError as exc:
            warnings.append(f"class folder {sub.name!r} cannot be read ({exc.strerror or exc}): left out")
            continue
        if not images:
            warnings.append(f"class folder {sub.name!r} holds no images: left out")
            continue
        found.append((sub.name, images))
    if len(found) < 2:
        have = f"only {found[0][0]!r}" if found else "none"
        raise TeachError(
            f"{display(str(root))}: a classifier needs at least 2 class folders with images ({have}); "
            "put one sub-folder per class in it"
        )
    classes = tuple(name for name, _ in found)
    items: list[Example] = []
    unreadable: list[tuple[str, str]] = []
    first: dict[str, tuple[int, Path]] = {}
    for label, (name, images) in enumerate(found):
        for path in images:
            if cancel is not None and cancel():
                raise TeachCancelled("cancelled")
            if not digests:
                items.append(Example(str(path), label, ""))
                continue
            try:
                digest = sha256_file(path)
            except OSError as exc:
                unreadable.append((str(path), f"{path.name}: {exc.strerror or exc}"))
                continue
            other, other_path = first.setdefault(digest, (label, path))
            if other != label:
                warnings.append(f"{display(path.name)} in {name!r} is the same image as "
                                f"{display(other_path.name)} in {classes[other]!r}")  # fmt: skip
            items.append(Example(str(path), label, digest))
        if len(images) < FEW:
            warnings.append(f"class {name!r} has only {len(images)} image(s): {FEW} or more teach it better")
    return Examples(str(root), classes, tuple(items), tuple(warnings), tuple(unreadable))
