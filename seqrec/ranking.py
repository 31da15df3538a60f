"""Ranking scores, one path for every caller (``recommend``, ``recommend_users``, ``evaluate``); torch, and
numpy for index arrays.

Scores are [R, N]: row r, column j is real item ``j + FIRST_ITEM`` (see :mod:`seqrec.ids`). Ranking happens
on the device that holds the scores (a GPU model's scores never travel to the host whole).

- :func:`exclude` sets the score of given (row, item) pairs to -inf (seen-item filtering);
- :func:`restrict` keeps only candidate items (all others -inf), as implicit's ``items=``;
- :func:`top_k` the best k internal ids and scores per row;
- :func:`rank_counts` how many candidates score above / equal to each row's target (ties are resolved by
  :func:`seqrec.metrics.ranking_metrics`' policy). A target at -inf is a miss.
"""

from __future__ import annotations

import numpy as np
import torch

from seqrec.ids import FIRST_ITEM


def exclude(scores: torch.Tensor, rows: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """Scores with each (rows[i], items[i]) pair (internal item ids) set to -inf, in place."""
    if len(rows):
        dev = scores.device
        scores[torch.from_numpy(rows).to(dev), torch.from_numpy(items - FIRST_ITEM).to(dev)] = float("-inf")
    return scores


def restrict(scores: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    """Scores of non-candidates set to -inf, in place. ``candidates`` [N] bool over the catalogue, or None
    (every item is a candidate)."""
    if candidates is not None:
        scores.masked_fill_(~candidates.to(scores.device)[None, :], float("-inf"))
    return scores


def candidate_mask(n_items: int, items: np.ndarray | None) -> torch.Tensor | None:
    """[N] bool: True for the internal ids ``items``; None for None (every item)."""
    if items is None:
        return None
    mask = torch.zeros(n_items, dtype=torch.bool)
    mask[torch.from_numpy(np.asarray(items, dtype=np.int64) - FIRST_ITEM)] = True
    return mask


def top_k(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(internal ids [R, k], scores [R, k]) of the best ``k`` columns of each row, best first, on the host.
    Columns at -inf fill the tail of a row only when fewer than ``k`` candidates remain."""
    top = torch.topk(scores, k, dim=1)
    return top.indices.cpu().numpy() + FIRST_ITEM, top.values.float().cpu().numpy()


def rank_counts(scores: torch.Tensor, targets: torch.Tensor, max_k: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(higher [R], tied [R]): candidates scored above / equal to the target column ``targets`` [R]
    (0-based columns).

    With ``max_k``, ties are counted only where ``higher < max_k`` (elsewhere every metric @k <= max_k
    is 0 whatever the ties), which skips most of a second pass over the scores.
    """
    target_scores = scores.gather(1, targets[:, None])  # [R, 1]
    higher = (scores > target_scores).sum(1, dtype=torch.int32)  # int32: summing bools to int64 is much slower
    missed = ~torch.isfinite(target_scores[:, 0])
    higher[missed] = scores.shape[1]
    tied = torch.zeros_like(higher)
    rows = torch.nonzero(higher < max_k)[:, 0] if max_k is not None else torch.arange(len(higher))
    if len(rows):
        tied[rows] = (scores[rows] == target_scores[rows]).sum(1, dtype=torch.int32) - 1
    return higher, tied
