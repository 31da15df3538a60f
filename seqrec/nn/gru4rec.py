"""GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR 2016; Hidasi &
Karatzoglou, CIKM 2018), after the authors' official PyTorch code (hidasib/GRU4Rec_PyTorch_Official,
``gru4rec_pytorch.py``) as the behavioural reference:

- GRU layer(s) (PyTorch's GRU cell, gates r, z, n) over item embeddings; the relevance of item i after
  hidden state h is ``h · Wy_i + By_i`` (output embeddings Wy, per-item bias By);
- input embeddings: ``embedding=0`` (the official default, "constrained embedding") reuses the output
  table Wy as the input table; ``embedding=E > 0`` uses a separate E-dimensional input table;
- dropout on the input embedding (``dropout_embed``) and on each layer's output (``dropout_hidden``),
  separately. In the session-parallel step, as in the official code, a layer's dropped-out output is
  also the hidden state carried to the next step;
- initialisation of the official code's default (``compatibility_mode``): every gate matrix uniform in
  ±sqrt(6 / (fan_in + fan_out)), Wy uniform in ±sqrt(6 / (n_items + dim)), biases and By zero.

Two ways through the network, equal in evaluation mode:
- :meth:`step` advances a batch of session slots by one event (session-parallel training);
- :meth:`forward` runs whole right-padded sequences at once (padded training, scoring). A GRU reads
  left to right, so outputs at real positions do not depend on the padding after them. Here
  ``dropout_hidden`` drops each layer's outputs but not the state inside the sequence (cuDNN-style).

Deviation: the official code's one-hot input (``embedding=0`` with ``constrained_embedding=False``) is not
offered. Axes: B batch, T time, H dim (hidden size), N items, C candidates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD
from seqrec.nn.sasrec import Dropout


def _uniform_(tensor: torch.Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(tensor, -bound, bound)


class GRU4RecNet(nn.Module):
    def __init__(self, n_items: int, dim: int = 100, n_layers: int = 1, embedding: int = 0,
                 dropout_embed: float = 0.0, dropout_hidden: float = 0.0):
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.out_emb = nn.Embedding(n_items + FIRST_ITEM, dim)  # Wy (row PAD unused)
        self.out_bias = nn.Embedding(n_items + FIRST_ITEM, 1)  # By
        self.in_emb = nn.Embedding(n_items + FIRST_ITEM, embedding) if embedding > 0 else None
        sizes = [embedding if embedding > 0 else dim] + [dim] * n_layers
        self.grus = nn.ModuleList([nn.GRU(sizes[i], dim, batch_first=True) for i in range(n_layers)])
        self.embed_dropout, self.hidden_dropout = Dropout(dropout_embed), Dropout(dropout_hidden)
        with torch.no_grad():
            for gru, fan_in in zip(self.grus, sizes):
                for gate in gru.weight_ih_l0.chunk(3, 0):
                    _uniform_(gate, fan_in, dim)
                for gate in gru.weight_hh_l0.chunk(3, 0):
                    _uniform_(gate, dim, dim)
                gru.bias_ih_l0.zero_()
                gru.bias_hh_l0.zero_()
            _uniform_(self.out_emb.weight, n_items, dim)
            self.out_bias.weight.zero_()
            if self.in_emb is not None:
                _uniform_(self.in_emb.weight, n_items, embedding)
            for table in (self.out_emb, self.out_bias) + ((self.in_emb,) if self.in_emb is not None else ()):
                table.weight[PAD].zero_()

    def embed(self, items: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """Input embeddings of ids ``items``, with embedding dropout in training mode."""
        table = self.in_emb.weight if self.in_emb is not None else self.out_emb.weight
        return self.embed_dropout(F.embedding(items, table, sparse=sparse))

    def initial_state(self, batch: int, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.dim, device=device) for _ in self.grus]

    def step(self, items: torch.Tensor, state: list[torch.Tensor], sparse: bool = False
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One event per slot: ids [B], per-layer states [B, H] -> (last layer's output [B, H], new states)."""
        x = self.embed(items, sparse)
        new_state = []
        for gru, h in zip(self.grus, state):
            x = self.hidden_dropout(torch.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0,
                                                   gru.bias_ih_l0, gru.bias_hh_l0))
            new_state.append(x)
        return x, new_state

    def forward(self, items: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """Outputs [B, T, H] for right-padded ids [B, T], every sequence starting from a zero state."""
        x = self.embed(items, sparse)
        for gru in self.grus:
            x = self.hidden_dropout(gru(x)[0])
        return x

    def candidates(self, items: torch.Tensor, sparse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Output embeddings [..., H] and biases [...] of the candidate ids ``items``."""
        return F.embedding(items, self.out_emb.weight, sparse=sparse), \
            F.embedding(items, self.out_bias.weight, sparse=sparse)[..., 0]

    def item_weights(self) -> torch.Tensor:
        return self.out_emb.weight[FIRST_ITEM:FIRST_ITEM + self.n_items]

    def item_bias(self) -> torch.Tensor:
        return self.out_bias.weight[FIRST_ITEM:FIRST_ITEM + self.n_items, 0]

    def score(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [M, N] of every real item for hidden states [M, H] (into ``out`` if given)."""
        return torch.mm(hidden, self.item_weights().T, out=out).add_(self.item_bias())
