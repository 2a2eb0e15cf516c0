"""The Ray engine on one machine: a Ray started here against the local engine, and 2 Ray
workers against 1, on the same images, the sides alternating.

    python bench/run.py --only ray_vs_local_demo,ray_vs_local_vit_b16,ray_scaling_2_vs_1
    python bench/ray_figures.py [--quick] [--tiny] [--json OUT.json]     (these figures alone)

Run it on a quiet machine: Ray's processes and the model replicas share the cores with
anything else running.  Throughputs are steady-state: the images that arrive once every
worker has sent its first task's records ÷ the time from then to the last record, so Ray's
start-up (worker processes, model shipping) is left out of the ratios and reported on its
own (``ray_startup_s``).  Both engines run the same work: ``iter_classify`` with batches of
8 and attention off, the local engine with all cores in one process, the Ray engine with
one CPU per worker.
With CUDA present, ViT-B/16 is also measured on one GPU worker (``ray_vit_b16_cuda_img_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import FULL, QUICK, TINY, Figure, Sizes, cache_dir, photo_like  # noqa: E402

BATCH = 8


def _image_sets(sizes: Sizes, folder: Path) -> dict[str, list[str]]:
    """Small demo-shape PNGs for the demo model; ~1.2 MP photo-like JPEGs for ViT-B/16."""
    from vit_desktop.core.demo.shapes import generate

    n_demo, n_vit = (64, 16) if sizes.tiny else (512, 48) if sizes.name == "quick" else (1024, 96)
    out: dict[str, list[str]] = {"demo": [], "vit": []}
    demo, vit = folder / "ray-demo", folder / "ray-vit"
    demo.mkdir(parents=True, exist_ok=True)
    vit.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(15)
    for i in range(n_demo):
        path = demo / f"shape{i:05d}.png"
        if not path.exists():
            generate(rng, label=i % 10, size=(320, 240)).image.save(path)
        out["demo"].append(str(path))
    for i in range(n_vit):
        path = vit / f"photo{i:04d}.jpg"
        if not path.exists():
            w, h = (320, 240) if sizes.tiny else (1280, 960)
            photo_like(w, h, seed=i).save(path, "JPEG", quality=90)
        out["vit"].append(str(path))
    return out


def _steady(stamps: list[float], skip: int = 1, together_s: float = 0.005) -> float:
    """Images per second once the first ``skip`` groups of records have arrived (a group: a
    batch, or a Ray task; its records arrive within ``together_s`` of each other; skip one
    group per worker, so that every worker is past its start-up): the images after them ÷
    the time from them to the last record."""
    ends, last = [], None
    for t in stamps:
        if last is not None and t - last > together_s:
            ends.append(last)
        last = t
    if len(ends) < skip:
        raise RuntimeError("too few groups of records to measure a rate; use more images")
    start = ends[skip - 1]
    after = sum(1 for t in stamps if t > start)
    return after / (stamps[-1] - start)


def _local(model: str, pretrained: bool, paths: list[str]) -> float:
    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier(model, device="cpu", pretrained=pretrained)
    list(clf.iter_classify(paths[: 2 * BATCH], BATCH, 5, "none"))  # warm-up
    return _steady([time.perf_counter() for _ in clf.iter_classify(paths, BATCH, 5, "none")])


def _ray(model: str, pretrained: bool, paths: list[str], workers: int, task_batches: int,
         gpus: float = 0.0, cpus: float = 1.0) -> tuple[float, float]:  # fmt: skip
    """(steady images/s, seconds from the start of the run to its first record)."""
    from vit_desktop.core.ray_engine import RayJob, RaySession

    job = RayJob(model=model, pretrained=pretrained, attention="none", batch_size=BATCH, workers=workers,
                 gpus_per_worker=gpus, cpus_per_worker=cpus, task_batches=task_batches)  # fmt: skip
    t0 = time.perf_counter()
    session = RaySession(job)
    try:
        stamps = []
        for obj, _ in session.classify(paths):
            assert "error" not in obj, obj
            stamps.append(time.perf_counter())
    finally:
        session.close()
    assert len(stamps) == len(paths)
    return _steady(stamps, skip=workers), stamps[0] - t0


def ray_figures(sizes: Sizes, folder: Path) -> list[Figure]:
    import ray
    import torch

    sets = _image_sets(sizes, folder)
    cores = os.cpu_count() or 1
    # One Ray for every measurement (started once, as a long job starts it once).
    ray.init(
        address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    repeats = 1 if sizes.tiny else 2 if sizes.name == "quick" else 3
    models = [("demo", "demo-shapes", True, 1 if sizes.tiny else 4)]  # (key, model, pretrained, task batches)
    if sizes.tiny:  # the harness check: the demo model stands in for ViT-B/16, so every figure is reported
        models.append(("vit_b16", "demo-shapes", True, 1))
    else:
        models.append(("vit_b16", "vit-b-16", False, 1))
    figs: list[Figure] = []
    try:
        startups = []
        for key, model, pretrained, task_batches in models:
            paths = sets["demo" if key == "demo" or sizes.tiny else "vit"]
            ratios, local_ips, ray_ips = [], [], []
            for r in range(repeats):  # alternate which side runs first
                order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
                got = {}
                for side in order:
                    if side == "local":
                        got[side] = _local(model, pretrained, paths)
                    else:
                        got[side], startup = _ray(model, pretrained, paths, cores, task_batches)
                        startups.append(startup)
                ratios.append(got["ray"] / got["local"])
                local_ips.append(got["local"])
                ray_ips.append(got["ray"])
            figs.append(Figure(
                f"ray_vs_local_{key}", statistics.median(ratios), "x", 0.8, True,
                f"steady images/s, a Ray started here with {cores} workers × 1 CPU ÷ the local engine "
                f"({cores} threads), {len(paths)} images, batch {BATCH}, attention off: "
                f"{statistics.median(ray_ips):.2f} vs {statistics.median(local_ips):.2f} img/s; "
                f"median of {repeats}",
            ))  # fmt: skip
        # Scaling: the heaviest model measured here, 1 worker then 2 (on at least 2 cores).
        key, model, pretrained, task_batches = models[-1]
        paths = sets["demo" if key == "demo" or sizes.tiny else "vit"]
        if cores >= 2:
            one = [_ray(model, pretrained, paths, 1, task_batches)[0] for _ in range(repeats)]
            two = [_ray(model, pretrained, paths, 2, task_batches)[0] for _ in range(repeats)]
            figs.append(Figure(
                "ray_scaling_2_vs_1", statistics.median(two) / statistics.median(one), "x", 1.8, True,
                f"{model}: 2 Ray workers ÷ 1 (1 CPU each, {len(paths)} images): "
                f"{statistics.median(two):.2f} vs {statistics.median(one):.2f} img/s",
            ))  # fmt: skip
        figs.append(Figure("ray_startup_s", statistics.median(startups), "s", None, False,
                           "from the start of a run (model loaded and shipped, workers started) to its "
                           "first record; median over the Ray runs above"))  # fmt: skip
        if torch.cuda.is_available() and not sizes.tiny:
            # One GPU worker holding every CPU: its decode threads (float32, as the records are made).
            ips, _ = _ray("vit-b-16", False, sets["vit"] * 4, 1, 4, gpus=1.0, cpus=cores)
            figs.append(Figure("ray_vit_b16_cuda_img_s", ips, "img/s", None, True,
                               f"ViT-B/16, one worker with --gpus-per-worker 1 ({torch.cuda.get_device_name()}), "
                               f"float32, --cpus-per-worker {cores} (decode threads), {len(sets['vit']) * 4} JPEGs of 1.2 MP"))  # fmt: skip
    finally:
        ray.shutdown()
    return figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    figs = ray_figures(sizes, cache_dir(sizes))
    for f in figs:
        print(f"{f.key:<28} {f.value:>10.4g} {f.unit:<5} {f.note}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({f.key: f.to_dict() for f in figs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
