"""Classify on a Ray cluster, or on a Ray started on this machine: ``classify --engine ray``.

Ray Data does the scheduling: the paths to classify go into Ray's object store a chunk at a
time (:func:`_listing`; a listing of millions is never one Python list), and
``map_batches`` hands each chunk to one of a fixed pool of actors (:class:`_Worker`), each
holding one replica of the model on its own CPUs or GPU.  Each actor runs the local engine
itself (:meth:`.classifier.Classifier.iter_classify`) and turns every outcome into the
command line's record with :func:`.export.outcome_record`, so both engines write the same
records.  The model is loaded once, here on the driver (a catalog model's weights are
downloaded at most once, before any worker starts), and shipped to the workers through the
object store.

Ray is optional (``pip install 'vit-desktop[cluster]'``) and imported only here, only when
this engine runs; the window never imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import VitDesktopError

INSTALL_HINT = "pip install 'vit-desktop[cluster]'"

#: Images one Ray task classifies, in forward passes of ``batch_size``: a worker decodes the
#: next images while the model runs within a task, and a task's records reach the output
#: file together (a killed job redoes at most the tasks in flight).
TASK_BATCHES = 16


class RayEngineError(VitDesktopError):
    """Ray is missing, cannot be reached, or cannot run the workers asked for."""


@dataclass(frozen=True)
class RayJob:
    """What the workers do: the model (a catalog id or a checkpoint path, with ``labels``
    for a checkpoint), the classification settings of the local engine, and the workers."""

    model: str
    labels: str | None = None
    allow_download: bool = True
    fast: bool = False
    top_k: int = 5
    attention: str = "peak"
    batch_size: int = 8
    overlay_dir: str | None = None
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    progress_bars: bool = False
    task_batches: int = TASK_BATCHES
    pretrained: bool = True  # False: a catalog model with random weights (speed figures)
    input_size: tuple[int, int] | None = None  # (height, width) instead of the trained size
    explain: tuple[str, ...] = ()  # explanation methods added to each record (``--explain``)
    targets: tuple[str, ...] = ()  # their classes (``--target``)
    map_dir: str | None = None  # where the workers write the raw maps (``--map-out``)

    @property
    def task_size(self) -> int:
        return self.batch_size * self.task_batches


@dataclass
class RunStats:
    """What a run did, for the closing line."""

    images: int = 0
    failed: int = 0
    workers: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.images} images, {self.failed} failed, {rate:.1f} images/s, "
                f"{self.workers} worker{'s' if self.workers != 1 else ''} (Ray)")  # fmt: skip


def import_ray():
    """The ``ray`` module with Ray Data, its log lines sent to the app's log instead of the
    terminal; :class:`RayEngineError` saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayEngineError(f"--engine ray needs Ray ({exc}); install it with: {INSTALL_HINT}") from None
    for name in ("ray", "ray.data"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h).__name__ != "SessionFileHandler":  # Ray's own session log stays
                lg.removeHandler(h)
        lg.propagate = True
        lg.setLevel(logging.INFO)
    return ray


def _check_explain(loaded, job: RayJob) -> None:
    from .classifier import Classifier
    from .devices import resolve_device
    from .errors import VitDesktopError
    from .map_eval import check_request

    clf = Classifier(loaded.module, loaded.preprocessing, loaded.labels, loaded.model_id,
                     loaded.display_name, resolve_device("cpu"))  # fmt: skip
    try:
        check_request(clf, job.explain, job.targets)
    except ValueError as exc:
        raise VitDesktopError(str(exc)) from None


class RaySession:
    """A run of the Ray engine: the model loaded here once (model errors are raised before
    Ray starts), then Ray joined at ``job.address`` or started on this machine; :meth:`close`
    stops a Ray started here."""

    def __init__(self, job: RayJob, progress=None) -> None:
        from .loading import load_model

        self.ray = import_ray()
        self.job, self.stats = job, RunStats()
        loaded = load_model(job.model, pretrained=job.pretrained, allow_download=job.allow_download,
                            progress=progress, labels=job.labels)  # fmt: skip
        if job.input_size is not None:  # resized here, once: a size that cannot be used is one line
            from dataclasses import replace

            from .resizing import resize_model

            pre = resize_model(loaded.module, loaded.preprocessing, job.input_size, loaded.display_name)
            loaded = replace(loaded, preprocessing=pre)
        if job.explain:  # an unknown class or a model without class-specific maps: one line, here
            _check_explain(loaded, job)
        self.started = _connect(self.ray, job)
        try:
            self.stats.workers = _worker_count(self.ray, job)
            self.shipped = self.ray.put(loaded)
        except BaseException:
            self.close()
            raise

    def classify(self, sources: Iterable[str]) -> Iterator[tuple[dict, str | None]]:
        """The record of every image in ``sources`` (in the order the workers finish them)
        and why its overlay could not be written (or None)."""
        ray, job = self.ray, self.job
        refs = _listing(ray, sources, job.task_size)
        if not refs:
            return
        ray.data.DataContext.get_current().enable_progress_bars = job.progress_bars
        ds = ray.data.from_arrow_refs(refs).map_batches(
            _Worker,
            batch_size=job.task_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.stats.workers),
            num_cpus=job.cpus_per_worker,
            num_gpus=job.gpus_per_worker or None,
            fn_constructor_kwargs={"shipped": [self.shipped], "job": job, "cwd": os.getcwd()},
        )
        t0 = time.perf_counter()
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for rec, err in zip(batch["record"].to_pylist(), batch["overlay_error"].to_pylist()):
                obj = json.loads(rec)
                self.stats.images += 1
                self.stats.failed += ("error" in obj) + bool(err)
                self.stats.seconds = time.perf_counter() - t0
                yield obj, err or None

    def close(self) -> None:
        if self.started:
            self.started = False
            self.ray.shutdown()


