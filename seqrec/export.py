"""ONNX export of the sequential models (SASRec, BERT4Rec, GRU4Rec, GRU4Rec+), and its parity check.

``seqrec export RUN_DIR --format onnx`` (or :func:`export_onnx`) writes a folder another runtime can serve
without seqrec or PyTorch::

    OUT/encoder.onnx          ids [B, L] int64 -> user [B, D] float32: the vector that scores the next item
    OUT/topk.onnx             ids [B, L] int64, k [] int64, exclude_seen [B] bool
                              -> items [B, k] int64, scores [B, k] float32: the whole ranking in one graph
    OUT/item_embeddings.npy   [N, D] float32: score(item j) = user · item_embeddings[j] (+ item_bias[j]),
    OUT/item_bias.npy         [N] float32, only for models with an output bias (GRU4Rec, BERT4Rec): for an
                              approximate-nearest-neighbour index of the items
    OUT/items.parquet         column item_id: the external id of internal id j + 1 (row j)
    OUT/export.json           model, options, the id layout, input/output shapes, the run's weights digest,
                              and the parity measured at export

Ids follow :mod:`seqrec.ids`: 0 is padding, item ``items.parquet[j]`` is ``j + 1``; a history is the last
``L`` (1 <= L <= max_len) item ids, oldest first, left-padded with 0 (as :meth:`Histories.windows`).
``exclude_seen`` sets the score of every item in a row's input window to -inf; ``k`` may be up to N (rows
with fewer unseen items end with -inf scores). The graphs run in float32 whatever the model trained in (a
bf16 model is exported in float32).

Exported with PyTorch's ``torch.export``-based exporter (opset 18): the TorchScript exporter mis-translates
the boolean attention masks of ``scaled_dot_product_attention``. Parity: onnxruntime against the model's own
:meth:`~seqrec.models.base.Recommender.score` and top-k on real histories (the known users'), recorded in
export.json; an export whose scores differ by more than ``tolerance`` or whose top-10 differ is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqrec import rundir
from seqrec.data.sequences import Histories
from seqrec.errors import ConfigError, DataError
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.models import load
from seqrec.models.base import Recommender, SequentialRecommender
from seqrec.version import __version__

log = logging.getLogger(__name__)
FORMATS = ("onnx",)
OPSET = 18
MANIFEST = "export.json"


def exportable(model: Recommender) -> bool:
    """Whether ``model`` exports to ONNX: the models that read a window of item ids (SASRec, BERT4Rec,
    GRU4Rec, GRU4Rec+); the baselines keep a vector per training user, which a graph of ids cannot take."""
    return isinstance(model, SequentialRecommender)


@contextlib.contextmanager
def _float32(model: SequentialRecommender):
    """The model with bf16 autocast off (the exported graph is float32), restored afterwards."""
    bf16 = getattr(model, "bf16", False)
    model.bf16 = False
    try:
        yield model
    finally:
        model.bf16 = bf16


class Encoder(nn.Module):
    """ids [B, L] -> the user vector [B, D] (the model's head applied) that scores the next item."""

    def __init__(self, model: SequentialRecommender):
        super().__init__()
        self.model, self.net = model, model.net_

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.model._next_hidden(ids)).float()


class TopK(nn.Module):
    """ids [B, L], k [], exclude_seen [B] -> (items [B, k] internal ids, scores [B, k]), best first."""

    def __init__(self, model: SequentialRecommender):
        super().__init__()
        self.encoder = Encoder(model)

    def forward(self, ids: torch.Tensor, k: torch.Tensor, exclude_seen: torch.Tensor):
        weights, bias = self.encoder.net.output_embeddings()
        scores = self.encoder(ids) @ weights.T
        if bias is not None:
            scores = scores + bias
        n = scores.shape[1]
        # seen items -> -inf: padding scatters into a spare last column, which is then cut off
        spare = torch.cat([scores, torch.zeros_like(scores[:, :1])], dim=1)
        columns = torch.where(ids == PAD, torch.full_like(ids, n), ids - FIRST_ITEM)
        seen = spare.scatter(1, columns, float("-inf"))[:, :n]
        scores = torch.where(exclude_seen[:, None], seen, scores)
        values, index = torch.topk(scores, k.item(), dim=1)
        return index + FIRST_ITEM, values


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic) -> None:
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=inputs,
                                    output_names=outputs, dynamic_shapes=dynamic, verbose=False)
    program.save(str(path))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress lines and logs warnings about optional packages: keep them out of the
    user's output."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the exporter's optimiser logs each pass at INFO
    with contextlib.redirect_stdout(None):
        try:
            yield
        finally:
            logging.disable(previous)


def export_onnx(model_or_run, out, *, tolerance: float = 1e-3, check_users: int = 256, seed: int = 0) -> dict:
    """Export a fitted sequential model (or the run directory holding one) to the folder ``out`` (see the
    module docstring) and check it against PyTorch; returns the manifest written to export.json.

    The folder is written to a staging folder beside ``out`` and moved into place only when the parity
    check passes, so a failed export leaves nothing half-written."""
    run_dir = None
    model = model_or_run
    if not isinstance(model_or_run, Recommender):
        run_dir = Path(model_or_run)
        model = load(run_dir, device="cpu")
    if not exportable(model):
        raise ConfigError(f"{model.name} does not export to ONNX: only the models that read a window of item ids "
                          "(sasrec, bert4rec, gru4rec, gru4rec+) do")
    model._check_fitted()
    device = str(model.device)
    if device != "cpu":  # exported from the CPU; the model goes back to its device afterwards
        model.net_.to("cpu")
        model.device = "cpu"
    try:
        return _export_checked(model, Path(out), run_dir, tolerance, check_users, seed)
    finally:
        if device != "cpu":
            model.net_.to(device)
            model.device = device


