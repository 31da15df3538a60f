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
