"""Measure the demo model on fresh held-out shapes.

    python -m vit_desktop.core.demo.evaluate --images 2000 --scenes 500 --write-metrics

Reports top-1 accuracy and how often the default attention map's peak falls inside the
shape's bounding box, in original pixel coordinates, on full-size images of every aspect
ratio (64–640 px, 0.5–2) through the same loader-free path the app uses for in-memory
images; and, on two-shape scenes, how often the top-2 predictions are the scene's two
shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..classifier import Classifier, load_classifier
from ..results import ClassificationResult
from .shapes import CLASSES, generate, generate_scene

#: Seeds for held-out sets: never the training seed's streams ([seed, worker]).
HELD_OUT_SEED = 20_261_125


@dataclass(frozen=True)
class DemoMetrics:
    images: int
    accuracy: float
    peak_in_box: float
    per_class_accuracy: dict[str, float]
    seconds: float


def evaluate(clf: Classifier, images: int = 1000, seed: int = HELD_OUT_SEED, batch: int = 50) -> DemoMetrics:
    rng = np.random.default_rng([seed, 1])
    correct = inside = 0
    per_class = np.zeros((len(CLASSES), 2), int)
    t0 = time.perf_counter()
    for start in range(0, images, batch):
        samples = [generate(rng) for _ in range(min(batch, images - start))]
        results = clf.classify([s.image for s in samples], top_k=1, attention="peak")
        for s, r in zip(samples, results):
            assert isinstance(r, ClassificationResult)
            ok = r.top1.index == s.label
            correct += ok
            per_class[s.label] += (ok, 1)
            x, y = r.attention_peak
            left, top, right, bottom = s.bbox
            inside += left <= x <= right and top <= y <= bottom
    return DemoMetrics(
        images=images,
        accuracy=correct / images,
        peak_in_box=inside / images,
        per_class_accuracy={c: round(float(a / max(n, 1)), 4) for c, (a, n) in zip(CLASSES, per_class)},
        seconds=round(time.perf_counter() - t0, 1),
    )


@dataclass(frozen=True)
class SceneMetrics:
    scenes: int
    top2_match: float  # the top-2 predictions are the scene's two shapes (as a set)
    top1_in_scene: float  # the top prediction is one of the two shapes
    seconds: float


def evaluate_scenes(
    clf: Classifier, scenes: int = 500, seed: int = HELD_OUT_SEED, batch: int = 50
) -> SceneMetrics:
    """The two-shape metric on ``scenes`` fresh full-size scenes (every pair of classes)."""
    rng = np.random.default_rng([seed, 2])
    match = top1 = 0
    t0 = time.perf_counter()
    for start in range(0, scenes, batch):
        drawn = [generate_scene(rng) for _ in range(min(batch, scenes - start))]
        results = clf.classify([s.image for s in drawn], top_k=2, attention=False)
        for s, r in zip(drawn, results):
            assert isinstance(r, ClassificationResult)
            got = {p.index for p in r.top_k}
            match += got == set(s.labels)
            top1 += r.top1.index in s.labels
    return SceneMetrics(
        scenes=scenes,
        top2_match=match / scenes,
        top1_in_scene=top1 / scenes,
        seconds=round(time.perf_counter() - t0, 1),
    )


def training_recipe(path: str | os.PathLike | None = None) -> dict:
    """The training settings a weights file written by ``train.py`` holds in its metadata
    (the shipped demo weights when ``path`` is None); {} when it holds none."""
    from safetensors import safe_open

    from .model import weights_resource

    where = resources.as_file(weights_resource()) if path is None else nullcontext(Path(path))
    with where as f, safe_open(str(f), "pt") as st:
        meta = st.metadata() or {}
    try:
        recipe = json.loads(meta.get("training", "{}"))
    except ValueError:
        return {}
    return recipe if isinstance(recipe, dict) else {}


def trained_on_scenes(path: str | os.PathLike | None = None) -> bool:
    """Whether the weights were trained (or fine-tuned) with two-shape scenes."""
    fraction = training_recipe(path).get("scene_fraction") or 0
    return isinstance(fraction, (int, float)) and fraction > 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the demo-shapes model on fresh held-out images.")
    p.add_argument("--model", default="demo-shapes", help="catalog id or weights file")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--scenes", type=int, default=500, help="two-shape scenes (0: none)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    p.add_argument("--write-metrics", action="store_true", help="store them next to the shipped weights")
    args = p.parse_args(argv)
    clf = load_classifier(args.model, device="cpu")
    m = asdict(evaluate(clf, args.images, args.seed))
    if args.scenes > 0:
        m["two_shape"] = asdict(evaluate_scenes(clf, args.scenes, args.seed))
    print(json.dumps(m, indent=1))
    if args.write_metrics:
        from .model import resource_dir

        target = resource_dir().joinpath("demo_shapes.metrics.json")
        with open(str(target), "w", encoding="utf-8") as f:
            json.dump(m | {"seed": args.seed}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
