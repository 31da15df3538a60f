"""Losses for catalogues of millions of items, on a synthetic log; writes benchmarks/results/catalogue.json.

    .venv/bin/python -m benchmarks.catalogue [--steps 30] [--budget 240] [--losses ...]

The log: users with 5..45 events (uniform), items of Zipf popularity (exponent 1.1), and a Markov chain of
order 1: with probability 0.5 the next item is the previous item's fixed successor (a random permutation),
else a popularity draw. Two sizes:

- ``large``: 1,000,000 items, 2,000,000 users, ~50,000,000 events. Per loss, SASRec (dim 64, max_len 50,
  batch 128) trains ``--steps`` steps after 3 warm-up steps in a fresh process: seconds per step, the epoch
  they project to (steps per epoch x seconds per step; a full epoch of every loss would take days on this
  CPU), the memory plan printed before training and the process's peak RSS;
- ``small``: 10,000 items, 20,000 users, ~500,000 events, where full softmax is affordable: each loss
  trains to early stopping or ``--budget`` seconds, then test NDCG@10 (leave-one-out, full ranking), so
  each sampled loss can be compared with full softmax.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import seqrec
from benchmarks.serve import machine
from seqrec.data import Interactions, Vocab
from seqrec.ids import FIRST_ITEM
from seqrec.models.base import scoring_rows
from seqrec.runs import write_recommendations
from seqrec.train import Callback

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"large": (1_000_000, 2_000_000), "small": (10_000, 20_000)}
LOSSES = {  # name -> SASRec options
    "ce": {"loss": "ce"},
    "sampled_ce-uniform": {"loss": "sampled_ce", "n_negatives": 256},
    "sampled_ce-popularity-logq": {"loss": "sampled_ce", "sampler": "popularity", "n_negatives": 256},
    "sampled_ce-in_batch-logq": {"loss": "sampled_ce", "sampler": "in_batch"},
    "sampled_ce-mixed-logq": {"loss": "sampled_ce", "sampler": "mixed", "n_negatives": 256},
    "sampled_ce-uniform-sparse": {"loss": "sampled_ce", "n_negatives": 256, "sparse_items": True},
    "sampled_ce-mixed-logq-sparse": {"loss": "sampled_ce", "sampler": "mixed", "n_negatives": 256,
                                     "sparse_items": True},
    "gbce": {"loss": "gbce", "n_negatives": 256, "gbce_t": 0.75},
    "bce": {"loss": "bce"},
}
MODEL = {"dim": 64, "max_len": 50, "batch_size": 128, "n_heads": 1, "n_blocks": 2, "dropout": 0.2,
         "attn_dropout": 0.0, "progress": False}


def synthetic(n_items: int, n_users: int, seed: int = 0, markov: float = 0.5) -> Interactions:
    """The log of the module docstring, built position by position across all users at once."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 46, n_users)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    cdf = np.cumsum(weights) / weights.sum()
    successor = rng.permutation(n_items)
    grid = np.empty((n_users, lengths.max()), dtype=np.int32)
    grid[:, 0] = np.searchsorted(cdf, rng.random(n_users))
    for p in range(1, grid.shape[1]):
        draw = np.searchsorted(cdf, rng.random(n_users)).astype(np.int32)
        grid[:, p] = np.where(rng.random(n_users) < markov, successor[grid[:, p - 1]], draw)
    keep = np.arange(grid.shape[1])[None, :] < lengths[:, None]
    items = grid[keep].astype(np.int64)  # row-major: user by user, in order
    del grid, keep
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    present = np.bincount(items, minlength=n_items) > 0  # items never drawn are not in the vocabulary
    recode = np.cumsum(present) - 1
    times = np.arange(len(items), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    vocab = Vocab(users=np.arange(n_users), items=np.flatnonzero(present))
    return Interactions(vocab, offsets, recode[items] + FIRST_ITEM, times, f"synthetic-{n_items}x{n_users}")


def speed(loss: str, steps: int) -> dict:
    """Seconds per training step of one loss on the large log (run in its own process)."""
    n_items, n_users = SIZES["large"]
    tick = time.perf_counter()
    log = synthetic(n_items, n_users)
    built = time.perf_counter() - tick
    model = seqrec.SASRec(**MODEL, **LOSSES[loss], epochs=1)
    plan = model.memory_plan(log.n_items)
    times = []

    class Stop(Callback):
        def on_step(self, step):
            times.append(time.perf_counter())
            return step >= steps + 3

    model.fit(log, callbacks=[Stop()])
    per_step = (times[-1] - times[2]) / (len(times) - 3)
    n_batches = len(model.training_batches(log))
    return {"loss": loss, "options": LOSSES[loss], "events": log.n_events, "users": log.n_users,
            "items": log.n_items, "build_s": round(built, 1), "steps": len(times) - 3,
            "seconds_per_step": round(per_step, 4), "steps_per_epoch": n_batches,
            "projected_epoch_s": round(per_step * n_batches), "memory_plan_gb": round(plan["total"] / 2**30, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def recommend(n_users: int) -> dict:
    """Top-10 over the whole large catalogue for the first ``n_users`` users, streamed to Parquet by
    ``write_recommendations`` (a model trained one step: the ranking's cost does not depend on training)."""
    n_items, users = SIZES["large"]
    log = synthetic(n_items, users)

    class Stop(Callback):
        def on_step(self, step):
            return True

    model = seqrec.SASRec(**MODEL, loss="sampled_ce", sparse_items=True, epochs=1).fit(log, callbacks=[Stop()])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        path = write_recommendations(model, log.vocab.users[:n_users], 10, True, Path(tmp) / "top10.parquet")
        seconds = time.perf_counter() - tick
        rows = pq.ParquetFile(path).metadata.num_rows
    return {"users": n_users, "items": log.n_items, "k": 10, "rows": rows, "seconds": round(seconds, 1),
            "users_per_s": round(n_users / seconds), "rows_per_pass": scoring_rows(log.n_items),
            "peak_rss_gb_before": round(rss_before, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def quality(loss: str, budget: float) -> dict:
    """Test NDCG@10 of one loss trained on the small log to early stopping or ``budget`` seconds."""
    n_items, n_users = SIZES["small"]
    split = seqrec.leave_one_out(synthetic(n_items, n_users), valid_users=5000)
    model = seqrec.SASRec(**MODEL, **LOSSES[loss], epochs=200, patience=3, time_budget=budget)
    tick = time.perf_counter()
    model.fit(split.train, valid=split.valid)
    wall = time.perf_counter() - tick
    metrics = seqrec.evaluate(model, split.test, k=(10,))["metrics"]
    result = model.train_result_
    return {"loss": loss, "options": LOSSES[loss], "events": split.log.n_events, "items": split.log.n_items,
            "test_NDCG@10": round(metrics["NDCG@10"], 5), "test_HR@10": round(metrics["HR@10"], 5),
            "best_epoch": result.best_epoch, "epochs_run": len(result.epochs), "stop_reason": result.stop_reason,
            "median_epoch_s": round(float(np.median([e.seconds for e in result.epochs])), 1),
            "wall_s": round(wall, 1)}


def child(kind: str, loss: str, arg: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.catalogue", "--child", kind, loss, str(arg)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        return {"loss": loss, "error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--sizes", default="large,small,recommend")
    parser.add_argument("--recommend-users", type=int, default=50_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, loss, arg = args.child
        run = {"speed": lambda: speed(loss, int(float(arg))), "quality": lambda: quality(loss, float(arg)),
               "recommend": lambda: recommend(int(float(arg)))}[kind]
        print(json.dumps(run()))
        return
    out = ROOT / "benchmarks" / "results" / "catalogue.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update(machine=machine(), model=MODEL, sizes=SIZES)
    if "recommend" in args.sizes:
        result["recommend"] = child("recommend", "-", args.recommend_users)
        print(json.dumps(result["recommend"]), flush=True)
    for loss in args.losses.split(",") if args.sizes != "recommend" else []:
        if "large" in args.sizes:
            row = child("speed", loss, args.steps if loss != "ce" else max(2, args.steps // 10))
            result.setdefault("large", {})[loss] = row
            print(json.dumps(row), flush=True)
        if "small" in args.sizes:
            result["small_budget_s"] = args.budget
            row = child("quality", loss, args.budget)
            result.setdefault("small", {})[loss] = row
            print(json.dumps(row), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
