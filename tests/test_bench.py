"""The benchmark harness runs end to end (tiny models and images) and writes well-formed JSON.

No timings are asserted here: speed is measured by ``bench/run.py`` and recorded in
bench/RESULTS.md, never checked by a test."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run.py"


def _keys() -> dict:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec and spec.loader
    sys.path.insert(0, str(RUN.parent))
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(RUN.parent))
    return mod.KEYS


EXPECTED = {
    "attention_overhead_ratio", "logits_max_abs_diff", "folder_vs_torchvision_loop",
    "folder_vs_hf_pipeline", "folder_gemm_fraction", "large_jpeg_to_result_ratio", "large_jpeg_window_share", "window_shown_ms",
    "first_prediction_ms",
    "ui_max_stall_ms", "rss_growth_ratio", "gemm_efficiency", "vit_h14_518_capture_peak_mb",
    "fast_mode_speedup", "fast_mode_top1_agreement", "timm_vit_s16_capture_overhead_ratio",
    "hf_vit_b16_capture_overhead_ratio", "explain_chefer_vs_forward", "explain_gradcam_vs_forward",
    "explain_attn_grad_vs_forward", "explain_occlusion_vs_forward", "chefer_b16_extra_peak_mb",
    "chefer_h14_518_extra_peak_mb", "explain_ui_max_stall_ms", "explain_cached_class_ms", "ray_vs_local_demo", "ray_vs_local_vit_b16", "ray_scaling_2_vs_1",
    "teach_extract_vs_folder", "teach_linear_head_s", "teach_retrain_extracted", "teach_peak_mb",
    "teach_default_accuracy", "teach_best_accuracy",
}  # fmt: skip


def test_every_figure_of_the_issue_is_declared():
    keys = _keys()
    assert set(keys) == EXPECTED
    for target, higher, unit in keys.values():
        assert isinstance(target, (int, float)) and isinstance(higher, bool) and unit


@pytest.mark.slow
def test_quick_tiny_run_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--tiny", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not measured" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert set(data) >= EXPECTED, sorted(EXPECTED - set(data))
    declared = _keys()
    for key in EXPECTED:
        fig = data[key]
        assert set(fig) == {"value", "unit", "target", "ok"}, key
        assert isinstance(fig["unit"], str) and fig["unit"], key
        value = fig["value"]
        if value is None:  # only where the machine cannot measure it, with the reason printed
            assert key.startswith("fast_mode"), f"{key} was not measured:\n{proc.stdout}"
            assert fig["ok"] is None
            continue
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        assert math.isfinite(value), key
        assert fig["target"] == declared[key][0], key
        assert isinstance(fig["ok"], bool), key
        higher = declared[key][1]
        assert fig["ok"] == (value >= fig["target"] if higher else value <= fig["target"]), key
    # The table names every figure too.
    for key in EXPECTED:
        assert key in proc.stdout
