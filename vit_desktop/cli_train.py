"""``vit-desktop train``: teach a classifier from a folder of class sub-folders (cli.py's share).

Progress goes to a terminal's stderr; stdout gets one JSON object at the end (``classes``,
``counts``, ``accuracy``, ``per_class_accuracy``, ``confusion``, ``seconds`` and the rest of
the training report, plus ``model`` and ``report``: the files written)."""

from __future__ import annotations

import argparse
import json
import sys

from .core.defaults import DEVICE_CHOICES

EXIT_OK, EXIT_USAGE = 0, 2


def add_train(sub) -> None:
    t = sub.add_parser(
        "train",
        help="teach a classifier your own classes from a folder with one sub-folder per class",
        description="FOLDER holds one sub-folder of images per class. The backbone's features are "
        "cached per image, so training again after adding images computes only the new ones. "
        "The classifier opens like any model (classify --model FILE.safetensors, or in the window).",
    )
    t.add_argument("folder", metavar="FOLDER")
    t.add_argument("--backbone", default="demo-shapes", metavar="ID|PATH",
                   help="catalog id, checkpoint or model folder (default: demo-shapes)")  # fmt: skip
    t.add_argument("--out", required=True, metavar="FILE.safetensors", help="the classifier file to write")
    t.add_argument("--mode", default="linear", choices=("linear", "multilayer", "finetune"),
                   help="linear head on the last block (default), on the last 4 blocks, or fine-tune the last block(s)")  # fmt: skip
    t.add_argument("--augment", action="store_true", help="also teach on 4 augmented copies of each image")
    t.add_argument("--val-split", type=float, default=0.2, metavar="SHARE",
                   help="share of each class held out for scoring (default 0.2; k-fold when a class is small)")  # fmt: skip
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs (default 12)")
    t.add_argument("--blocks", type=int, default=1, help="blocks fine-tuned, from the last (default 1)")
    t.add_argument("--device", default="cpu", choices=DEVICE_CHOICES)


def cmd_train(args: argparse.Namespace) -> int:
    from .core.teach import saved
    from .core.teach.train import Settings, train
    from .core.text import display

    settings = Settings(args.folder, args.backbone, args.mode, args.augment, args.val_split, args.seed,
                        args.epochs, args.device, args.blocks)  # fmt: skip
    tty = bool(sys.stderr) and sys.stderr.isatty()
    last = [""]

    def progress(stage: str, done: int, total: int) -> None:
        if tty:
            sys.stderr.write(f"\r{stage}: {done}/{total}   ")
            sys.stderr.flush()
            last[0] = stage

    taught = train(settings, progress)
    if tty and last[0]:
        sys.stderr.write("\n")
    for line in taught.warnings:
        print(f"vit-desktop: warning: {display(line)}", file=sys.stderr)
    for error in taught.failures.values():
        print(f"vit-desktop: skipped: {display(error)}", file=sys.stderr)
    model, report = saved.save(taught, args.out)
    out = taught.report() | {"model": str(model), "report": str(report)}
    print(json.dumps(out))
    return EXIT_OK
