"""Evaluation protocols and the protocol card.

- ``full`` (default): every item of the catalogue is a candidate.
- ``sampled``: the target plus ``n_negatives`` negatives drawn (seeded) uniformly or proportionally to
  popularity in the log, never from the user's history nor the target; with replacement (``replacement=True``,
  the default, as the SASRec reference code) or without (as the BERT4Rec reference code: repeats discarded,
  a row the popularity mass makes hard completed by the Gumbel top-k trick). Metric names carry the prefix ``sampled_`` and the card says how they were sampled.

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
             tie_policy: str | tuple = "expected", n_negatives: int = 100, sampling: str = "uniform", seed: int = 0,
             batch_size: int = 256, split: dict | None = None, replacement: bool = True) -> dict:
    """Metrics of ``model`` (anything with ``score(histories, out=None)`` and ``max_len``, or without
    ``max_len`` for a model that reads whole histories) on ``evalset``, with a protocol card. The sampled
    protocol scores only the sampled candidates where the model has ``score_candidates``.

    ``exclude_seen`` None (default) follows the protocol the set carries (see :class:`EvalSet`); so do its
    candidate items. ``tie_policy`` may be a tuple of policies: the metrics of the first are ``metrics``, and
    ``by_tie_policy`` holds each one's, from the same scores (and, sampled, the same negatives).
    """
    choose("protocol", protocol, PROTOCOLS)
    policies = (tie_policy,) if isinstance(tie_policy, str) else tuple(tie_policy)
    for policy in policies:
        choose("tie policy", policy, TIE_POLICIES)
    tie_policy = policies[0]
    choose("sampling", sampling, SAMPLINGS)
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be positive integers, got {list(k)}")
    exclude_seen = evalset.exclude_seen if exclude_seen is None else exclude_seen
    n_items = evalset.log.n_items
    rng = np.random.default_rng(seed)
    popularity = np.bincount(evalset.log.items - FIRST_ITEM, minlength=n_items) if sampling == "popularity" else None
    candidates = ranking.candidate_mask(n_items, evalset.candidates)
    sums, n_filtered_targets = {policy: {} for policy in policies}, 0
    buffer = torch.empty(min(batch_size, len(evalset)), n_items)  # one reused CPU buffer (no page faults)
    order = np.argsort(np.minimum(evalset.cuts, getattr(model, "max_len", 1)), kind="stable")  # similar lengths
    for start in range(0, len(evalset), batch_size):  # batch together, so trimmed windows carry little padding
        rows = order[start:start + batch_size]
        histories = evalset.batch(rows)
        seen_rows, seen_items = histories.seen()
        if protocol == "sampled":
            negatives = _sample_negatives(rng, n_items, len(rows), n_negatives, seen_rows, seen_items,
                                          evalset.targets[rows], popularity, replacement)
            chosen = torch.from_numpy(np.concatenate([evalset.targets[rows][:, None], negatives], 1))
            if hasattr(model, "score_candidates"):
                scores = model.score_candidates(histories, chosen, out=buffer[:len(rows)])
            else:
                scores = model.score(histories, out=buffer[:len(rows)])
                scores = scores.gather(1, chosen.to(scores.device) - FIRST_ITEM)
            higher, tied = ranking.rank_counts(scores, torch.zeros(len(rows), dtype=torch.long, device=scores.device))
        else:
            scores = model.score(histories, out=buffer[:len(rows)])  # on the model's device: ranked there
            targets = torch.from_numpy(evalset.targets[rows] - FIRST_ITEM).to(scores.device)
            ranking.restrict(scores, candidates)
            if exclude_seen:
                ranking.exclude(scores, seen_rows, seen_items)
            n_filtered_targets += int(torch.isinf(scores.gather(1, targets[:, None])).sum())
            higher, tied = ranking.rank_counts(scores, targets, max(ks))
        for policy in policies:
            for name, values in ranking_metrics(higher, tied, ks, policy).items():
                sums[policy][name] = sums[policy].get(name, 0.0) + float(values.sum())
    prefix = "sampled_" if protocol == "sampled" else ""
    by_policy = {policy: {f"{prefix}{name}": value / max(len(evalset), 1) for name, value in totals.items()}
                 for policy, totals in sums.items()}
    metrics = by_policy[tie_policy]
    card = protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed,
                         split, n_filtered_targets, replacement)
    result = {"metrics": metrics, "protocol": card}
    if len(policies) > 1:
        result["by_tie_policy"] = by_policy
    return result


def protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed, split,
                  n_filtered_targets, replacement=True) -> dict:
    if protocol == "full":
        candidates = f"full ranking: {evalset.protocol()['candidates']}"
    else:
        candidates = (f"SAMPLED: target + {n_negatives} negatives drawn {sampling}ly "
                      f"({'with' if replacement else 'without'} replacement, never from the history), "
                      "not comparable to full ranking")
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


def _sample_negatives(rng, n_items, n_rows, n_negatives, seen_rows, seen_items, targets, popularity,
                      replacement=True):
    """[R, n_negatives] internal ids, never in the row's history nor its target."""
    p = None
    if popularity is not None:
        p = popularity / popularity.sum()
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        draw = lambda size: np.minimum(np.searchsorted(cdf, rng.random(size), side="right"),  # noqa: E731
                                       n_items - 1) + FIRST_ITEM
    else:
        draw = lambda size: rng.integers(FIRST_ITEM, FIRST_ITEM + n_items, size=size)  # noqa: E731
    width = n_items + FIRST_ITEM
    forbidden = np.unique(np.concatenate([seen_rows * width + seen_items, np.arange(n_rows) * width + targets]))
    if not replacement:
        return _distinct(rng, draw, p, n_items, n_rows, n_negatives, forbidden, width)
    negatives = draw((n_rows, n_negatives))
    row_ids = np.repeat(np.arange(n_rows), n_negatives).reshape(n_rows, n_negatives)
    for _ in range(1000):
        clash = np.isin(row_ids * width + negatives, forbidden)
        if not clash.any():
            return negatives
        negatives[clash] = draw(int(clash.sum()))
    raise ConfigError("cannot sample negatives: some user's history covers nearly the whole catalogue")


