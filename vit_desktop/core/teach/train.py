"""Teach a classifier from a folder of examples: :func:`train` (the window and
``vit-desktop train`` both call it).

1. :func:`.dataset.scan` lists the classes and images;
2. :func:`.features.extract` runs the frozen backbone once per image (and per augmented copy),
   reusing what the cache holds;
3. the head is scored on images it was not taught on — a held-out split, or k-fold
   cross-validation when a class has too few images for one — then taught on every image;
4. the result is a :class:`.families.taught.TaughtViT`, saved by :mod:`.saved`.

Modes: ``linear`` (the default: the query token and the mean of the patch tokens of the last
block), ``multilayer`` (the same from the last :data:`MULTILAYER_BLOCKS` blocks) and
``finetune`` (the last ``Settings.blocks`` block(s), :data:`FINETUNE_BLOCKS` by default, trained
with the head for a few epochs).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ... import __version__
from ..classifier import Classifier, load_classifier
from ..families.taught import PARTS, FeatureSpec, TaughtViT, query_and_mean
from ..text import short_name
from . import heads
from .dataset import FEW, Example, Examples, TeachCancelled, TeachError, scan
from .features import FeatureCache, Item, extract
from .identity import BackboneId, backbone_identity

MODES = ("linear", "multilayer", "finetune")
MULTILAYER_BLOCKS = 4
FINETUNE_BLOCKS = 1
AUGMENT_COPIES = 4
#: A held-out split needs this many images in every class (else k-fold cross-validation).
SPLIT_MIN = 10

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Settings:
    folder: str
    backbone: str = "demo-shapes"
    mode: str = "linear"
    augment: bool = False
    val_split: float = 0.2
    seed: int = 0
    epochs: int = 12
    device: str = "cpu"
    blocks: int = FINETUNE_BLOCKS  # fine-tuned blocks (mode finetune)

    def check(self) -> None:
        if self.mode not in MODES:
            raise TeachError(f"unknown mode {self.mode!r} (choose {', '.join(MODES)})")
        if not 0.0 <= self.val_split < 1.0:
            raise TeachError(f"the validation share must be from 0 to below 1, not {self.val_split:g}")
        if self.epochs < 1:
            raise TeachError("fine-tuning needs at least one epoch")
        if self.blocks < 1:
            raise TeachError("fine-tuning needs at least one block")
        if not 0 <= self.seed < 2**63:
            raise TeachError(f"the seed must be a whole number from 0, not {self.seed}")


@dataclass(frozen=True)
class Misclassified:
    path: str
    true: str
    predicted: str
    confidence: float


@dataclass
class Taught:
    """A taught classifier and how well it did (``accuracy`` on images it was not taught on)."""

    settings: Settings
    classes: tuple[str, ...]
    counts: dict[str, int]
    accuracy: float | None
    per_class_accuracy: dict[str, float | None]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    evaluation: str
    misclassified: tuple[Misclassified, ...]
    warnings: tuple[str, ...]
    failures: dict[str, str]  # path → why it was left out
    seconds: float
    extracted: int  # images (and copies) run through the backbone; the rest came from the cache
    module: TaughtViT
    preprocessing: object
    backbone: BackboneId
    weight_decay: float
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    tuned_blocks: tuple[int, ...] = ()

    def report(self) -> dict:
        """The training report (``vit-desktop train``'s JSON; saved beside the model file)."""
        s = self.settings
        return {
            "classes": list(self.classes),
            "counts": self.counts,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion,
            "evaluation": self.evaluation,
            "misclassified": [vars(m) for m in self.misclassified],
            "warnings": list(self.warnings),
            "failures": [{"path": p, "error": e} for p, e in self.failures.items()],
            "seconds": round(self.seconds, 3),
            "extracted": self.extracted,
            "settings": {
                "folder": s.folder,
                "backbone": s.backbone,
                "mode": s.mode,
                "augment": s.augment,
                "val_split": s.val_split,
                "seed": s.seed,
                "epochs": s.epochs if s.mode == "finetune" else None,
                "blocks": s.blocks if s.mode == "finetune" else None,
                "weight_decay": self.weight_decay,
                "features": self.spec.to_dict(),
            },  # fmt: skip
            "backbone": self.backbone.to_dict(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "app_version": __version__,
        }


def _spec(mode: str, depth: int) -> FeatureSpec:
    if mode == "multilayer":
        return FeatureSpec(tuple(range(-min(MULTILAYER_BLOCKS, depth), 0)))
    return FeatureSpec((-1,))


def _feature_rows(blocks: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(M, F) from (M, depth, 2, D): the spec's layers, each its parts, in TaughtViT's order."""
    idx = list(spec.indices(blocks.shape[1]))
    parts = [PARTS.index(p) for p in spec.parts]
    return blocks[:, idx][:, :, parts].reshape(len(blocks), -1)


def _plan(labels: np.ndarray, val_split: float, seed: int) -> tuple[str, list[np.ndarray]]:
    """How to score: ("held-out", [validation images]) or ("k-fold …", folds)."""
    least = int(np.bincount(labels).min())
    if val_split > 0 and least >= SPLIT_MIN:
        k = min(max(2, round(1 / val_split)), least)  # every class in the held-out part
        return f"held-out {1 / k:.0%} of each class", [heads.stratified_folds(labels, k, seed)[0]]
    k = min(5, least)
    if k < 2:
        return "not scored: a class has a single image", []
    return f"{k}-fold cross-validation", heads.stratified_folds(labels, k, seed)


def train(settings: Settings, progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
          classifier: Classifier | None = None) -> Taught:  # fmt: skip
    """Teach a classifier (see the module).  ``classifier``: the backbone already loaded
    (else ``settings.backbone`` is loaded).  A :class:`TeachError` says in one line what is
    wrong; :class:`TeachCancelled` when ``cancel()`` turned true."""
    t0 = time.perf_counter()
    settings.check()
    examples = scan(settings.folder, cancel)
    clf = classifier or _load_backbone(settings)
    if isinstance(clf.module, TaughtViT):
        raise TeachError(f"{clf.display_name} is itself a taught classifier: teach on its backbone instead")
    if clf.preprocessing.input_size != clf.trained_size:
        (h, w), (th, tw) = clf.preprocessing.input_size, clf.trained_size
        raise TeachError(f"{clf.display_name} runs at {w}×{h} px, not its trained {tw}×{th} px: set its input "
                         "size back (Model › Input Size) to teach on it")  # fmt: skip
    ident = backbone_identity(clf)
    from ..explain_model import parts_of

    try:
        depth = parts_of(clf.module).depth
    except ValueError as exc:
        raise TeachError(f"{clf.display_name}: {exc}") from None
    seed, mode = settings.seed, settings.mode
    copies = AUGMENT_COPIES if settings.augment else 0
    items = [Item(e.path, e.digest, c) for e in examples.items for c in range(copies + 1)]
    if mode == "finetune" and settings.blocks > depth:
        raise TeachError(f"{clf.display_name} has {depth} blocks: it cannot fine-tune {settings.blocks}")
    tokens_at = depth - settings.blocks if mode == "finetune" else None
    ext = extract(clf, FeatureCache(clf, ident.cache_key(clf.module)), items, seed, tokens_at=tokens_at,
                  progress=progress, cancel=cancel)  # fmt: skip
    kept = [e for e in examples.items if Item(e.path, e.digest) in ext.blocks]
    failures = dict(examples.unreadable) | {p: e for p, e in ext.failures.items()}
    counts = {c: 0 for c in examples.classes}
    for e in kept:
        counts[examples.classes[e.label]] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if len(counts) - len(empty) < 2:
        raise TeachError("fewer than 2 classes have images that could be read: nothing to teach")
    warnings = list(examples.warnings) + [
        f"class {c!r}: none of its images could be read: left out" for c in empty
    ]
    classes = tuple(c for c in examples.classes if c not in empty)  # a class with no image is no class
    counts = {c: counts[c] for c in classes}
    relabel = {examples.classes.index(c): i for i, c in enumerate(classes)}
    kept = [Example(e.path, relabel[e.label], e.digest) for e in kept]
    spec = _spec(mode, depth)
    rows_items = [Item(e.path, e.digest, c) for i, e in enumerate(kept) for c in range(copies + 1)]
    rows_items = [it for it in rows_items if it in ext.blocks]
    index = {e.path: i for i, e in enumerate(kept)}
    label_of = {e.path: e.label for e in kept}
    rows = heads.Rows(
        x=_feature_rows(np.stack([ext.blocks[it] for it in rows_items]), spec),
        y=np.array([label_of[it.path] for it in rows_items], dtype=np.int64),
        group=np.array([index[it.path] for it in rows_items], dtype=np.int64),
        original=np.array([it.copy == 0 for it in rows_items]),
    )
    tokens = np.stack([ext.tokens[it] for it in rows_items]) if tokens_at is not None else None
    ctx = _Fit(clf, len(classes), seed, settings.epochs, tokens, tokens_at, progress, cancel)
    groups, labels = rows.image_labels()
    evaluation, folds = _plan(labels, settings.val_split, seed)
    ctx.total = len(folds) + 1
    predicted = np.full(len(kept), -1, dtype=np.int64)
    confidence = np.zeros(len(kept), dtype=np.float32)
    for fold in folds:
        val = groups[fold]
        model = ctx.fit(rows, np.setdiff1d(groups, val))
        probs = model(val)
        predicted[val], confidence[val] = probs.argmax(axis=1), probs.max(axis=1)
    final = ctx.fit(rows, groups)
    module = ctx.module(final, spec)
    scored = predicted >= 0
    truth = np.array([e.label for e in kept])
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (truth[scored], predicted[scored]), 1)
    per_class = {c: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, c in enumerate(classes)}  # fmt: skip
    wrong = tuple(Misclassified(kept[i].path, classes[truth[i]], classes[predicted[i]], float(confidence[i]))
                  for i in np.flatnonzero(scored & (predicted != truth)))  # fmt: skip
    accuracy = float((predicted[scored] == truth[scored]).mean()) if scored.any() else None
    if any(n < FEW for n in counts.values() if n) and folds:
        warnings.append(f"scored by {evaluation}: the figures are rough with so few images")
    return Taught(settings, classes, counts, accuracy, per_class, confusion.tolist(), evaluation, wrong,
                  tuple(warnings), failures, time.perf_counter() - t0, ext.computed, module, clf.preprocessing,
                  ident, final.head.weight_decay, spec, ctx.tuned_indices(depth))  # fmt: skip


def _load_backbone(settings: Settings) -> Classifier:
    from ..errors import VitDesktopError

    try:
        return load_classifier(settings.backbone, settings.device)
    except VitDesktopError as exc:
        raise TeachError(
            f"the backbone {short_name(settings.backbone)} could not be loaded: {exc.one_line()}"
        ) from None


@dataclass
class _Fitted:
    head: heads.LinearHead
    tuned: heads.Tuned | None
    predict: Callable[[np.ndarray], np.ndarray]

    def __call__(self, groups: np.ndarray) -> np.ndarray:
        return self.predict(groups)


class _Fit:
    """Teaching one head on some images, in the chosen mode."""

    def __init__(self, clf, classes, seed, epochs, tokens, tokens_at, progress, cancel) -> None:  # fmt: skip
        self.clf, self.classes, self.seed, self.epochs = clf, classes, seed, epochs
        self.tokens, self.tokens_at, self.progress, self.cancel = tokens, tokens_at, progress, cancel
        self.runs, self.total = 0, 1

    def _check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise TeachCancelled("cancelled")

    def fit(self, rows: heads.Rows, groups: np.ndarray) -> _Fitted:
        self._check()
        if self.progress is not None:
            self.progress("fitting the head", self.runs, self.total)
        train = rows.of(groups)
        head = heads.fit_linear_auto(train, self.classes, self.seed)
        self.runs += 1
        if self.tokens is None:
            return _Fitted(head, None, lambda g: _softmax(head.logits(rows.of(g, True).x)))
        from ..explain_model import parts_of

        parts = parts_of(self.clf.module)
        blocks = parts.blocks[self.tokens_at :]
        keep = np.isin(rows.group, groups)

        def on_epoch(done: int, total: int) -> None:
            self._check()
            if self.progress is not None:
                self.progress(f"fine-tuning (run {self.runs})", done, total)

        feats = _features_of(parts.layout)
        tuned = heads.fine_tune(blocks, feats, self.tokens[keep], rows.y[keep], head, self.classes,
                                epochs=self.epochs, seed=self.seed, on_epoch=on_epoch)  # fmt: skip

        def predict(g: np.ndarray) -> np.ndarray:
            sel = np.isin(rows.group, g) & rows.original
            return _softmax(tuned.logits(self.tokens[sel]))

        return _Fitted(tuned.head, tuned, predict)

    def module(self, fitted: _Fitted, spec: FeatureSpec) -> TaughtViT:
        backbone = copy.deepcopy(self.clf.module).float().cpu().eval()
        if fitted.tuned is not None:
            from ..explain_model import parts_of

            mine = parts_of(backbone).blocks[self.tokens_at :]
            for dst, src in zip(mine, fitted.tuned.blocks):
                dst.load_state_dict(src.state_dict())
        model = TaughtViT(backbone, spec, self.classes)
        h = fitted.head
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(h.weight))
            model.head.bias.copy_(torch.from_numpy(h.bias))
            model.feature_mean.copy_(torch.from_numpy(h.mean))
            model.feature_std.copy_(torch.from_numpy(h.std))
        return model.eval()

    def tuned_indices(self, depth: int) -> tuple[int, ...]:
        return tuple(range(self.tokens_at, depth)) if self.tokens_at is not None else ()


def _features_of(layout) -> Callable[[torch.Tensor], torch.Tensor]:
    """The last block's features as a default :class:`FeatureSpec`'s :class:`TaughtViT` reads them."""
    order = [PARTS.index(p) for p in FeatureSpec().parts]
    return lambda h: query_and_mean(h, layout)[:, order].flatten(1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = [
    "MODES",
    "Examples",
    "Misclassified",
    "Settings",
    "Taught",
    "TeachCancelled",
    "TeachError",
    "train",
]
