"""The built-in model families.  Importing this package registers each of them with
:mod:`vit_desktop.core.architectures`, in the order below (the order they are tried and
named in messages); :mod:`..checkpoints` and :mod:`..loading` import it.  A new family is
one more module here and one more import line."""

from __future__ import annotations

from . import torchvision_vit

# isort: split
from . import minivit

# isort: split
from . import timm_vit

# isort: split
from . import hf_vit

# isort: split
from . import vit_pytorch

# isort: split
from . import taught

__all__ = ["hf_vit", "minivit", "taught", "timm_vit", "torchvision_vit", "vit_pytorch"]
