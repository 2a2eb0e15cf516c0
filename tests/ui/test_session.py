"""The window's session rules, headless: no Qt, no model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vit_desktop.core.preprocess import Geometry
from vit_desktop.core.results import AttentionResult, ClassificationResult, Prediction
from vit_desktop.core.sources import DataSource, FileSource, WebSource
from vit_desktop.ui.session import KEEP_DETAILED, Session


def _result(key: str, with_qk: bool = True) -> ClassificationResult:
    grid = (2, 2)
    geom = Geometry(original_size=(64, 64), input_size=(32, 32), scale=(0.5, 0.5), offset=(0, 0),
                    patch_size=16, patch_grid=grid)  # fmt: skip
    cls = np.full((1, 1, 5), 0.2, np.float32)
    qk = np.zeros((1, 1, 5, 4), np.float16) if with_qk else None
    att = AttentionResult(cls=cls, q=qk, k=None if qk is None else qk.copy(), grid=grid)
    return ClassificationResult(source=key, model_id="m", device="cpu", top_k=(Prediction("a", 0, 0.9),),
                                probs=np.array([0.9, 0.1], np.float32), geometry=geom, latency_ms=1.0,
                                attention=att, attention_peak=(1.0, 1.0))  # fmt: skip


def _files(session: Session, n: int, start: int = 0) -> list[str]:
    keys = [f"/pics/{i}.png" for i in range(start, start + n)]
    session.add([(k, k.rsplit("/", 1)[-1], FileSource(k)) for k in keys])
    return keys


def test_the_session_imports_no_qt_and_no_torch():
    code = "import sys, vit_desktop.ui.session; print(any(m.split('.')[0] in ('PySide6', 'torch') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_nothing_runs_before_the_model_is_ready_then_files_go_to_one_folder_job():
    s = Session()
    keys = _files(s, 5)
    assert s.plan(keys).folder == () and s.plan(keys).detail == ()
    s.next_generation()
    s.model_loaded()
    plan = s.plan(keys)
    assert plan.detail == (keys[0],) and plan.folder == tuple(keys[1:]) and plan.singles == ()
    assert s.current == keys[0]


def test_links_and_image_data_run_one_by_one_not_in_the_folder_job():
    s = Session()
    s.next_generation()
    s.model_loaded()
    key, label = s.next_pasted("pasted image")
    _, keys = s.add([("/a.png", "a.png", FileSource("/a.png")), ("https://x/y.jpg", "y.jpg", WebSource("https://x/y.jpg")),
                     (key, label, DataSource(object(), label)), ("/b.png", "b.png", FileSource("/b.png"))])  # fmt: skip
    plan = s.plan(keys)
    assert plan.detail == ("/a.png",) and plan.folder == ("/b.png",)
    assert plan.singles == ("https://x/y.jpg", "pasted:1")
    assert s.next_pasted("pasted image") == ("pasted:2", "pasted image 2")


def test_results_of_a_replaced_model_are_dropped_latest_wins():
    s = Session()
    old = s.next_generation()
    s.model_loaded()
    (key,) = _files(s, 1)
    new = s.next_generation()
    assert s.accept(old, key, _result(key), detailed=True) is None and s.items[key].result is None
    assert s.fail(old, key, "late") is None and s.items[key].error is None
    s.model_loaded()
    assert s.accept(new, key, _result(key), detailed=True) is s.items[key]


def test_a_folder_result_never_replaces_a_full_one():
    s = Session()
    gen = s.next_generation()
    s.model_loaded()
    (key,) = _files(s, 1)
    full = _result(key)
    s.accept(gen, key, full, detailed=True)
    assert s.accept(gen, key, _result(key, with_qk=False), detailed=False) is None
    assert s.items[key].result is full and s.items[key].detailed


def test_detail_requests_are_numbered_and_asked_once_per_model():
    s = Session()
    s.next_generation()
    (a, b) = _files(s, 2)
    assert s.detail_request(a) is None  # no model yet
    s.model_loaded()
    first = s.detail_request(a)
    assert first and s.detail_request(a) is None  # already asked with this model
    assert s.detail_request(b) == first + 1
    s.next_generation()
    s.model_loaded()
    assert s.detail_request(a) == first + 2  # a new model: asked again
    assert s.detail_request(b, latest_wins=False) == 0


def test_a_dropped_request_is_asked_again_when_shown_or_run_in_the_background():
    s = Session()
    gen = s.next_generation()
    s.model_loaded()
    a, b = _files(s, 2)
    s.detail_request(a)
    s.detail_request(b)
    assert s.dropped(gen, a) == "detail"  # a is on screen
    assert s.dropped(gen, b) == "background"
    s.fail(gen, b, "broken")
    assert s.dropped(gen, b) is None  # done: nothing to ask
    assert s.dropped(gen - 1, a) is None  # a replaced model's request


def test_memory_stays_bounded_the_image_on_screen_is_never_evicted():
    s = Session()
    gen = s.next_generation()
    s.model_loaded()
    keys = _files(s, KEEP_DETAILED + 5)
    s.current = keys[0]
    for k in keys:
        s.accept(gen, k, _result(k), detailed=True)
        s.items[k].display = object()
        s.keep_detailed(k)
    kept = [k for k in keys if s.items[k].detailed]
    assert len(kept) == KEEP_DETAILED and keys[0] in kept  # the one on screen and the latest others
    evicted = [s.items[k] for k in keys if k not in kept]
    assert all(i.display is None and i.result.attention.q is None and i.detail_gen == -1 for i in evicted)
    assert all(i.result.attention.cls is not None for i in evicted)  # predictions and CLS rows stay


def test_export_records_keep_gallery_order_and_names_that_are_not_utf8():
    s = Session()
    gen = s.next_generation()
    s.model_loaded()
    odd = "/pics/caf\udce9.png"  # a Latin-1 name on a UTF-8 system
    s.add([(odd, "café", FileSource(odd)), ("/pics/b.png", "b", FileSource("/pics/b.png")),
           ("/pics/c.png", "c", FileSource("/pics/c.png"))])  # fmt: skip
    s.fail(gen, "/pics/b.png", "b.png: broken")
    s.accept(gen, odd, _result(odd), detailed=False)
    rows = list(s.records())
    assert [r["path"] for r in rows] == [odd, "/pics/b.png"]  # c has not finished
    assert rows[1] == {"path": "/pics/b.png", "error": "b.png: broken"}
    assert s.items[odd].label == "café" and not s.idle()


def test_an_image_that_fails_with_a_new_model_shows_no_old_answer():
    s = Session()
    old = s.next_generation()
    s.model_loaded()
    (key,) = _files(s, 1)
    s.accept(old, key, _result(key), detailed=True)
    new = s.next_generation()
    s.model_loaded()
    s.fail(new, key, "a.png: the model's output is not a number")
    assert s.items[key].result is None and list(s.records()) == [{"path": key, "error": s.items[key].error}]


def test_a_cancel_pressed_before_the_worker_starts_a_job_still_cancels_it():
    from vit_desktop.ui.jobs import Cancels, Job, JobKind

    cancels, sent = Cancels(), []
    asked = cancels.check()  # the window asks for a folder run…
    cancels.press()  # …the person presses Cancel while the worker is still busy…
    job = Job(JobKind.FOLDER, 1, cancels, sent.append, 7, asked)  # …then the worker starts it
    assert job.cancelled() and not Job(JobKind.FOLDER, 1, cancels, sent.append).cancelled()
