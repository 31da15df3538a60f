r"""Where a leave-one-out score comes from: one trained model ranked on five (history, target) variants.

    .venv/bin/python -m benchmarks.loo_gap ml100k-bert4rec --epochs 400 --patience 30 --bucketing \
        --attn-dropout 0 --set init=xavier
    .venv/bin/python -m benchmarks.loo_gap ml100k-ce --epochs 200 --patience 10 --bucketing --attn-dropout 0

Leave-one-out holds out each user's last event (test) and the one before (validation); the model trains
on the rest and early-stops on validation (exactly as ``benchmarks/run.py``). This script then ranks, for
every user with at least 4 events, so that every variant has a history (full ranking, seen items filtered):

- ``valid``: the training events -> the validation event (what early stopping sees);
- ``test``: training + validation events -> the test event (what is reported);
- ``test_without_valid``: the training events -> the test event (two steps ahead);
- ``valid_without_last_train``: the training events but the last -> the validation event (two steps ahead);
- ``last_train``: the training events but the last -> the last training event (a trained target: how
  much the model memorised);

and the same five for a training-set popularity ranking, to show how hard each target is without any
sequence. Written to benchmarks/results/gap-<config><tag>.json.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import seqrec
from benchmarks.run import CONFIGS, DATA, leave_one_out_parser, model_params, run_and_write
from seqrec.data.interactions import Interactions
from seqrec.data.splits import EvalSet


def without_event(log: Interactions, from_end: int) -> Interactions:
    """``log`` with each user's ``from_end``-th last event removed (users with fewer events keep all)."""
    n = log.lengths
    has = n >= from_end
    keep = np.ones(len(log.items), dtype=bool)
    keep[log.offsets[:-1][has] + n[has] - from_end] = False
    offsets = np.concatenate([[0], np.cumsum(n - has)]).astype(log.offsets.dtype)
    return Interactions(log.vocab, offsets, log.items[keep], log.times[keep], source=log.source)


def variants(log: Interactions, users: np.ndarray) -> dict[str, EvalSet]:
    n = log.lengths[users]
    return {
        "valid": EvalSet(log, users, n - 2, "valid"),
        "test": EvalSet(log, users, n - 1, "test"),
        "test_without_valid": EvalSet(without_event(log, 2), users, n - 2, "test_without_valid"),
        "valid_without_last_train": EvalSet(without_event(log, 3), users, n - 3, "valid_without_last_train"),
        "last_train": EvalSet(log, users, n - 3, "last_train"),
    }


def run(name: str, args) -> dict:
    spec = CONFIGS[name]
    log = seqrec.read_interactions(DATA / spec["data"] / "interactions.csv.gz")
    split = seqrec.leave_one_out(log, valid_users=args.valid_users, seed=args.seed)
    model = seqrec.build(spec.get("model", "sasrec"), model_params(spec, args))
    model.fit(split.train, valid=split.valid)
    users = split.test.users[log.lengths[split.test.users] >= 4]  # every variant needs a history
    sets = variants(log, users)
    rankers = {"model": model, "train_popularity": seqrec.PopRec().fit(split.train)}
    metrics = {who: {v: seqrec.evaluate(r, s, k=(10,))["metrics"] for v, s in sets.items()}
               for who, r in rankers.items()}
    return {
        "name": name, "command": " ".join(sys.argv), "torch_threads": torch.get_num_threads(),
        "dataset": log.summary(), "split": split.card(), "params": model.get_params(),
        "best_epoch": model.train_result_.best_epoch, "users": len(users),
        **{m: {who: {v: round(values[m], 4) for v, values in by_variant.items()}
               for who, by_variant in metrics.items()} for m in ("NDCG@10", "HR@10")},
    }


def main() -> None:
    run_and_write(leave_one_out_parser(__doc__).parse_args(), run, ("best_epoch", "NDCG@10"), prefix="gap-")


if __name__ == "__main__":
    main()