def _distinct(rng, draw, p, n_items: int, n_rows: int, n: int, forbidden: np.ndarray, width: int,
              rounds: int = 8) -> np.ndarray:
    """[R, n] distinct draws per row outside ``forbidden`` (keys ``row * width + item``), without replacement
    (as the BERT4Rec reference): items drawn one after another, a repeat or a forbidden item discarded,
    vectorised over rows; rows still short after ``rounds`` (a history holding most of the popularity mass)
    are completed exactly by the Gumbel top-k trick over the items they may still take."""
    if n > n_items:
        raise ConfigError(f"cannot draw {n} distinct negatives from a catalogue of {n_items} items")
    out = np.zeros((n_rows, n), dtype=np.int64)  # 0 (PAD) = not filled yet
    left = np.arange(n_rows)
    for _ in range(rounds):
        if len(left) == 0:
            return out
        drawn = draw((len(left), 2 * n + 8))
        values = np.concatenate([out[left], drawn], 1)  # the rows' items so far come first: they stay
        rows = np.arange(len(left))[:, None]
        first = np.zeros(values.size, dtype=bool)
        first[np.unique((rows * width + values).ravel(), return_index=True)[1]] = True
        valid = first.reshape(values.shape) & (values != 0) & ~np.isin(left[:, None] * width + values, forbidden)
        rank = np.cumsum(valid, 1) - 1
        keep = valid & (rank < n)
        filled = np.zeros((len(left), n), dtype=np.int64)
        filled[np.nonzero(keep)[0], rank[keep]] = values[keep]
        out[left] = filled
        left = left[keep.sum(1) < n]
    if len(left):
        with np.errstate(divide="ignore"):
            log_p = np.log(p) if p is not None else np.zeros(n_items)
        keys = log_p[None, :] - np.log(-np.log(rng.random((len(left), n_items)).clip(1e-300, 1 - 1e-16)))
        banned = forbidden[np.isin(forbidden // width, left)]
        keys[np.searchsorted(left, banned // width), banned % width - FIRST_ITEM] = -np.inf
        have = out[left]
        r, c = np.nonzero(have)
        keys[r, have[r, c] - FIRST_ITEM] = np.inf  # what a row already drew stays first
        chosen = np.argpartition(-keys, n - 1, axis=1)[:, :n]
        if np.isneginf(np.take_along_axis(keys, chosen, 1)).any():
            raise ConfigError(f"cannot draw {n} distinct negatives: some user's history leaves fewer items "
                              "outside it")
        out[left] = chosen + FIRST_ITEM
    return out
