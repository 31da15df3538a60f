"""Caser: convolutional sequence embedding (Tang & Wang, WSDM 2018), after the authors' PyTorch code
(graytowne/caser_pytorch, ``caser.py``).

The last ``L`` item embeddings form an ``L x d`` image. ``n_v`` vertical filters (``L x 1``) weight the
``L`` rows; ``n_h`` horizontal filters of every height ``h = 1..L`` (``h x d``) are max-pooled over
their positions. Both are concatenated, dropped out, and a dense layer gives ``z`` (d); ``[z; P_u]``
scores item ``i`` as ``[z; P_u] · W2_i + b2_i``. Activations as the reference's defaults: ReLU after the
horizontal convolutions and after the dense layer, none after the vertical one. Initialisation as the
reference: embeddings N(0, 1/d), W2 N(0, 1/(2d)), b2 zero.

Deviation: PAD (left padding of a short history) has a zero embedding (the reference pads with item 0,
an ordinary trained row). An unknown user (index -1: no training events, or a new history) has a zero
``P_u``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD
from seqrec.nn.factorization import user_rows


class CaserNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 50, length: int = 5, n_v: int = 4, n_h: int = 16,
                 dropout: float = 0.5):
        super().__init__()
        self.n_items, self.length, self.dropout = n_items, length, dropout
        self.user = nn.Embedding(max(n_users, 1), dim)
        self.item = nn.Embedding(n_items + FIRST_ITEM, dim, padding_idx=PAD)
        self.vertical = nn.Conv2d(1, n_v, (length, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, n_h, (h, dim)) for h in range(1, length + 1))
        self.dense = nn.Linear(n_v * dim + n_h * length, dim)
        self.out = nn.Embedding(n_items + FIRST_ITEM, 2 * dim)  # W2 (row PAD unused)
        self.out_bias = nn.Embedding(n_items + FIRST_ITEM, 1)  # b2
        nn.init.normal_(self.user.weight, 0.0, 1.0 / dim)
        nn.init.normal_(self.item.weight, 0.0, 1.0 / dim)
        nn.init.normal_(self.out.weight, 0.0, 1.0 / (2 * dim))
        nn.init.zeros_(self.out_bias.weight)
        with torch.no_grad():
            self.item.weight[PAD].zero_()

    def hidden(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """[B, 2d] for users [B] (-1 unknown) and left-padded windows of the last ``length`` items [B, L]."""
        image = self.item(windows).unsqueeze(1)  # [B, 1, L, d]
        vertical = self.vertical(image).flatten(1)  # [B, n_v * d]
        horizontal = [F.relu(conv(image).squeeze(3)).amax(2) for conv in self.horizontal]  # each [B, n_h]
        features = F.dropout(torch.cat([vertical, *horizontal], 1), self.dropout, self.training)
        z = F.relu(self.dense(features))
        return torch.cat([z, user_rows(self.user, users)], 1)

    def score_candidates(self, hidden: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", hidden, self.out(candidates)) + self.out_bias(candidates)[..., 0]

    def score_all(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.mm(hidden, self.out.weight[FIRST_ITEM:].T, out=out)
        return scores.add_(self.out_bias.weight[FIRST_ITEM:, 0])
