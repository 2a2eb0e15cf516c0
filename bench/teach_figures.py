"""Teaching a classifier (``vit-desktop train``): feature extraction against the folder run
on the same images and backbone, the linear head's training time on 1,000 × 768 features,
retraining after 10 new images, peak memory, and held-out accuracy per mode on generated
shapes the demo model never saw."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import Figure, Sizes, interleaved, our_classifier

from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.new_shapes import write_class_folders, write_split
from vit_desktop.core.teach import heads
from vit_desktop.core.teach.dataset import scan
from vit_desktop.core.teach.features import FeatureCache, Item, extract
from vit_desktop.core.teach.train import Settings, train
from vit_desktop.core.weights import sha256_file

CLASSES = ("heart", "arrow", "crescent", "l-shape")


def extraction_vs_folder(sizes: Sizes, paths: list[Path]) -> list[Figure]:
    """Images/s of feature extraction (nothing cached) ÷ images/s of the folder run."""
    clf = our_classifier(sizes)
    strs = [str(p) for p in paths]
    items = [Item(str(p), sha256_file(p)) for p in paths]
    n = len(strs)
    tmp = Path(tempfile.mkdtemp(prefix="vit-bench-features-"))

    def folder():
        out = list(clf.iter_classify(strs, top_k=5, attention="none"))
        assert len(out) == n and all(hasattr(r, "top_k") for r in out)

    def features():
        shutil.rmtree(tmp, ignore_errors=True)
        got = extract(clf, FeatureCache(clf, "bench", tmp), items)
        assert got.computed == n and not got.failures

    try:
        t_folder, t_feat = interleaved([folder, features], repeats=sizes.folder_repeats, warmup=0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = statistics.median(f / e for f, e in zip(t_folder, t_feat))
    return [
        Figure("teach_extract_vs_folder", round(ratio, 3), "x", 0.9, True,
               f"{n} JPEGs ({sizes.min_mp:g}–{sizes.max_mp:g} MP), {clf.display_name}: feature extraction "
               f"{n / statistics.median(t_feat):.2f} img/s (every block's query and patch-mean features, "
               f"written to the cache) vs classify {n / statistics.median(t_folder):.2f} img/s; medians of "
               f"{sizes.folder_repeats} interleaved runs"),
    ]  # fmt: skip


def linear_head_time(sizes: Sizes) -> list[Figure]:
    """The default head's training (decay chosen by 3-fold cross-validation over 5 decays,
    then the final fit) on 1,000 feature rows of width 768 in 10 classes."""
    rng = np.random.default_rng(0)
    n, width, classes = (200, 64, 4) if sizes.tiny else (1000, 768, 10)
    centres = rng.normal(size=(classes, width))
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(scale=3.0, size=(n, width))).astype(np.float32)
    rows = heads.Rows(x, y, np.arange(n), np.ones(n, bool))
    heads.fit_linear(x[:50], y[:50], classes, 1.0)  # warm-up (torch's first autograd call)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        head = heads.fit_linear_auto(rows, classes, 0)
        times.append(time.perf_counter() - t0)
    acc = float((head.logits(x).argmax(1) == y).mean())
    fits = len(heads.WEIGHT_DECAYS) * heads.INNER_FOLDS + len(heads.WEIGHT_DECAYS)
    return [
        Figure("teach_linear_head_s", round(statistics.median(times), 3), "s", 2.0, False,
               f"{n} × {width} features, {classes} classes: L-BFGS along the decay path, {fits} fits at most "
               f"(3-fold choice among {len(heads.WEIGHT_DECAYS)} decays, then all rows); chosen decay "
               f"{head.weight_decay:g}, training accuracy {acc:.3f}; median of 3"),
    ]  # fmt: skip


def retrain_and_accuracy(sizes: Sizes) -> list[Figure]:
    """The demo backbone on generated new shapes: held-out accuracy per mode, retraining after
    10 more images."""
    per, test = (6, 4) if sizes.tiny else (30, 50)
    with tempfile.TemporaryDirectory(prefix="vit-bench-teach-") as tmp:
        root = Path(tmp)
        import os

        os.environ["VIT_DESKTOP_FEATURE_CACHE"] = str(root / "cache")
        write_split(root / "data", CLASSES, train_per_class=per, test_per_class=test, seed=0)
        demo = load_classifier("demo-shapes", "cpu")
        ex_test = scan(root / "data" / "test")
        truth = np.array([e.label for e in ex_test.items])
        paths = [e.path for e in ex_test.items]
        accs, notes = {}, []
        plain = _plain_probe(demo, root / "data", ex_test)
        for mode in ("linear", "multilayer", "finetune"):
            for augment in (False, True):
                t0 = time.perf_counter()
                taught = train(
                    Settings(str(root / "data" / "train"), mode=mode, augment=augment), classifier=demo
                )
                secs = time.perf_counter() - t0
                clf = _as_classifier(taught, demo)
                got = np.array([taught.classes.index(r.top_k[0].label) for r in clf.iter_classify(paths)])
                accs[(mode, augment)] = float((got == truth).mean())
                notes.append(
                    f"{mode}{' + augment' if augment else ''} {accs[(mode, augment)]:.3f} ({secs:.1f} s)"
                )
        first = train(Settings(str(root / "data" / "train")), classifier=demo)
        more = write_class_folders(root / "more", CLASSES[:2], per_class=5, seed=77)
        for name, files in more.items():
            for p in files:
                shutil.copy(p, root / "data" / "train" / name / f"more_{p.name}")
        t0 = time.perf_counter()
        again = train(Settings(str(root / "data" / "train")), classifier=demo)
        retrain_s = time.perf_counter() - t0
        os.environ.pop("VIT_DESKTOP_FEATURE_CACHE", None)
    best = max(accs.values())
    what = f"{len(CLASSES)} new shapes ({', '.join(CLASSES)}), {per} training images per class, {test} test images"
    return [
        Figure("teach_default_accuracy", round(accs[("linear", False)], 3), "ratio", 0.85, True,
               f"demo backbone, {what}: default mode (linear head on the last block's CLS and patch mean) on "
               f"the test images; a plain linear probe on the CLS token alone: {plain:.3f}"),
        Figure("teach_best_accuracy", round(best, 3), "ratio", 0.92, True, "per mode: " + "; ".join(notes)),
        Figure("teach_retrain_extracted", again.extracted, "images", 10, False,
               f"after adding 10 images to the {len(CLASSES) * per} already taught: only they ran through the "
               f"backbone; retraining took {retrain_s:.2f} s against {first.seconds:.2f} s for the first "
               "training (which itself found the cache of the accuracy runs)"),
    ]  # fmt: skip


def _plain_probe(demo, data: Path, ex_test) -> float:
    from vit_desktop.core.families.taught import FeatureSpec
    from vit_desktop.core.teach.identity import backbone_identity
    from vit_desktop.core.teach.train import _feature_rows

    cache = FeatureCache(demo, backbone_identity(demo).cache_key(demo.module))
    spec = FeatureSpec((-1,), ("query",))
    out = []
    for ex in (scan(data / "train"), ex_test):
        items = [Item(e.path, e.digest) for e in ex.items]
        f = extract(demo, cache, items)
        out.append(
            (
                _feature_rows(np.stack([f.blocks[i] for i in items]), spec),
                np.array([e.label for e in ex.items]),
            )
        )
    (x, y), (xt, yt) = out
    head = heads.fit_linear(x, y, len(CLASSES), 1e-4)
    return float((head.logits(xt).argmax(1) == yt).mean())


def _as_classifier(taught, demo):
    from vit_desktop.core.classifier import Classifier

    return Classifier(taught.module, taught.preprocessing, taught.classes, "taught", "taught", demo.device)


_PEAK_CHILD = r"""
import json, resource, sys, torch
from vit_desktop.core.teach.train import Settings, train
from vit_desktop.core.weights import sha256_file
torch.set_num_threads(2)
folder, backbone = sys.argv[1], sys.argv[2]
from vit_desktop.core.classifier import load_classifier
clf = load_classifier(backbone, "cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = train(Settings(folder, backbone=backbone, mode=sys.argv[3]), classifier=clf)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before": before, "after": after, "n": sum(t.counts.values())}))
"""


def peak_memory(sizes: Sizes) -> list[Figure]:
    """Peak resident memory of teaching on ViT-B/16 (a checkpoint with random weights), in a
    child process: its growth over the process's peak once the model is loaded."""
    import torch
    from torchvision.models import vit_b_16

    with tempfile.TemporaryDirectory(prefix="vit-bench-teach-mem-") as tmp:
        root = Path(tmp)
        per = 4 if sizes.tiny else 30
        write_class_folders(root / "data", CLASSES, per_class=per, seed=5)
        ckpt = root / "vit_b16.pth"
        torch.manual_seed(0)
        if sizes.tiny:
            from torchvision.models.vision_transformer import VisionTransformer

            model = VisionTransformer(64, 16, 2, 2, 64, 128, num_classes=10)
        else:
            model = vit_b_16(weights=None)
        torch.save(model.state_dict(), ckpt)
        env = {**__import__("os").environ, "VIT_DESKTOP_FEATURE_CACHE": str(root / "cache")}
        res = {}
        for mode in ("multilayer", "finetune"):
            proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(root / "data"), str(ckpt), mode],
                                  capture_output=True, text=True, timeout=1800, env=env)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"the memory run failed: {proc.stderr[-800:]}")
            res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    ml, ft = res["multilayer"], res["finetune"]
    growth = max(ml["after"] - ml["before"], ft["after"] - ft["before"])
    return [
        Figure("teach_peak_mb", round(growth), "MB", 1000, False,
               f"peak resident memory teaching on {'a tiny ViT' if sizes.tiny else 'ViT-B/16'} ({ml['n']} images) "
               f"above the process's peak with the model loaded, in a child process: multi-layer "
               f"{ml['after'] - ml['before']:+.0f} MB ({ml['after']:.0f} MB in all), fine-tuning the last block "
               f"{ft['after'] - ft['before']:+.0f} MB ({ft['after']:.0f} MB in all: the tokens entering the block "
               "for every image, one block's activations and Adam state, the taught model's own copy of the backbone)"),
    ]  # fmt: skip