def _connect(ray, job: RayJob) -> bool:
    """Join the cluster at ``job.address``, or start a Ray on this machine; whether this
    call started or joined it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    common = {"log_to_driver": False, "configure_logging": False}
    try:
        if job.address:
            ray.init(address=job.address, **common)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local run reports nothing
            # "local": a Ray of its own, even where RAY_ADDRESS or a running cluster is found
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **common)
    except ConnectionError as exc:
        where = job.address or "this machine"
        raise RayEngineError(
            f"could not reach the Ray cluster at {where}: {' '.join(str(exc).split())}"
        ) from None
    return True


def _worker_count(ray, job: RayJob) -> int:
    """``job.workers``, or as many workers as the cluster has room for now.  On a Ray started
    here, asking for more than the machine holds is an error (nothing would ever run); a
    cluster may add machines for them (its autoscaler)."""
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    fit = int(cpus // job.cpus_per_worker)
    if job.gpus_per_worker:
        fit = min(fit, int(gpus // job.gpus_per_worker))
    need = f"{job.cpus_per_worker:g} CPU" + (
        f" and {job.gpus_per_worker:g} GPU" if job.gpus_per_worker else ""
    )
    has = f"{cpus:g} CPUs and {gpus:g} GPUs"
    if job.workers is None:
        if fit >= 1 or job.address:
            return max(1, fit)
        raise RayEngineError(f"this machine has room for no worker: each needs {need}, it has {has}")
    if job.workers > fit and not job.address:
        raise RayEngineError(f"--workers {job.workers} needs {job.workers} × {need}; this machine has {has}")
    return job.workers


def _listing(ray, sources: Iterable[str], rows: int) -> list:
    """The paths as Arrow tables of ``rows`` paths each, put into the object store as they
    are listed; each path is JSON text (ASCII), so a name whose bytes are not UTF-8 travels
    unchanged."""
    import pyarrow as pa

    refs, chunk = [], []
    for path in sources:
        chunk.append(json.dumps(os.fspath(path)))
        if len(chunk) == rows:
            refs.append(ray.put(pa.table({"source": chunk})))
            chunk = []
    if chunk:
        refs.append(ray.put(pa.table({"source": chunk})))
    return refs


class _Worker:
    """One model replica in a Ray actor: classifies a chunk of paths with the local engine
    and returns each outcome's record as JSON text, with why its overlay could not be
    written ("" when it was, or none was asked for)."""

    def __init__(self, shipped: list, job: RayJob, cwd: str) -> None:
        import ray
        import torch

        from .classifier import Classifier
        from .devices import decode_workers, limit_numpy_blas_threads, resolve_device

        if os.path.isdir(cwd):  # relative paths mean what they mean on the driver
            os.chdir(cwd)
        limit_numpy_blas_threads()
        cpus = max(1, int(job.cpus_per_worker))
        if job.gpus_per_worker:
            device, self.decoders = resolve_device("cuda"), cpus
        else:
            torch.set_num_threads(cpus)
            device, self.decoders = resolve_device("cpu"), decode_workers(cpus)
        loaded = ray.get(shipped[0])
        self.clf = Classifier(loaded.module, loaded.preprocessing, loaded.labels, loaded.model_id,
                              loaded.display_name, device)  # fmt: skip
        if job.fast:
            self.clf.set_fast(True)  # where it is not available, float32 as in the local engine
        self.job = job
        self.overlay_dir = None
        if job.overlay_dir:
            from pathlib import Path

            self.overlay_dir = Path(job.overlay_dir)
            self.overlay_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch) -> dict[str, list[str]]:
        from .export import outcome_record
        from .map_eval import add_explanations

        job = self.job
        sources = [json.loads(s) for s in batch["source"].to_pylist()]
        records, errors = [], []
        for res in self.clf.iter_classify(
            sources, job.batch_size, job.top_k, job.attention, workers=self.decoders
        ):
            obj, err = outcome_record(res, self.overlay_dir, self.clf.max_pixels)
            if job.explain:
                err = add_explanations(self.clf, res, obj, err, job.explain, job.targets, job.map_dir)
            records.append(json.dumps(obj))
            errors.append(err or "")
        return {"record": records, "overlay_error": errors}
