"""Turn what a person names (a catalog id, a catalog entry, a checkpoint path) into a
:class:`LoadedModel`: the module with its preprocessing, labels and names, ready for
:func:`.classifier.load_classifier` to put on a device.

A catalog entry's module is built by its model family (:func:`.architectures.family_for_entry`)
from weights that are either shipped inside the package (the demo model) or downloaded and
hash-checked (:func:`.weights.ensure`); a checkpoint path goes through
:func:`.checkpoints.load_checkpoint`, which asks the family registry too.  Both read files
only through :mod:`.checkpoints`' safe readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn

from . import architectures, catalog, checkpoints, families, hub, weights  # noqa: F401 (families: registers them)
from .errors import CheckpointError, CorruptCacheError, VitDesktopError, WeightsError
from .preprocess import Preprocessing
from .safe_files import is_out_of_memory

#: File endings that make a model name a checkpoint path even when no such file exists yet
#: (so a typo in a path says "no such file" instead of "no model called …").
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


@dataclass(frozen=True)
class LoadedModel:
    """A model in CPU memory with what classifying needs: how to prepare its input, the names
    of its classes, its id (a catalog id or the checkpoint path) and the name a person sees."""

    module: nn.Module
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    model_id: str
    display_name: str


def load_model(model: str | os.PathLike[str] | catalog.ModelEntry = catalog.DEMO_ID, *,
               pretrained: bool = True, progress: weights.Progress | None = None,
               cancel: weights.Cancel | None = None, allow_download: bool = True,
               labels: str | os.PathLike[str] | None = None) -> LoadedModel:  # fmt: skip
    """The model named by a catalog id, a catalog entry, a checkpoint path or a Hugging Face
    model (``hf:ORG/NAME[@REVISION]``, :mod:`.hub`).

    ``pretrained=False`` builds a catalog entry's architecture with random weights.
    ``labels``: a labels file for a checkpoint (instead of the ones next to it)."""
    if isinstance(model, str) and hub.is_hub_id(model):
        return hub_model(model, progress, cancel, allow_download, labels)
    if isinstance(model, catalog.ModelEntry):
        entry: catalog.ModelEntry | None = model
    else:
        text = os.fspath(model)
        entry = None if looks_like_path(text) else catalog.get(text)
    if entry is None:
        from .teach import saved  # a taught classifier's file

        if saved.metadata(os.fspath(model)) is not None:
            module, pre, names, name = saved.load(os.fspath(model), build_entry_module, progress, cancel,
                                                  allow_download)  # fmt: skip
            return LoadedModel(module, pre, names, os.fspath(model), name)
        built = checkpoints.load_checkpoint(Path(os.fspath(model)), labels=labels)
        return LoadedModel(built.module, built.preprocessing, built.labels, os.fspath(model), built.name)
    module = build_entry_module(entry, pretrained, progress, cancel, allow_download)
    return LoadedModel(module, entry.preprocessing, entry.labels, entry.id, entry.display_name)


def hub_model(text: str, progress: weights.Progress | None = None, cancel: weights.Cancel | None = None,
              allow_download: bool = True, labels: str | os.PathLike[str] | None = None) -> LoadedModel:  # fmt: skip
    """A Hugging Face model: its snapshot in the Hugging Face cache (downloaded and verified
    when needed, :func:`.hub.fetch`), opened as a model folder by its family."""
    ref = hub.parse(text)
    folder = hub.fetch(ref, progress, cancel, allow_download)
    try:
        built = checkpoints.load_checkpoint(folder, display_name=ref.display, labels=labels)
    except CheckpointError as exc:  # it names the snapshot folder (a commit hash): name the model
        raise CheckpointError(f"{ref.display}: {str(exc).removeprefix(folder.name + ': ')}") from None
    return LoadedModel(built.module, built.preprocessing, built.labels, ref.text, built.name)


def build_entry_module(entry: catalog.ModelEntry, pretrained: bool = True,
                       progress: weights.Progress | None = None, cancel: weights.Cancel | None = None,
                       allow_download: bool = True) -> nn.Module:  # fmt: skip
    """The module of catalog entry ``entry``, built by its family: with the entry's weights
    (shipped in the package when it has no URL, else downloaded and hash-checked), or with
    random weights when ``pretrained`` is false."""
    family = architectures.family_for_entry(entry)
    assert family.build_entry is not None  # family_for_entry only returns families that build entries
    state = None
    if pretrained and entry.url is None:
        state = shipped_state(entry)
    elif pretrained:
        fetched = weights.ensure(entry, progress, cancel, allow_download=allow_download)
        state = cached_state(entry, fetched.path)
    try:
        return family.build_entry(entry, state)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
    raise WeightsError(f"not enough memory to build {entry.display_name}")


def shipped_state(entry: catalog.ModelEntry) -> architectures.StateDict:
    """The tensors of the weights file ``entry.filename`` installed in ``vit_desktop.resources``."""
    res = resources.files("vit_desktop.resources").joinpath(entry.filename or "")
    with resources.as_file(res) as path:
        if not entry.filename or not Path(path).is_file():
            raise WeightsError(f"the shipped weights {entry.filename} are missing from the installation")
        try:
            state, _ = checkpoints.read_state_dict(Path(path))
        except VitDesktopError as exc:
            raise WeightsError(f"the shipped weights of {entry.display_name} are damaged: {exc}") from None
    return checkpoints.strip_prefixes(state)


def cached_state(entry: catalog.ModelEntry, path: Path) -> architectures.StateDict:
    """The tensors of a downloaded weights file that passed its hash.  A file that will not
    load safely (refused or damaged) is removed and a :class:`CorruptCacheError` raised:
    the next use downloads it again."""
    try:
        obj = checkpoints.safe_torch_load(path)
    except checkpoints.SafeLoadError as exc:
        if exc.kind == "memory":
            raise WeightsError(f"not enough memory to load {entry.display_name}") from None
        if exc.kind == "io":
            raise WeightsError(f"the cached weights {path} could not be read ({exc.reason})") from None
        try:
            path.unlink()
        except OSError:
            pass
        why = "it holds Python objects, not only tensors" if exc.kind == "refused" else exc.reason
        raise CorruptCacheError(
            f"the cached weights {path} could not be loaded safely ({why}) and have been removed; "
            "download them again"
        ) from None
    try:
        return checkpoints.state_dict_of(obj, entry.filename or entry.id)
    except VitDesktopError as exc:
        raise WeightsError(f"{entry.display_name}: the weights do not fit the model ({exc})") from None


def looks_like_path(text: str) -> bool:
    """True when ``text`` names a file rather than a catalog id or a Hugging Face model
    (``hf:ORG/NAME``): it exists, ends in a checkpoint suffix, or holds a path separator."""
    if hub.is_hub_id(text):
        return False
    if os.path.exists(text):
        return True
    return text.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in text


def default_model_id() -> str:
    """ViT-B/16 when its weights are cached, else the shipped demo model."""
    try:
        entry = catalog.get(catalog.DEFAULT_IMAGENET_ID)
    except VitDesktopError:
        return catalog.DEMO_ID
    return entry.id if weights.is_downloaded(entry) else catalog.DEMO_ID
