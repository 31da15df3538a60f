"""Evaluation protocols and the protocol card.

- ``full`` (default): every item of the catalogue is a candidate.
- ``sampled``: the target plus ``n_negatives`` negatives drawn (seeded, with replacement, as the SASRec
  reference code) uniformly or proportionally to popularity in the log, never from the user's history
  nor the target. Metric names carry the prefix ``sampled_`` and the card says how they were sampled.

Seen filtering (``exclude_seen``) removes every item of the user's history from the candidates; a
target that repeats a history item is then a miss (the filtered list could never contain it), and so is a
target outside the set's candidate items; the card counts both (``targets_never_rankable``). Each
evaluation set carries its protocol (:class:`~seqrec.data.splits.EvalSet`): leave-one-out and temporal
sets filter seen items, session sets keep them and rank only items with a training event.
Ties follow :mod:`seqrec.metrics` (default: expected value under random tie-breaking).
"""

from __future__ import annotations

import numpy as np
import torch

from seqrec import ranking
from seqrec.data.splits import EvalSet
from seqrec.errors import ConfigError, choose
from seqrec.ids import FIRST_ITEM
from seqrec.metrics import TIE_POLICIES, ranking_metrics
from seqrec.version import __version__

PROTOCOLS = ("full", "sampled")
SAMPLINGS = ("uniform", "popularity")


def evaluate(model, evalset: EvalSet, k=(10,), *, protocol: str = "full", exclude_seen: bool | None = None,
             tie_policy: str = "expected", n_negatives: int = 100, sampling: str = "uniform", seed: int = 0,
             batch_size: int = 256, split: dict | None = None) -> dict:
    """Metrics of ``model`` (anything with ``score(histories, out=None)`` and ``max_len``, or without
    ``max_len`` for a model that reads whole histories) on ``evalset``, with a protocol card.

    ``exclude_seen`` None (default) follows the protocol the set carries (see :class:`EvalSet`); so do its
    candidate items.
    """
    choose("protocol", protocol, PROTOCOLS)
    choose("tie policy", tie_policy, TIE_POLICIES)
    choose("sampling", sampling, SAMPLINGS)
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be positive integers, got {list(k)}")
    exclude_seen = evalset.exclude_seen if exclude_seen is None else exclude_seen
    n_items = evalset.log.n_items
    rng = np.random.default_rng(seed)
    popularity = np.bincount(evalset.log.items - FIRST_ITEM, minlength=n_items) if sampling == "popularity" else None
    candidates = ranking.candidate_mask(n_items, evalset.candidates)
    sums, n_filtered_targets = {}, 0
    buffer = torch.empty(min(batch_size, len(evalset)), n_items)  # one reused CPU buffer (no page faults)
    order = np.argsort(np.minimum(evalset.cuts, getattr(model, "max_len", 1)), kind="stable")  # similar lengths
    for start in range(0, len(evalset), batch_size):  # batch together, so trimmed windows carry little padding
        rows = order[start:start + batch_size]
        histories = evalset.batch(rows)
        scores = model.score(histories, out=buffer[:len(rows)])  # on the model's device: ranked there
        dev = scores.device
        targets = torch.from_numpy(evalset.targets[rows] - FIRST_ITEM).to(dev)
        seen_rows, seen_items = histories.seen()
        if protocol == "full":
            ranking.restrict(scores, candidates)
            if exclude_seen:
                ranking.exclude(scores, seen_rows, seen_items)
            n_filtered_targets += int(torch.isinf(scores.gather(1, targets[:, None])).sum())
            higher, tied = ranking.rank_counts(scores, targets, max(ks))
        else:
            negatives = _sample_negatives(rng, n_items, len(targets), n_negatives, seen_rows, seen_items,
                                          evalset.targets[rows], popularity)
            chosen = torch.cat([targets[:, None], torch.from_numpy(negatives - FIRST_ITEM).to(dev)], dim=1)
            higher, tied = ranking.rank_counts(scores.gather(1, chosen),
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
    if protocol == "full":
        candidates = f"full ranking: {evalset.protocol()['candidates']}"
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
        "targets_never_rankable": n_filtered_targets,
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
