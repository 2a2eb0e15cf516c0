"""Train the ``demo-shapes`` ViT from a seed on a CPU.

    python -m vit_desktop.core.demo.train --out resources/demo_shapes.safetensors

Fine-tuning for two-shape scenes starts from trained weights (``--init``) and mixes in
scenes of two different shapes (``--scene-fraction``) whose target is 0.5 for each of the
two classes (cross-entropy with soft labels), so that the top-2 of a scene are its shapes.

Every step draws fresh images (in worker processes: drawing, not the model, can be the
bottleneck on a small machine).  Each worker has its own seeded random stream and the
loader takes their batches in a fixed order, so a seed gives the same run on the same
machine and thread count.  The weights are written as safetensors with the model config,
labels and training recipe in the header metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import CheckpointError
from ..minivit import MiniViT, MiniViTConfig
from ..preprocess import prepare
from .model import CONFIG, PREPROCESSING
from .shapes import CLASSES, generate, generate_scene


class ShapeBatches(IterableDataset):
    """An endless stream of (images, targets) batches, drawn on the fly.

    Without scenes the targets are class indices (the stream of the shipped weights'
    first training); with ``scene_fraction`` > 0 each image is a two-shape scene with that
    probability and the targets are class probabilities: one-hot, or 0.5 for each of a
    scene's two shapes.
    """

    def __init__(self, seed: int, batch_size: int, work_side: int, scene_fraction: float = 0.0) -> None:
        self.seed = seed
        self.batch_size = batch_size
        self.work_side = work_side
        self.scene_fraction = scene_fraction

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid])
        soft = self.scene_fraction > 0
        while True:
            xs, ys = [], []
            for _ in range(self.batch_size):
                if soft and rng.random() < self.scene_fraction:
                    s = generate_scene(rng, max_side=self.work_side)
                    labels = s.labels
                else:
                    s = generate(rng, max_side=self.work_side)
                    labels = (s.label,)
                x, _ = prepare(s.image, PREPROCESSING, s.full_size)
                xs.append(x)
                if soft:
                    y = np.zeros(len(CLASSES), np.float32)
                    y[list(labels)] = 1.0 / len(labels)
                    ys.append(y)
                else:
                    ys.append(labels[0])
            y = torch.from_numpy(np.stack(ys)) if soft else torch.tensor(ys)
            yield torch.from_numpy(np.stack(xs)), y


def load_init(model: MiniViT, path: Path) -> str:
    """Load trained weights to start from; returns the file's SHA-256."""
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file to start from ({exc})") from exc
    # save_weights leaves out BatchNorm's step counters; they do not affect the network.
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the demo model has not"
        raise CheckpointError(f"{path}: {what}; it is not a demo-shapes model to start from")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{path}: tensor {k} has shape {tuple(v.shape)} where the demo model needs {tuple(own[k].shape)}"
            )
    model.load_state_dict(state, strict=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.inference_mode()
def quick_scene_eval(model: MiniViT, seed: int, n: int) -> float:
    """How often the top-2 of ``n`` full-size held-out scenes are their two shapes."""
    model.eval()
    rng = np.random.default_rng([seed, 10_001])
    hits = 0
    for start in range(0, n, 64):
        scenes = [generate_scene(rng) for _ in range(min(64, n - start))]
        x = np.stack([prepare(s.image, PREPROCESSING)[0] for s in scenes])
        top2 = model(torch.from_numpy(x)).topk(2, dim=1).indices.tolist()
        hits += sum(set(t) == set(s.labels) for t, s in zip(top2, scenes))
    model.train()
    return hits / n


@torch.inference_mode()
def quick_eval(model: MiniViT, seed: int, n: int) -> float:
    """Top-1 accuracy on ``n`` full-size held-out images through the real preprocessing."""
    model.eval()
    rng = np.random.default_rng([seed, 10_000])
    correct = 0
    for start in range(0, n, 64):
        xs, ys = [], []
        for _ in range(min(64, n - start)):
            s = generate(rng)
            x, _ = prepare(s.image, PREPROCESSING)
            xs.append(x)
            ys.append(s.label)
        logits = model(torch.from_numpy(np.stack(xs)))
        correct += int((logits.argmax(1) == torch.tensor(ys)).sum())
    model.train()
    return correct / n


def save_weights(model: MiniViT, path: Path, meta: dict) -> None:
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    metadata = {
        "format": "vit-desktop/minivit",
        "config": json.dumps(model.config.to_dict()),
        "preprocessing": json.dumps(PREPROCESSING.to_dict()),
        "labels": json.dumps(list(CLASSES)),
        "training": json.dumps(meta),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> MiniViT:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg: MiniViTConfig = CONFIG
    model = MiniViT(cfg)
    init_sha = load_init(model, Path(args.init)) if args.init else None
    aux_head = torch.nn.Linear(cfg.embed_dim, cfg.num_classes) if args.aux_weight > 0 else None
    params = list(model.named_parameters())
    if aux_head is not None:
        params += [("aux." + n, p) for n, p in aux_head.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in params if p.ndim < 2 or "pos_embed" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    # An exponential moving average of the weights is what gets evaluated and shipped.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    data = ShapeBatches(args.seed, args.batch_size, int(1.5 * cfg.image_size), args.scene_fraction)
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=args.workers,
        prefetch_factor=4 if args.workers else None,
        persistent_workers=bool(args.workers),
    )
    warmup = max(1, int(args.steps * args.warmup))
    model.train()
    t0 = time.perf_counter()
    running = None
    log = []
    for step, (x, y) in enumerate(loader):
        if step >= args.steps:
            break
        lr = lr_at(step, args.steps, args.lr, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        # The explicit (math) attention trains ~1.4× faster on CPU than the fused kernel's
        # backward pass at these sizes.
        with sdpa_kernel(SDPBackend.MATH), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            tokens = model.forward_features(x)
            logits = model.mlp_head(tokens[:, 0])
            loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
            if aux_head is not None:
                # Training-only auxiliary head on the mean patch token: it gives every patch
                # a direct gradient, which gets the ViT off its early plateau much sooner.
                aux_logits = aux_head(tokens[:, 1:].mean(1))
                loss = loss + args.aux_weight * F.cross_entropy(
                    aux_logits.float(), y, label_smoothing=args.label_smoothing
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update_parameters(model)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.perf_counter() - t0
            line = f"step {step + 1}/{args.steps} loss {running:.3f} lr {lr:.2e} {el:.0f}s"
            if args.eval_every and ((step + 1) % args.eval_every == 0 or step + 1 == args.steps):
                acc = quick_eval(ema.module, args.seed, args.eval_images)
                line += f" held-out acc {acc:.3f}"
                entry = {"step": step + 1, "loss": round(running, 4), "acc": acc, "seconds": round(el)}
                if args.scene_fraction > 0:
                    entry["scene_top2"] = quick_scene_eval(
                        ema.module, args.seed, max(1, args.eval_images // 2)
                    )
                    line += f" scene top-2 {entry['scene_top2']:.3f}"
                log.append(entry)
            print(line, flush=True)
            if args.out and args.checkpoint_every and (step + 1) % args.checkpoint_every == 0:
                save_weights(ema.module, Path(args.out), {"partial_step": step + 1})
    model = ema.module
    model.eval()
    meta = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "label_smoothing": args.label_smoothing,
        "aux_weight": args.aux_weight,
        "ema": args.ema,
        "init": Path(args.init).name if args.init else None,
        "init_sha256": init_sha,
        "scene_fraction": args.scene_fraction,
        "scene_target": "0.5 per shape" if args.scene_fraction > 0 else None,
        "bf16": args.bf16,
        "threads": args.threads,
        "workers": args.workers,
        "seconds": round(time.perf_counter() - t0),
        "torch": torch.__version__,
        "log": log,
    }
    if args.out:
        save_weights(model, Path(args.out), meta)
        print(f"wrote {args.out}", flush=True)
    return model


#: Settings that differ between training from scratch and fine-tuning (``--init``); an
#: option given on the command line wins.  The fine-tune: about 12 minutes on 2 cores.
FROM_SCRATCH = {"steps": 5000, "lr": 1e-3, "ema": 0.999, "scene_fraction": 0.0}
FINE_TUNE = {"steps": 1500, "lr": 3e-4, "ema": 0.998, "scene_fraction": 0.4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="resources/demo_shapes.safetensors")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--init", default=None, help="safetensors weights to start from (fine-tuning)")
    recipe = "from scratch %(s)s, with --init %(f)s"
    for name, kind, what in (
        ("scene-fraction", float, "share of two-shape scenes (soft targets 0.5/0.5) in each batch"),
        ("steps", int, "training steps"),
        ("lr", float, "peak learning rate"),
        ("ema", float, "weight EMA decay per step"),
    ):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"{what}; " + recipe % {"s": FROM_SCRATCH[key], "f": FINE_TUNE[key]})  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--checkpoint-every", type=int, default=500)
    args = p.parse_args(argv)
    for key, value in (FINE_TUNE if args.init else FROM_SCRATCH).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0.0 <= args.scene_fraction <= 1.0:
        p.error(f"--scene-fraction must be in 0–1, got {args.scene_fraction}")
    return args


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