def _export_checked(model: SequentialRecommender, out: Path, run_dir: Path | None, tolerance: float,
                    check_users: int, seed: int) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
    started = time.perf_counter()
    try:
        model.net_.eval()
        with _float32(model), torch.no_grad():
            width = model.max_len
            example = torch.from_numpy(np.ascontiguousarray(_example_windows(model, width)))
            batch = torch.export.Dim("batch", min=1)
            length = torch.export.Dim("length", min=1, max=width)
            _export(Encoder(model), (example,), staging / "encoder.onnx", ["ids"], ["user"],
                    ({0: batch, 1: length},))
            _export(TopK(model), (example, torch.tensor(10), torch.ones(len(example), dtype=torch.bool)),
                    staging / "topk.onnx", ["ids", "k", "exclude_seen"], ["items", "scores"],
                    ({0: batch, 1: length}, None, {0: batch}))
            weights, bias = model.net_.output_embeddings()
            np.save(staging / "item_embeddings.npy", weights.detach().float().numpy())
            if bias is not None:
                np.save(staging / "item_bias.npy", bias.detach().float().numpy())
        pd.DataFrame({"item_id": model.vocab_.items}).to_parquet(staging / "items.parquet", index=False)
        parity = check_parity(model, staging, n_users=check_users, seed=seed)
        if parity["max_abs_score_diff"] > tolerance or parity["top10_identical_share"] < 1.0:
            raise DataError(f"ONNX export of {model.name} disagrees with PyTorch: max |score diff| "
                            f"{parity['max_abs_score_diff']:.3g} (tolerance {tolerance}), identical top-10 in "
                            f"{parity['top10_identical_share']:.1%} of {parity['histories']} histories")
        manifest = {
            "format": "onnx", "opset": OPSET, "model": model.name, "params": model.describe(),
            "max_len": model.max_len, "dim": int(weights.shape[1]), "n_items": model.vocab_.n_items,
            "id_layout": {"pad": PAD, "first_item": FIRST_ITEM, "items": "items.parquet row j = internal id j + 1"},
            "has_item_bias": bias is not None,
            "inputs": {"encoder.onnx": {"ids": "int64 [batch, length<=max_len], left-padded with 0"},
                       "topk.onnx": {"ids": "int64 [batch, length<=max_len]", "k": "int64 []",
                                     "exclude_seen": "bool [batch]"}},
            "outputs": {"encoder.onnx": {"user": "float32 [batch, dim]"},
                        "topk.onnx": {"items": "int64 [batch, k] internal ids", "scores": "float32 [batch, k]"}},
            "run_dir": None if run_dir is None else str(run_dir.resolve()),
            "weights_sha256": _weights_digest(run_dir), "seqrec_version": __version__,
            "parity": parity, "seconds": round(time.perf_counter() - started, 2),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _example_windows(model: SequentialRecommender, width: int) -> np.ndarray:
    """Two histories of the known users (varied lengths) as the tracing example."""
    h = model.histories_
    rows = np.argsort(h.offsets[1:] - h.offsets[:-1])[[0, -1]] if h.n_users >= 2 else np.zeros(2, dtype=np.int64)
    return Histories(h.items, h.offsets[rows], h.offsets[rows + 1]).windows(width)


def _weights_digest(run_dir: Path | None) -> str | None:
    return None if run_dir is None else rundir.read_config(run_dir)["files"]["weights.safetensors"]["sha256"]


def known_histories(model: Recommender, n_users: int, seed: int = 0) -> Histories:
    """Up to ``n_users`` of the model's known users' histories, drawn at random (the parity check's)."""
    h = model.histories_
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(h.n_users, size=min(n_users, h.n_users), replace=False))
    rows = rows[h.offsets[rows + 1] > h.offsets[rows]]
    return Histories(h.items, h.offsets[rows], h.offsets[rows + 1])


def check_parity(model: SequentialRecommender, folder, n_users: int = 256, seed: int = 0) -> dict:
    """onnxruntime (the exported folder) against PyTorch on ``n_users`` known users' histories: the largest
    absolute difference of the full scores, and the share of rows whose top-10 (seen items excluded) are
    identical."""
    import onnxruntime as ort

    folder = Path(folder)
    histories = known_histories(model, n_users, seed)
    windows = np.ascontiguousarray(histories.windows(model.max_len))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    topk = ort.InferenceSession(str(folder / "topk.onnx"), options, providers=["CPUExecutionProvider"])
    weights = np.load(folder / "item_embeddings.npy")
    bias = np.load(folder / "item_bias.npy") if (folder / "item_bias.npy").exists() else None
    scores = encoder.run(None, {"ids": windows})[0] @ weights.T
    if bias is not None:
        scores += bias
    with _float32(model):
        reference = model.score(histories).float().cpu().numpy()
        ref_ids, _ = model.rank(Histories.from_lists([windows[r][windows[r] != PAD] for r in range(len(windows))]),
                                k=10, exclude_seen=True)
    ids, _ = topk.run(None, {"ids": windows, "k": np.array(10, dtype=np.int64),
                             "exclude_seen": np.ones(len(windows), dtype=bool)})
    return {"histories": len(windows), "max_abs_score_diff": float(np.abs(scores - reference).max()),
            "top10_identical_share": float((ids == ref_ids).all(axis=1).mean()),
            "onnxruntime": ort.__version__, "torch": torch.__version__}
