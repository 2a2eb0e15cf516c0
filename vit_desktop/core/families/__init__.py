"""The built-in model families.  Importing this package registers each of them with
:mod:`vit_desktop.core.architectures`, in the order below (the order they are tried and
named in messages); :mod:`..checkpoints` and :mod:`..loading` import it.  A new family is
one more module here and one more import line."""

from __future__ import annotations

from . import torchvision_vit

# isort: split
from . import minivit

__all__ = ["minivit", "torchvision_vit"]
