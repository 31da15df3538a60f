"""Negative samplers (torch only). Randomness comes only from the generator passed in."""

from __future__ import annotations

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
