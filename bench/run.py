"""Benchmarks, each measured side by side in one run with the sides interleaved.

    python bench/run.py [--quick] [--tiny] [--json OUT.json] [--only KEY,...]

Prints a table; ``--json`` writes one object whose keys are the figure names, each
``{"value": number, "unit": str, "target": number|null, "ok": bool|null}`` (value null
only when a figure could not be measured here, with the reason in the table).
Models without downloadable weights here are built with random weights (that does not
change their speed); torchvision's zero-initialised head is re-initialised so that logit
comparisons are not vacuous.  ``--quick`` takes under 10 minutes on 2 cores; ``--tiny``
runs every figure on tiny models and images (a check that the harness works, in seconds).
With CUDA present, the model-level figures are measured on the GPU too (keys ``…_cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from harness import FULL, QUICK, TINY, Figure, Machine, Sizes, cache_dir, image_set, large_jpeg  # noqa: E402

# key → (target, higher is better, unit): a figure that fails to run is still reported.
KEYS: dict[str, tuple[float, bool, str]] = {
    "attention_overhead_ratio": (1.05, False, "x"),
    "logits_max_abs_diff": (1e-5, False, "abs"),
    "folder_vs_torchvision_loop": (1.2, True, "x"),
    "folder_vs_hf_pipeline": (1.2, True, "x"),
    "folder_gemm_fraction": (0.90, True, "ratio"),
    "large_jpeg_to_result_ratio": (1.3, False, "x"),
    "window_shown_ms": (1000, False, "ms"),
    "first_prediction_ms": (3000, False, "ms"),
    "ui_max_stall_ms": (35, False, "ms"),
    "large_jpeg_window_share": (1.1, False, "x"),
    "rss_growth_ratio": (1.05, False, "x"),
    "gemm_efficiency": (0.85, True, "ratio"),
    "vit_h14_518_capture_peak_mb": (400, False, "MB"),
    "fast_mode_speedup": (1.8, True, "x"),
    "fast_mode_top1_agreement": (0.995, True, "ratio"),
    "timm_vit_s16_capture_overhead_ratio": (1.05, False, "x"),
    "hf_vit_b16_capture_overhead_ratio": (1.05, False, "x"),
    "explain_chefer_vs_forward": (3.0, False, "x"),
    "explain_gradcam_vs_forward": (3.0, False, "x"),
    "explain_attn_grad_vs_forward": (3.0, False, "x"),
    "explain_occlusion_vs_forward": (196.0, False, "x"),
    "chefer_b16_extra_peak_mb": (300, False, "MB"),
    "chefer_h14_518_extra_peak_mb": (1500, False, "MB"),
    "explain_ui_max_stall_ms": (50, False, "ms"),
    "explain_cached_class_ms": (50, False, "ms"),
    "ray_vs_local_demo": (0.8, True, "x"),
    "ray_vs_local_vit_b16": (0.8, True, "x"),
    "ray_scaling_2_vs_1": (1.8, True, "x"),
    "teach_extract_vs_folder": (0.9, True, "x"),
    "teach_linear_head_s": (2.0, False, "s"),
    "teach_retrain_extracted": (10, False, "images"),
    "teach_peak_mb": (1000, False, "MB"),
    "teach_default_accuracy": (0.85, True, "ratio"),
    "teach_best_accuracy": (0.92, True, "ratio"),
}


def benchmarks(sizes: Sizes) -> list[tuple[tuple[str, ...], Callable[[], list[Figure]]]]:
    import app_figures
    import explain_figures
    import family_figures
    import folder_figures
    import model_figures
    import ray_figures
    import teach_figures

    folder = cache_dir(sizes)
    out: list[tuple[tuple[str, ...], Callable[[], list[Figure]]]] = [
        (("attention_overhead_ratio", "logits_max_abs_diff"), lambda: model_figures.attention_overhead(sizes)),
        (("gemm_efficiency",), lambda: model_figures.gemm_efficiency(sizes)),
        (("fast_mode_speedup", "fast_mode_top1_agreement"), lambda: model_figures.fast_mode(sizes)),
        (("folder_vs_torchvision_loop", "folder_gemm_fraction", "folder_vs_hf_pipeline", "folder_fast_vs_hf_pipeline"),
         lambda: folder_figures.folder_throughput(sizes, image_set(sizes, folder / f"folder-{sizes.name}"))),
        (("large_jpeg_to_result_ratio", "large_jpeg_window_share", "large_jpeg_sharp_ms", "ui_max_stall_ms"),
         lambda: app_figures.window_figures(sizes, folder, large_jpeg(sizes, folder))),
        (("window_shown_ms", "first_prediction_ms"), lambda: app_figures.startup(sizes, folder)),
        (("rss_growth_ratio",), lambda: app_figures.rss_growth(sizes)),
        (("vit_h14_518_capture_peak_mb",), lambda: model_figures.capture_peak_memory(sizes)),
        (("timm_vit_s16_capture_overhead_ratio",), lambda: family_figures.timm_overhead(sizes)),
        (("hf_vit_b16_capture_overhead_ratio",), lambda: family_figures.hf_overhead(sizes)),
        (("explain_chefer_vs_forward", "explain_gradcam_vs_forward", "explain_attn_grad_vs_forward",
          "explain_occlusion_vs_forward"), lambda: explain_figures.map_time(sizes)),
        (("explain_ui_max_stall_ms", "explain_cached_class_ms"), lambda: explain_figures.window_figures(sizes, folder)),
        (("chefer_b16_extra_peak_mb", "chefer_h14_518_extra_peak_mb"),
         lambda: explain_figures.chefer_peak_memory(sizes)),
        (("ray_vs_local_demo", "ray_vs_local_vit_b16", "ray_scaling_2_vs_1", "ray_startup_s",
          "ray_vit_b16_cuda_img_s"),
         lambda: ray_figures.ray_figures(sizes, folder)),
        (("teach_extract_vs_folder",),
         lambda: teach_figures.extraction_vs_folder(sizes, image_set(sizes, folder / f"folder-{sizes.name}"))),
        (("teach_linear_head_s",), lambda: teach_figures.linear_head_time(sizes)),
        (("teach_default_accuracy", "teach_best_accuracy", "teach_retrain_extracted"),
         lambda: teach_figures.retrain_and_accuracy(sizes)),
        (("teach_peak_mb",), lambda: teach_figures.peak_memory(sizes)),
    ]  # fmt: skip
    if torch.cuda.is_available():
        out += [
            (("attention_overhead_ratio_cuda", "logits_max_abs_diff_cuda"),
             lambda: model_figures.attention_overhead(sizes, "cuda", "_cuda")),
            (("fast_mode_speedup_cuda", "fast_mode_top1_agreement_cuda"),
             lambda: model_figures.fast_mode(sizes, "cuda", "_cuda")),
        ]  # fmt: skip
    return out


def _failed(keys: tuple[str, ...], exc: BaseException) -> list[Figure]:
    reason = f"not measured: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    figs = []
    for k in keys:
        target, higher, unit = KEYS.get(k.removesuffix("_cuda"), (None, False, ""))
        figs.append(Figure(k, None, unit, target, higher, reason))
    return figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (under 10 minutes on 2 cores)")
    p.add_argument("--tiny", action="store_true", help="tiny models and images: checks the harness runs")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    p.add_argument("--only", metavar="KEY,...", help="run only the benchmarks giving these figures")
    args = p.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else None
    machine = Machine()
    print(f"# {machine.line()}; {sizes.name} run", flush=True)
    figures: list[Figure] = []
    for keys, run in benchmarks(sizes):
        if only and not only & set(keys):
            continue
        t0 = time.perf_counter()
        try:
            figs = run()
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            figs = _failed(keys, exc)
        for f in figs:
            _print(f)
        print(f"#   ({time.perf_counter() - t0:.0f} s)", flush=True)
        figures += figs
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({f.key: f.to_dict() for f in figures}, fh, indent=1)
    return 0


def _print(f: Figure) -> None:
    t = "" if f.target is None else f"{'≥' if f.higher_is_better else '≤'}{f.target:g}"
    v = "—" if f.value is None else f"{f.value:.6g}"
    ok = {True: "yes", False: "NO", None: "?"}[f.ok]
    print(f"{f.key:<28} {v:>10} {f.unit:<5} {t:>8} {ok:>3}  {f.note}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
