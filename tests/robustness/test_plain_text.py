"""Text that is not plain text: HTML in labels, names and links is shown as typed (never
rendered, never a clickable link), terminal escape sequences never reach a terminal raw,
spreadsheet formulas in labels are never run, and a huge label cannot freeze a panel.
Folders are walked off the GUI thread."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from PySide6.QtCore import QMimeData, Qt, QUrl

from tests.helpers import drop_mime, shape_file
from vit_desktop.core.export import ResultWriter, table_line
from vit_desktop.core.preprocess import Geometry
from vit_desktop.core.results import ClassificationResult, Prediction
from vit_desktop.ui import plain
from vit_desktop.ui.jobs import JobKind
from vit_desktop.ui.transfer import describe_drop

HOSTILE = ["<b>bold</b> <a href='https://evil.example/'>click</a>", "=HYPERLINK(\"http://x\",\"y\")",
           "\x1b[2J\x1b[31mred", "+1", "@SUM(A1)", "-2"]  # fmt: skip


def _result(labels: list[str]) -> ClassificationResult:
    geom = Geometry(original_size=(32, 32), input_size=(32, 32), scale=(1.0, 1.0), offset=(0, 0),
                    patch_size=16, patch_grid=(2, 2))  # fmt: skip
    n = len(labels)
    probs = np.linspace(1, 0.5, n).astype(np.float32)
    probs /= probs.sum()
    top = tuple(Prediction(labels[i], i, float(probs[i])) for i in range(n))
    return ClassificationResult(source="/x/<i>a</i>.png", model_id="m", device="cpu", top_k=top, probs=probs,
                                geometry=geom, latency_ms=1.0)  # fmt: skip


def test_labels_in_the_predictions_panel_are_plain_text_and_cut(qtbot, make_window):
    win = make_window()
    huge = "x" * 5_000_000
    labels = [*HOSTILE, huge]
    win.predictions.k.setValue(len(labels))
    win.predictions.set_result(_result(labels))
    names = [row.name for row in win.predictions._row_widgets[: len(labels)]]
    assert all(w.textFormat() == Qt.TextFormat.PlainText for w in names)
    assert names[0].text() == HOSTILE[0]  # shown as typed
    assert "\x1b" not in names[2].text() and "\\x1b" in names[2].text()
    assert len(names[-1].text()) <= plain.LABEL_MAX  # a 5 MB label is cut for display
    assert len(names[-1].toolTip()) < 3 * plain.TOOLTIP_MAX


def test_tooltips_escape_markup():
    tip = plain.tooltip("<a href='https://evil.example/'>x</a>\nsecond line")
    assert "<a " not in tip and "&lt;a href=" in tip and "<br>" in tip


def test_model_name_and_status_labels_are_plain_text(qtbot, make_window):
    win = make_window()
    assert win.status.model.textFormat() == Qt.TextFormat.PlainText
    assert win.status.job.textFormat() == Qt.TextFormat.PlainText
    assert win.offer_bar.label.textFormat() == Qt.TextFormat.PlainText


def test_fetch_question_shows_the_host_alone(qtbot, make_window):
    win = make_window()
    asked = []
    win.ask = lambda title, text: asked.append(text) or False
    md = QMimeData()
    md.setUrls([QUrl("http://photos.example/pic.png?next=<b>bank.example</b>")])
    drop_mime(win, md)
    assert asked and "photos.example" in asked[0] and "bank.example" not in asked[0] and "<b>" not in asked[0]


def test_malformed_links_are_one_line_not_an_exception(qtbot, make_window):
    win = make_window()
    asked = []
    win.ask = lambda title, text: asked.append(text) or False
    for link in ("http://[::1/pic.png", "http://host.example:99999/pic.png"):
        md = QMimeData()
        md.setText(link)
        ok, text = describe_drop(md)
        assert text and "\n" not in text
        if ok:
            drop_mime(win, md)
    assert len(asked) == 1 and "host.example" in asked[0]


def test_csv_never_runs_formulas_and_terminals_get_no_escape_sequences():
    obj = _result(HOSTILE).to_dict()
    buf = io.StringIO()
    ResultWriter("csv", buf).write(obj)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    labels = [r["label"] for r in rows]
    assert (
        labels[1].startswith("'=")
        and labels[3] == "'+1"
        and labels[4].startswith("'@")
        and labels[5] == "'-2"
    )
    assert all("\x1b" not in v for r in rows for v in r.values())
    line = table_line(obj)
    assert "\x1b" not in line and "\\x1b" in line and "\n" not in line


def test_folders_are_walked_off_the_gui_thread(qtbot, make_window, tmp_path):
    win = make_window()
    folder = tmp_path / "many"
    folder.mkdir()
    first, _ = shape_file(folder, 3, size=(64, 48))
    for i in range(1000):
        os.link(first, folder / f"copy{i:05d}.png")
    win.add_paths([str(folder)])
    # Nothing was walked on this thread: the images arrive later, in batches, as a job.
    assert len(win.items) == 0 and win.status.running(JobKind.WALK)
    qtbot.waitUntil(lambda: len(win.items) == 1001 and win.idle(), timeout=300_000)
    assert win.gallery.count() == 1001 and win.items[win.current].detailed  # the first found is shown


def test_a_walk_can_be_cancelled(qtbot, make_window, tmp_path):
    win = make_window()
    folder = tmp_path / "deep"
    first, _ = shape_file(tmp_path, 3, size=(32, 32))
    for d in range(200):
        sub = folder / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(100):
            os.link(first, sub / f"p{i:03d}.png")
    win.add_paths([str(folder)])
    win.status.cancel_button.click()
    qtbot.waitUntil(lambda: not win.status.running(JobKind.WALK), timeout=30_000)
    assert len(win.items) < 20_000
