"""Shared network pieces: fast dropout, and :class:`SequenceNet`, the protocol every network implements.

The protocol (what models, losses and ranking rely on; axes B batch, L sequence, D dim, N items, C
candidates):

- ``encode(ids [B, L]) -> hidden [B, L, D]``: left-padded internal ids in, one hidden state per position
  (padded positions hold zeros or values nobody reads);
- ``output_embeddings() -> (weights [N, D], bias [N] | None)``: the real items' output side, row j = item
  ``j + FIRST_ITEM``; relevance of item j after hidden state h is ``head(h) · weights[j] + bias[j]``;
- ``head(hidden [..., D]) -> [..., D]``: the transform applied before the dot product (identity unless a
  network has one, as BERT4Rec's);
- ``candidate_embeddings(ids) -> (weights [..., D], bias [...] | None)`` of given internal ids (a network
  whose item tables take sparse gradients overrides it);
- ``flops(ids)``: forward FLOPs of ``encode`` on a batch (benchmarks report achieved FLOP/s from it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD


def keep_mask(shape: tuple[int, ...], p: float, device=None) -> torch.Tensor:
    """Boolean mask of ``shape``, each entry False (dropped) with probability ``p`` rounded to a multiple of
    2^-15, independently, from the global generator.

    Built from 64-bit random words cut into 16-bit lanes (15 uniform bits each): several times faster on a
    CPU than ``torch.rand(shape) >= p`` or ``bernoulli_`` (``nn.Dropout``), which matters when the mask
    covers a whole item table (BERT4Rec's ``item_dropout``).
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()  # [0, 2^63): 63 random bits
    lanes = words.view(torch.int16)[:n].view(shape).bitwise_and_(0x7FFF)  # 4 lanes of 15 uniform bits per word
    return lanes >= round(p * 32768)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with entries zeroed with probability ``p`` and the rest scaled by 1 / (1 - p) (training only)."""
    return x * keep_mask(tuple(x.shape), p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Inverted dropout with its mask from :func:`keep_mask` (the distribution of ``nn.Dropout`` up to p's
    rounding to 2^-15, drawn from the same global generator)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return dropout(x, self.p)


def init_parameters(net: nn.Module, matrix_init, item_table: nn.Embedding) -> None:
    """Initialise every weight matrix and embedding table of ``net`` with ``matrix_init`` (in parameter
    order), biases to zero, LayerNorms to (1, 0), and zero ``item_table``'s PAD row."""
    for name, param in net.named_parameters():
        if param.dim() == 2:
            matrix_init(param)
        elif "norm" not in name:
            nn.init.zeros_(param)
    with torch.no_grad():
        item_table.weight[PAD].zero_()


class SequenceNet(nn.Module):
    """Base of the networks: the protocol in the module docstring, with its shared defaults."""

    n_items: int

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output_embeddings(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def candidate_embeddings(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights, bias = self.output_embeddings()
        rows = ids - FIRST_ITEM
        return weights[rows], None if bias is None else bias[rows]

    def score(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [M, N] of every real item for hidden states [M, D] (into ``out`` if given)."""
        weights, bias = self.output_embeddings()
        scores = torch.mm(self.head(hidden), weights.T, out=out)
        return scores if bias is None else scores.add_(bias)

    def flops(self, ids: torch.Tensor) -> float:
        raise NotImplementedError

    def head_flops(self, n_positions: int, n_candidates: int) -> float:
        """Forward FLOPs of scoring ``n_candidates`` items at ``n_positions`` positions (dot products)."""
        weights, _ = self.output_embeddings()
        return 2.0 * n_positions * n_candidates * weights.shape[1]
