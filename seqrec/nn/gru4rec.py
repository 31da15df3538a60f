"""GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR 2016; Hidasi &
Karatzoglou, CIKM 2018), after the authors' official PyTorch code (hidasib/GRU4Rec_PyTorch_Official,
``gru4rec_pytorch.py``) as the behavioural reference:

- GRU layer(s) (PyTorch's GRU cell, gates r, z, n) over item embeddings; the relevance of item i after
  hidden state h is ``h · Wy_i + By_i`` (output embeddings Wy, per-item bias By);
- input embeddings: ``input_dim=None`` (the official default, "constrained embedding") reuses the output
  table Wy as the input table; ``input_dim=E`` uses a separate E-dimensional input table;
- dropout on the input embedding (``embed_dropout``) and on each layer's output (``hidden_dropout``),
  separately. In the session-parallel step, as in the official code, a layer's dropped-out output is
  also the hidden state carried to the next step;
- initialisation of the official code's default (``compatibility_mode``): every gate matrix uniform in
  ±sqrt(6 / (fan_in + fan_out)), Wy uniform in ±sqrt(6 / (n_items + dim)), biases and By zero.

Two ways through the network, equal in evaluation mode:
- :meth:`step` advances a batch of session slots by one event (session-parallel training);
- :meth:`encode` runs whole left-padded sequences at once (padded training, scoring): it right-aligns
  them (a GRU reads left to right, so outputs at real positions do not depend on the padding after them),
  runs the GRU from a zero state and puts the outputs back at the input's positions, zeros at padding.
  Here ``hidden_dropout`` drops each layer's outputs but not the state inside the sequence (cuDNN-style).

``sparse=True`` looks the item tables up with sparse gradients (row-wise updates, for ``adagrad_m``).

Deviation: the official code's one-hot input (``embedding=0`` with ``constrained_embedding=False``) is not
offered. Axes: B batch, T time, H dim (hidden size), N items, C candidates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD
from seqrec.nn.layers import Dropout, SequenceNet


def _uniform_(tensor: torch.Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(tensor, -bound, bound)


def right_align(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [R, L] -> (the same rows right-padded, their lengths [R])."""
    lengths = (x != PAD).sum(1)
    width = x.shape[1]
    index = torch.arange(width, device=x.device)[None, :] + (width - lengths)[:, None]
    return x.gather(1, _wrap(index, width)), lengths


def _wrap(index: torch.Tensor, width: int) -> torch.Tensor:
    """``index % width`` for index in [0, 2 * width) (a form the ONNX exporter takes with a symbolic width)."""
    return torch.where(index >= width, index - width, index)


class GRU4RecNet(SequenceNet):
    def __init__(self, n_items: int, dim: int = 100, n_blocks: int = 1, input_dim: int | None = None,
                 embed_dropout: float = 0.0, hidden_dropout: float = 0.0, sparse: bool = False):
        super().__init__()
        self.n_items, self.dim, self.sparse = n_items, dim, sparse
        self.out_emb = nn.Embedding(n_items + FIRST_ITEM, dim)  # Wy (row PAD unused)
        self.out_bias = nn.Embedding(n_items + FIRST_ITEM, 1)  # By
        self.in_emb = nn.Embedding(n_items + FIRST_ITEM, input_dim) if input_dim else None
        sizes = [input_dim or dim] + [dim] * n_blocks
        self.grus = nn.ModuleList([nn.GRU(sizes[i], dim, batch_first=True) for i in range(n_blocks)])
        self.embed_dropout, self.hidden_dropout = Dropout(embed_dropout), Dropout(hidden_dropout)
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
                _uniform_(self.in_emb.weight, n_items, input_dim)
            for table in (self.out_emb, self.out_bias) + ((self.in_emb,) if self.in_emb is not None else ()):
                table.weight[PAD].zero_()

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ids ``items``, with embedding dropout in training mode."""
        table = self.in_emb.weight if self.in_emb is not None else self.out_emb.weight
        return self.embed_dropout(F.embedding(items, table, sparse=self.sparse))

    def initial_state(self, batch: int, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.dim, device=device) for _ in self.grus]

    def step(self, items: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One event per slot: ids [B], per-layer states [B, H] -> (last layer's output [B, H], new states)."""
        x = self.embed(items)
        new_state = []
        for gru, h in zip(self.grus, state):
            x = self.hidden_dropout(torch.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0,
                                                   gru.bias_ih_l0, gru.bias_hh_l0))
            new_state.append(x)
        return x, new_state

    def run(self, items: torch.Tensor) -> torch.Tensor:
        """Outputs [B, T, H] for right-padded ids [B, T], every sequence starting from a zero state."""
        x = self.embed(items)
        for gru in self.grus:
            x = self.hidden_dropout(gru(x)[0])
        return x

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Outputs [B, L, H] at the positions of left-padded ids [B, L] (zeros at padding)."""
        right, lengths = right_align(items)
        outputs = self.run(right)  # [B, L, H], real positions first
        width = items.shape[1]
        back = _wrap(torch.arange(width, device=items.device)[None, :] + lengths[:, None], width)  # [B, L]
        left = outputs.gather(1, back[:, :, None].expand(-1, -1, outputs.shape[2]))
        return left * (items != PAD)[:, :, None]

    forward = encode

    def output_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Wy [N, H] and By [N] of the real items."""
        return (self.out_emb.weight[FIRST_ITEM:FIRST_ITEM + self.n_items],
                self.out_bias.weight[FIRST_ITEM:FIRST_ITEM + self.n_items, 0])

    def candidate_embeddings(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output embeddings [..., H] and biases [...] of the candidate ids ``items`` (sparse gradients with
        ``sparse``)."""
        return F.embedding(items, self.out_emb.weight, sparse=self.sparse), \
            F.embedding(items, self.out_bias.weight, sparse=self.sparse)[..., 0]

    def flops(self, ids: torch.Tensor) -> float:
        """Per layer and position: the three gates' input and recurrent maps (6·H·(in + H))."""
        b, l = ids.shape
        sizes = [gru.input_size for gru in self.grus]
        return float(b * l * sum(6 * self.dim * (size + self.dim) for size in sizes))
