"""Measure the demo model on fresh held-out shapes.

    python -m vit_desktop.core.demo.evaluate --images 2000 --write-metrics

Reports top-1 accuracy and how often the default attention map's peak falls inside the
shape's bounding box, in original pixel coordinates, on full-size images of every aspect
ratio (64–640 px, 0.5–2) through the same loader-free path the app uses for in-memory
images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..classifier import Classifier, load_classifier
from ..results import ClassificationResult
from .shapes import CLASSES, generate

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the demo-shapes model on fresh held-out images.")
    p.add_argument("--model", default="demo-shapes", help="catalog id or weights file")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    p.add_argument("--write-metrics", action="store_true", help="store them next to the shipped weights")
    args = p.parse_args(argv)
    m = evaluate(load_classifier(args.model, device="cpu"), args.images, args.seed)
    print(json.dumps(asdict(m), indent=1))
    if args.write_metrics:
        from .model import resource_dir

        target = resource_dir().joinpath("demo_shapes.metrics.json")
        with open(str(target), "w", encoding="utf-8") as f:
            json.dump(asdict(m) | {"seed": args.seed}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
