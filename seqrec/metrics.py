"""Ranking metrics with an explicit tie policy (torch only).

The rank of a target is 1 + (items scored strictly higher) + a share of the items tied with it:

- ``expected`` (default): the exact expectation of each metric when ties are broken uniformly at
  random, i.e. the target's rank is uniform on {g+1, ..., g+t+1} (g higher, t tied). A constant-score
  model gets HR@10 = 10 / |candidates|.
- ``pessimistic``: the target ranks below every tied item (rank g+t+1).
- ``optimistic``: the target wins every tie (rank g+1). This is what the SASRec and BERT4Rec reference
  evaluation code effectively does; available only to reproduce their numbers.

A target whose score is -inf (filtered out, e.g. a repeat of a seen item under seen filtering) is a miss.
"""

from __future__ import annotations

import torch

from seqrec.errors import choose

TIE_POLICIES = ("expected", "pessimistic", "optimistic")
METRICS = ("HR", "NDCG", "MRR")


def ranking_metrics(higher: torch.Tensor, tied: torch.Tensor, ks, policy: str = "expected") -> dict:
    """Per-row HR@k, NDCG@k, MRR@k [R] for every k, from :func:`seqrec.ranking.rank_counts`."""
    choose("tie policy", policy, TIE_POLICIES)
    higher, tied = higher.double(), tied.double()
    if policy == "expected":
        lo, hi = higher + 1, higher + tied + 1
    elif policy == "pessimistic":
        lo = hi = higher + tied + 1
    else:
        lo = hi = higher + 1
    out = {}
    for k in ks:
        for name, cumulative in (("HR", _cum_hits), ("NDCG", _cum_dcg), ("MRR", _cum_rr)):
            top = torch.clamp(hi, max=k)
            below = torch.clamp(lo - 1, max=k)
            out[f"{name}@{k}"] = (cumulative(top) - cumulative(below)) / (hi - lo + 1)
    return out


def _cum_hits(r: torch.Tensor) -> torch.Tensor:
    return r  # sum_{i<=r} 1


def _cum_dcg(r: torch.Tensor) -> torch.Tensor:
    return _cumulative(r, lambda i: 1.0 / torch.log2(i + 1.0))


def _cum_rr(r: torch.Tensor) -> torch.Tensor:
    return _cumulative(r, lambda i: 1.0 / i)


def _cumulative(r: torch.Tensor, gain) -> torch.Tensor:
    """sum_{i=1..r} gain(i) for integer r >= 0 (r is at most the cutoff k, so the table is small)."""
    n = int(r.max().item()) if r.numel() else 0
    table = torch.cat([torch.zeros(1, dtype=torch.float64, device=r.device),
                       torch.cumsum(gain(torch.arange(1, n + 1, dtype=torch.float64, device=r.device)), 0)])
    return table[r.long()]
