"""Benchmarks, each measured side by side in one run with the two sides interleaved.

    python bench/run.py [--quick] [--json OUT.json]

Prints a table; ``--json`` writes one object whose keys are the figure names, each
``{"value": number, "unit": str, "target": number|null, "ok": bool|null}``.
Models without downloadable weights here are built with random weights (that does not
change their speed); torchvision's zero-initialised head is re-initialised so that logit
comparisons are not vacuous.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vit_desktop.core.capture import AttentionCapture


@dataclass
class Figure:
    key: str
    value: float
    unit: str
    target: float | None
    higher_is_better: bool
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "target": self.target, "ok": self.ok}


def interleaved(
    a: Callable[[], object], b: Callable[[], object], repeats: int, warmup: int = 3
) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately (A B B A …) so drift hits both equally."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        order = (a, b) if i % 2 == 0 else (b, a)
        for fn in order:
            gc.collect()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            (ta if fn is a else tb).append(dt)
    return ta, tb


def _vit_b16() -> nn.Module:
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    m = vit_b_16(weights=None)
    nn.init.normal_(m.heads.head.weight, std=0.02)
    return m.eval()


def bench_attention_overhead(quick: bool) -> list[Figure]:
    model = _vit_b16()
    x = torch.randn(1, 3, 224, 224)

    def plain():
        with torch.inference_mode():
            return model(x)

    def ours():
        with torch.inference_mode(), AttentionCapture(model, keep_qk=True) as cap:
            out = model(x)
        cap.collect()
        return out

    ta, tb = interleaved(ours, plain, repeats=10 if quick else 40)
    ratio = statistics.median(ta) / statistics.median(tb)
    diff = float((plain() - ours()).abs().max())
    return [
        Figure(
            "attention_overhead_ratio",
            round(ratio, 4),
            "x",
            1.05,
            False,
            f"ViT-B/16 batch 1, 224 px: median {statistics.median(ta) * 1e3:.1f} ms vs "
            f"{statistics.median(tb) * 1e3:.1f} ms",
        ),  # fmt: skip
        Figure("logits_max_abs_diff", diff, "abs", 1e-5, False),
    ]


_PEAK_CHILD = """
import resource, sys, torch
from torch import nn
from torchvision.models import vit_h_14
from vit_desktop.core.capture import AttentionCapture
torch.manual_seed(0)
m = vit_h_14(weights=None, image_size=518).eval()
nn.init.normal_(m.heads.head.weight, std=0.02)
x = torch.randn(1, 3, 518, 518)
with torch.inference_mode():
    m(x)  # warm: allocator pools and kernels settle before the measured run
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "capture":
        with AttentionCapture(m, keep_qk=True) as cap:
            m(x)
        cls, q, k = cap.collect()
        kept = cls.nbytes + q.nbytes + k.nbytes
    else:
        m(x)
        kept = 0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, kept)
"""


def bench_h14_capture_memory() -> list[Figure]:
    """Extra peak memory (KiB of max RSS) of full capture on ViT-H/14 at 518 px, each side in a
    fresh process after a warm-up forward."""
    import subprocess

    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_CHILD, mode], capture_output=True, text=True, check=True
        )
        grow, kept = out.stdout.split()
        return int(grow), int(kept)

    plain, _ = run("plain")
    cap, kept = run("capture")
    extra_mb = max(0, cap - plain) / 1024
    return [
        Figure(
            "vit_h14_518_capture_peak_mb",
            round(extra_mb, 1),
            "MB",
            400,
            False,
            f"captured arrays {kept / 1e6:.0f} MB (CLS rows + float16 queries and keys)",
        ),  # fmt: skip
    ]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (CI)")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = p.parse_args(argv)
    figures = bench_attention_overhead(args.quick)
    if not args.quick:
        figures += bench_h14_capture_memory()
    print(f"# {machine()}")
    print(f"{'figure':<28} {'value':>12} {'unit':<5} {'target':>8}  ok")
    for f in figures:
        t = "" if f.target is None else f"{f.target:g}"
        print(f"{f.key:<28} {f.value:>12.6g} {f.unit:<5} {t:>8}  {f.ok}  {f.note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({f.key: f.to_dict() for f in figures}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
