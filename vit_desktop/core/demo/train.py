"""Train the ``demo-shapes`` ViT from a seed on a CPU.

    python -m vit_desktop.core.demo.train --out resources/demo_shapes.safetensors

Every step draws fresh images (in worker processes: drawing, not the model, can be the
bottleneck on a small machine).  Each worker has its own seeded random stream and the
loader takes their batches in a fixed order, so a seed gives the same run on the same
machine and thread count.  The weights are written as safetensors with the model config,
labels and training recipe in the header metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..minivit import MiniViT, MiniViTConfig
from ..preprocess import prepare
from .model import CONFIG, PREPROCESSING
from .shapes import CLASSES, generate


class ShapeBatches(IterableDataset):
    """An endless stream of (images, labels) batches, drawn on the fly."""

    def __init__(self, seed: int, batch_size: int, work_side: int) -> None:
        self.seed = seed
        self.batch_size = batch_size
        self.work_side = work_side

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid])
        while True:
            xs, ys = [], []
            for _ in range(self.batch_size):
                s = generate(rng, max_side=self.work_side)
                x, _ = prepare(s.image, PREPROCESSING, s.full_size)
                xs.append(x)
                ys.append(s.label)
            yield torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


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
    data = ShapeBatches(args.seed, args.batch_size, work_side=int(1.5 * cfg.image_size))
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
                log.append({"step": step + 1, "loss": round(running, 4), "acc": acc, "seconds": round(el)})
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="resources/demo_shapes.safetensors")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999, help="weight EMA decay per step")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--checkpoint-every", type=int, default=500)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
