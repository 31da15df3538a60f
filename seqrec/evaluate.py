"""Evaluation protocols and the protocol card.

- ``full`` (default): every item of the catalogue is a candidate.
- ``sampled``: the target plus ``n_negatives`` negatives drawn (seeded, with replacement, as the SASRec
  reference code) uniformly or proportionally to popularity in the log, never from the user's history
  nor the target. Metric names carry the prefix ``sampled_`` and the card says how they were sampled.

Seen filtering (``exclude_seen``) removes every item of the user's history from the candidates; a
target that repeats a history item is then a miss (the filtered list could never contain it).
Ties follow :mod:`seqrec.metrics` (default: expected value under random tie-breaking).
"""

from __future__ import annotations

import numpy as np
import torch

from seqrec.data.splits import EvalSet
from seqrec.errors import ConfigError, choose
from seqrec.ids import FIRST_ITEM
from seqrec.metrics import rank_counts, ranking_metrics, TIE_POLICIES
from seqrec.version import __version__

PROTOCOLS = ("full", "sampled")
SAMPLINGS = ("uniform", "popularity")


def evaluate(model, evalset: EvalSet, k=(10,), *, protocol: str = "full", exclude_seen: bool = True,
             tie_policy: str = "expected", n_negatives: int = 100, sampling: str = "uniform", seed: int = 0,
             batch_size: int = 256, split: dict | None = None) -> dict:
    """Metrics of ``model`` (anything with ``max_len`` and ``score_windows``) on ``evalset``, with a card."""
    choose("protocol", protocol, PROTOCOLS)
    choose("tie policy", tie_policy, TIE_POLICIES)
    choose("sampling", sampling, SAMPLINGS)
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be positive integers, got {list(k)}")
    n_items = evalset.log.n_items
    rng = np.random.default_rng(seed)
    popularity = np.bincount(evalset.log.items - FIRST_ITEM, minlength=n_items) if sampling == "popularity" else None
    sums, n_filtered_targets = {}, 0
    # a model on a GPU scores and ranks there (no [R, N] copy to the host); else one reused CPU buffer
    on_device = str(getattr(model, "device", "cpu")) != "cpu"
    buffer = None if on_device else torch.empty(min(batch_size, len(evalset)), n_items)  # no page faults
    order = np.argsort(np.minimum(evalset.cuts, model.max_len), kind="stable")  # similar lengths batch together,
    for start in range(0, len(evalset), batch_size):  # so trimmed windows carry little padding
        rows = order[start:start + batch_size]
        histories = evalset.histories(model.max_len, rows)
        scores = model.score_windows(histories, on_device=True) if on_device else \
            model.score_windows(histories, out=buffer[:len(rows)])
        dev = scores.device
        targets = torch.from_numpy(evalset.targets[rows] - FIRST_ITEM).to(dev)
        seen_rows, seen_items = evalset.seen(rows)
        if protocol == "full":
            if exclude_seen:
                scores[torch.from_numpy(seen_rows).to(dev), torch.from_numpy(seen_items - FIRST_ITEM).to(dev)] = \
                    float("-inf")
                n_filtered_targets += int(torch.isinf(scores.gather(1, targets[:, None])).sum())
            higher, tied = rank_counts(scores, targets, max(ks))
        else:
            negatives = _sample_negatives(rng, n_items, len(targets), n_negatives, seen_rows, seen_items,
                                          evalset.targets[rows], popularity)
            candidates = torch.cat([targets[:, None], torch.from_numpy(negatives - FIRST_ITEM).to(dev)], dim=1)
            higher, tied = rank_counts(scores.gather(1, candidates),
                                       torch.zeros(len(targets), dtype=torch.long, device=dev))
        for name, values in ranking_metrics(higher, tied, ks, tie_policy).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    prefix = "sampled_" if protocol == "sampled" else ""
    metrics = {f"{prefix}{name}": value / max(len(evalset), 1) for name, value in sums.items()}
    card = protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed,
                         split, n_filtered_targets)
    return {"metrics": metrics, "protocol": card}


def protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed, split,
                  n_filtered_targets) -> dict:
    n_items = evalset.log.n_items
    if protocol == "full":
        candidates = f"full ranking: all {n_items} items"
    else:
        candidates = (f"SAMPLED: target + {n_negatives} negatives drawn {sampling}ly "
                      f"(with replacement, never from the history), not comparable to full ranking")
    return {
        "seqrec_version": __version__,
        "dataset": evalset.log.summary(),
        "split": split or {"name": evalset.name},
        "evaluated": evalset.name,
        "n_eval": len(evalset),
        "protocol": protocol,
        "candidates": candidates,
        "seen_filtering": bool(exclude_seen) if protocol == "full" else "negatives never from the history",
        "targets_filtered_as_seen": n_filtered_targets,
        "tie_policy": tie_policy,
        "k": list(ks),
        "seed": seed,
        "model": model.describe() if hasattr(model, "describe") else type(model).__name__,
    }


def _sample_negatives(rng, n_items, n_rows, n_negatives, seen_rows, seen_items, targets, popularity):
    """[R, n_negatives] internal ids, never in the row's history nor its target."""
    if popularity is not None:
        p = popularity / popularity.sum()
        draw = lambda size: rng.choice(n_items, size=size, p=p) + FIRST_ITEM  # noqa: E731
    else:
        draw = lambda size: rng.integers(FIRST_ITEM, FIRST_ITEM + n_items, size=size)  # noqa: E731
    width = n_items + FIRST_ITEM
    forbidden = np.unique(np.concatenate([seen_rows * width + seen_items, np.arange(n_rows) * width + targets]))
    negatives = draw((n_rows, n_negatives))
    row_ids = np.repeat(np.arange(n_rows), n_negatives).reshape(n_rows, n_negatives)
    for _ in range(1000):
        clash = np.isin(row_ids * width + negatives, forbidden)
        if not clash.any():
            return negatives
        negatives[clash] = draw(int(clash.sum()))
    raise ConfigError("cannot sample negatives: some user's history covers nearly the whole catalogue")
