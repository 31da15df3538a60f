"""Negative samplers (torch only). Randomness comes only from the generator passed in."""

from __future__ import annotations

import math

import torch

from seqrec.ids import FIRST_ITEM


def uniform_items(n_items: int, shape: tuple, generator: torch.Generator,
                  exclude: torch.Tensor | None = None, max_rounds: int = 20) -> torch.Tensor:
    """Uniform internal item ids of ``shape`` [B, ...]; redrawn where they occur in ``exclude[b]`` [B, X].

    Redrawing stops after ``max_rounds`` (a row whose items cover almost the whole catalogue could
    otherwise loop forever); the few collisions left then are harmless for training.
    """
    items = torch.randint(FIRST_ITEM, FIRST_ITEM + n_items, shape, generator=generator)
    if exclude is None:
        return items
    flat_shape = (shape[0], -1)
    for _ in range(max_rounds):
        clash = (items.reshape(flat_shape)[:, :, None] == exclude[:, None, :]).any(-1).reshape(shape)
        n_clash = int(clash.sum())
        if n_clash == 0:
            break
        items[clash] = torch.randint(FIRST_ITEM, FIRST_ITEM + n_items, (n_clash,), generator=generator)
    return items


class PopularitySampler:
    """Item ids drawn with probability ∝ popularity^alpha (GRU4Rec's extra negatives; alpha 0 is uniform,
    1 is popularity). Draws go through the inverse CDF (``searchsorted`` on the cumulative weights), so a
    draw of K items costs O(K log N) and never touches a score of the whole catalogue."""

    def __init__(self, counts: torch.Tensor, alpha: float):
        weights = counts.double().clamp(min=0) ** alpha
        weights[counts <= 0] = 0.0  # an item never seen in training is never a negative
        cdf = torch.cumsum(weights, 0)  # [N], item j = internal id j + FIRST_ITEM
        self.cdf = (cdf / cdf[-1]).float()
        self.cdf[-1] = 1.0

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, generator=generator)
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1) + FIRST_ITEM


SAMPLERS = ("uniform", "popularity", "in_batch", "mixed")
SHARED = ("in_batch", "mixed")  # candidates shared by the whole batch (the others: per sequence)


class CandidateSampler:
    """The negatives of the sampled losses, and the log of each candidate's sampling rate for the logQ
    correction (Bengio & Senécal 2008; Jean et al. 2015; Yi et al., "Sampling-Bias-Corrected Neural Modeling
    for Large Corpus Item Recommendations", RecSys 2019).

    - ``uniform``: ``k`` uniform items per sequence, shared by its positions (no correction needed: every
      item has the same rate);
    - ``popularity``: ``k`` items per sequence drawn ∝ training count^``alpha`` (with replacement); an item's
      rate is ∝ count^alpha;
    - ``in_batch``: the distinct targets of the batch, shared by all its positions (the two-tower
      literature's in-batch negatives); an item's rate is its probability of being among the batch's ``M``
      targets, ``1 - (1 - p)^M`` with ``p`` its share of the training targets;
    - ``mixed``: the batch's distinct targets and ``k`` uniform items, de-duplicated (Yang et al., "Mixed
      Negative Sampling", WWW 2020); rate ``1 - (1 - p)^M (1 - 1/N)^k``.

    A candidate equal to a position's target is left out of its loss (``drop_hits``), except with
    ``popularity``: there the candidates are an importance sample of the softmax's normaliser (Bengio &
    Senécal), whose sampled copies of the target belong to it; removing them biases the corrected softmax
    against popular items (measured in tests/test_objectives.py). ``in_batch`` and ``mixed`` hold each
    item once, the target among them: its column is the positive's, dropped from the negatives.

    :meth:`draw` returns the candidates ([B, k] per sequence, or [C] shared by the batch) and :meth:`log_rate`
    the log rates of given items (None for ``uniform``: a constant shift changes no softmax).
    """

    def __init__(self, kind: str, counts: torch.Tensor, n_negatives: int, alpha: float = 1.0):
        self.kind, self.k, self.n_items = kind, n_negatives, len(counts)
        counts = counts.double().clamp(min=0)
        # p: share of the training targets [N] (the rates of the batch-shared kinds need it)
        self.share = counts / counts.sum().clamp(min=1) if kind in SHARED else None
        self.popularity = PopularitySampler(counts, alpha) if kind == "popularity" else None
        self.log_weight = (counts.clamp(min=1) ** alpha).log() if kind == "popularity" else None
        self.shared = kind in SHARED
        self.drop_hits = kind != "popularity"

    def draw(self, targets: torch.Tensor, n_rows: int, generator: torch.Generator) -> torch.Tensor:
        """Candidates for a batch of ``n_rows`` sequences whose positions' targets are ``targets`` [M]."""
        if self.kind == "uniform":
            return uniform_items(self.n_items, (n_rows, self.k), generator)
        if self.kind == "popularity":
            return self.popularity.sample(n_rows * self.k, generator).reshape(n_rows, self.k)
        columns = targets.cpu()
        if self.kind == "mixed" and self.k:
            columns = torch.cat([columns, uniform_items(self.n_items, (self.k,), generator)])
        return torch.unique(columns)

    def log_rate(self, items: torch.Tensor, n_targets: int) -> torch.Tensor | None:
        """Log sampling rate (up to a constant) of internal ids ``items``, for a batch of ``n_targets``
        positions; None where every item's rate is the same."""
        rows = (items - FIRST_ITEM).cpu()
        if self.kind == "uniform":
            return None
        if self.kind == "popularity":
            out = self.log_weight[rows]
        else:
            missed = n_targets * torch.log1p(-self.share[rows].clamp(max=1 - 1e-12))  # log (1 - p)^M
            if self.kind == "mixed":
                missed = missed + self.k * math.log1p(-1.0 / self.n_items)
            out = torch.log(-torch.expm1(missed))  # log (1 - (1 - p)^M ...): the chance of being a candidate
        return out.float().to(items.device)
