"""What the service computes with: the served model (:class:`Served`), its two backends, and the dynamic
micro-batcher that turns concurrent requests into one forward pass (:class:`Batcher`).

A request is a :class:`Job`: external item ids (or a known user), k, exclude_seen, candidate items. Jobs are
encoded by the model that runs them, at the moment it runs them, so a reload that changes the vocabulary
between a request's arrival and its batch never mixes the two models' ids.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqrec import export, rundir
from seqrec.data.sequences import Histories
from seqrec.errors import ConfigError, SeqrecError
from seqrec.ids import FIRST_ITEM
from seqrec.models import MODELS, load
from seqrec.models.base import Recommender
from seqrec.service.options import BACKENDS

log = logging.getLogger(__name__)


class OnnxRanker:
    """:meth:`Recommender.rank` on an ONNX export (see :mod:`seqrec.export`) with onnxruntime: the complete
    ``topk.onnx`` graph for full-catalogue requests, ``encoder.onnx`` and the item table for candidate lists.
    The graph excludes the items of the window it reads; items older than the window are excluded here (the
    graph is asked for that many more, and they are filtered out), as the PyTorch model does."""

    def __init__(self, folder: Path, model: Recommender, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.topk = ort.InferenceSession(str(folder / "topk.onnx"), options, providers=providers)
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.weights = np.load(folder / "item_embeddings.npy")
        self.bias = np.load(folder / "item_bias.npy") if (folder / "item_bias.npy").exists() else None
        self.model, self.max_len = model, model.max_len

    def rank(self, histories: Histories, k: int = 10, exclude_seen: bool = True, items=None):
        n = len(self.weights)
        k = min(int(k), n)
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        windows = np.ascontiguousarray(histories.windows(self.max_len))
        if items is not None:
            return self._rank_candidates(histories, windows, k, exclude_seen, items)
        # items older than the window, at most, per row
        extra = int((histories.ends - histories.starts - self.max_len).max(initial=0)) if exclude_seen else 0
        ids, scores = self.topk.run(None, {"ids": windows, "k": np.array(min(k + extra, n), dtype=np.int64),
                                           "exclude_seen": np.full(len(windows), exclude_seen)})
        if not extra:
            return ids, scores
        out_ids, out_scores = np.empty((len(ids), k), dtype=np.int64), np.empty((len(ids), k), dtype=np.float32)
        for r in range(len(ids)):  # per row with items older than the window: drop them from its list
            seen = histories.items[histories.starts[r]:max(histories.ends[r] - self.max_len, histories.starts[r])]
            keep = ~np.isin(ids[r], seen) | ~np.isfinite(scores[r])
            out_ids[r], out_scores[r] = ids[r][keep][:k], scores[r][keep][:k]
        return out_ids, out_scores

    def _rank_candidates(self, histories, windows, k, exclude_seen, items):
        codes = np.unique(self.model.candidate_ids(items))
        users = self.encoder.run(None, {"ids": windows})[0]
        scores = users @ self.weights[codes - FIRST_ITEM].T
        if self.bias is not None:
            scores += self.bias[codes - FIRST_ITEM]
        if exclude_seen:
            rows, seen = histories.seen()
            hit = np.isin(seen, codes)
            scores[rows[hit], np.searchsorted(codes, seen[hit])] = -np.inf
        k = min(k, len(codes))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return codes[order], np.take_along_axis(scores, order, axis=1).astype(np.float32)


@dataclass
class Served:
    """A loaded run directory, ready to rank: the model (the estimator contract), the ranker of the chosen
    backend (the model itself, or :class:`OnnxRanker`), and what the model card shows."""

    run_dir: Path
    model: Recommender
    ranker: object
    backend: str
    model_id: str
    card: dict
    user_index: dict = field(repr=False, default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    @property
    def max_len(self) -> int | None:
        return getattr(self.model, "max_len", None)

    @classmethod
    def load(cls, run_dir, backend: str = "torch", threads: int = 0) -> "Served":
        """Read and check ``run_dir``, build the backend, and rank once (a model that cannot rank is refused
        here, before it replaces anything)."""
        run_dir = Path(run_dir)
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        config = rundir.read_config(run_dir, MODELS)
        model = load(run_dir, device="cpu")
        ranker = model
        if backend == "onnx":
            ranker = OnnxRanker(onnx_export(run_dir, model, config), model, threads)
        digest = config["files"]["weights.safetensors"]["sha256"]
        served = cls(run_dir, model, ranker, backend, f"{model.name}-{digest[:12]}", model_card(run_dir, model, config),
                     {str(u): i for i, u in enumerate(model.vocab_.users.tolist())})
        served.rank(Histories.from_lists([model.histories_.items[:1]]), 1, True, None)  # warm-up and self-check
        return served

    def rank(self, histories: Histories, k: int, exclude_seen: bool, items):
        return self.ranker.rank(histories, k, exclude_seen, items)


def onnx_export(run_dir: Path, model: Recommender, config: dict) -> Path:
    """RUN_DIR/onnx, exported now if it is missing or was exported from other weights."""
    folder = run_dir / "onnx"
    manifest = folder / export.MANIFEST
    digest = config["files"]["weights.safetensors"]["sha256"]
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("weights_sha256") == digest:
                return folder
        except ValueError:
            pass
    if not export.exportable(model):
        raise ConfigError(f"--backend onnx: {model.name} does not export to ONNX (sasrec, bert4rec, gru4rec and "
                          "gru4rec+ do); serve it with --backend torch")
    log.info("exporting %s to %s", run_dir, folder)
    export.export_onnx(run_dir, folder)
    return folder


def model_card(run_dir: Path, model: Recommender, config: dict) -> dict:
    """GET /v1/model: the model, its options, the data it was trained on (with a fingerprint of the saved
    histories), the protocol card and the test metrics of the run."""
    metrics = rundir.read_metrics(run_dir)
    files = config["files"]
    return {
        "name": model.name, "params": model.describe(), "run_dir": str(run_dir.resolve()),
        "n_items": model.vocab_.n_items, "n_users": model.vocab_.n_users,
        "training_data": {key: config[key] for key in ("data", "split", "filters", "run") if key in config}
        | {"fingerprint_sha256": files.get("split.npz", files["histories.npz"])["sha256"]},
        "weights_sha256": files["weights.safetensors"]["sha256"], "seqrec_version": config.get("seqrec_version"),
        "test": metrics,
    }


# ---- micro-batching ------------------------------------------------------------------------------
@dataclass
class Job:
    """One request: histories of external item ids, one per row (for a user's row: the events appended
    through the service, which follow the user's stored history when the model knows the user), and its
    ranking options."""

    histories: list[list]
    k: int
    exclude_seen: bool
    items: tuple | None = None
    users: list[str | None] | None = None  # per row: the user whose stored history comes first (or None)
    future: asyncio.Future | None = None
    result: object = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return len(self.histories)


@dataclass
class Ranked:
    """A job's answer, per row: internal ids and scores (-inf tails removed), the unknown history items that
    were ignored, how many items were older than the window the model reads, and who answered."""

    ids: list[np.ndarray]
    scores: list[np.ndarray]
    unknown: list[list]
    truncated: list[int]
    lengths: list[int]
    served: Served


SMALL_PASS = 4  # a PyTorch pass over fewer histories runs on one thread: waking the others costs more


def execute(served: Served, jobs: list[Job], threads: int = 0) -> None:
    """Rank ``jobs`` with ``served`` (on the worker thread): jobs with the same options share one forward
    pass, each row with its own history; each job gets its result or its error. ``threads``: PyTorch's
    threads for a pass of at least SMALL_PASS histories (0: leave them as they are)."""
    if threads > 1 and served.backend == "torch":
        torch.set_num_threads(1 if sum(job.rows for job in jobs) < SMALL_PASS else threads)
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.exclude_seen, job.items), []).append(job)
    for (exclude_seen, items), group in groups.items():
        try:
            _execute_group(served, group, exclude_seen, items)
        except SeqrecError as exc:
            for job in group:
                job.error = exc
        except Exception as exc:  # noqa: BLE001  (the worker must survive anything; the job reports it)
            log.exception("ranking failed")
            for job in group:
                job.error = exc


def _execute_group(served: Served, group: list[Job], exclude_seen: bool, items) -> None:
    model = served.model
    flat = [h for job in group for h in job.histories]
    encoded, unknown = model.encode_histories(flat)
    # users are resolved by the model that ranks (a reload may have changed them since the request came)
    users = np.array([served.user_index.get(u, -1) if u is not None else -1
                      for job in group for u in (job.users if job.users is not None else [None] * job.rows)],
                     dtype=np.int64)
    known = model.histories_
    rows = []
    for codes, user in zip(encoded, users):
        if user >= 0:
            codes = np.concatenate([known.items[known.offsets[user]:known.offsets[user + 1]], codes])
        rows.append(codes)
    histories = Histories.from_lists(rows)
    if (users >= 0).any():
        histories = Histories(histories.items, histories.starts, histories.ends, users.astype(np.int64))
    k = max(job.k for job in group)
    ids, scores = served.rank(histories, k, exclude_seen, None if items is None else list(items))
    window = served.max_len
    lengths = [len(r) for r in rows]
    start = 0
    for job in group:
        ranked = Ranked([], [], [], [], [], served)
        for r in range(start, start + job.rows):
            finite = np.isfinite(scores[r, :job.k])
            ranked.ids.append(ids[r, :job.k][finite])
            ranked.scores.append(scores[r, :job.k][finite])
            ranked.unknown.append(unknown[r])
            ranked.truncated.append(max(lengths[r] - window, 0) if window else 0)
            ranked.lengths.append(lengths[r])
        start += job.rows
        job.result = ranked


class Batcher:
    """Dynamic micro-batching: requests that arrive while the worker is busy are ranked together, up to
    ``max_batch`` rows; while more requests are in flight than the batch holds (``arriving()`` counts the
    server's open requests), the worker also waits up to ``max_wait`` seconds for them to join. A pass
    has a large fixed cost (the whole item table is read to score any number of histories), so fuller
    passes serve more histories per second; a lone request never waits. One worker thread runs the model,
    so the event loop keeps accepting requests meanwhile."""

    def __init__(self, current, max_batch: int = 64, max_wait: float = 0.005, arriving=lambda: 0, threads: int = 0):
        self.current, self.max_batch, self.max_wait, self.arriving = current, max_batch, max_wait, arriving
        self.threads = threads
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seqrec-rank")
        self.task: asyncio.Task | None = None
        self.observe = lambda rows, seconds: None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, job: Job):
        job.future = asyncio.get_running_loop().create_future()
        await self.queue.put(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            rows = jobs[0].rows
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                if not self.queue.empty():
                    job = self.queue.get_nowait()
                elif self.arriving() > len(jobs) and loop.time() < deadline:
                    try:  # more requests are being read: wait a little for them
                        job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                jobs.append(job)
                rows += job.rows
            served = self.current()
            started = time.perf_counter()
            await loop.run_in_executor(self.executor, execute, served, jobs, self.threads)
            self.observe(rows, time.perf_counter() - started)
            for job in jobs:
                if job.future.done():  # the client went away
                    continue
                if job.error is not None:
                    job.future.set_exception(job.error)
                else:
                    job.future.set_result(job.result)
