"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Follows the paper and the authors' TensorFlow reference code (kang205/SASRec, ``model.py`` and
``modules.py``):

- item embeddings scaled by sqrt(dim) plus learned positional embeddings, dropout, padding zeroed;
- ``n_blocks`` blocks of: LayerNorm on the queries only, multi-head causal self-attention whose
  Q/K/V are linear maps (with bias) of the normalised queries and the *un-normalised* keys, **no output
  projection**, dropout on the attention weights, residual added to the *normalised* queries; then
  LayerNorm, point-wise feed-forward ``dim -> dim -> dim`` with ReLU and dropout, residual added to its
  normalised input; padding positions zeroed after each block;
- a final LayerNorm (eps 1e-8 everywhere, as the reference);
- the **same item embeddings at input and output**: relevance of item i = hidden state · E_i.

Deviations, each deliberate:
- Padded keys are masked out of attention by id (the reference masks keys whose embedding sums to
  zero, which is the same thing unless a real embedding sums to zero). A padded query attends to
  itself only, instead of uniformly to all padded keys; its output is zeroed either way. Outputs at real
  positions are therefore exactly invariant to the amount of left padding.
- Positions are counted from the right edge of the ``max_len`` window (the last item always has
  position ``max_len - 1``, as in the reference's left-padded input), so a batch trimmed to its longest
  sequence gives the same outputs as the full window.
- ``attn_dropout`` (default: ``dropout``, as the reference) can be set apart: dropout on the [B, H, L, L]
  attention weights costs most of a CPU training step at max_len 200, and with ``attn_dropout=0``
  attention runs in PyTorch's fused kernel (several times faster on a CPU).
- ``sparse=True`` gives the item table sparse gradients (input and candidate lookups alike), for
  :class:`seqrec.optim.SplitAdam`'s lazy row updates with catalogues of millions (sampled losses only).
- Weights use Xavier-uniform initialisation (TF's default glorot_uniform for the reference's dense and
  embedding layers); LayerNorm starts at (1, 0).

Axes: B batch, L sequence, D dim, H heads, N items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD, n_embeddings
from seqrec.nn.layers import Dropout, SequenceNet, init_parameters


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, l, d = queries.shape
        h = self.n_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, l, h, d // h).transpose(1, 2)  # [B, L, D] -> [B, H, L, D/H]

        out = F.scaled_dot_product_attention(  # softmax(QKᵀ/sqrt(D/H)) V, dropout on the weights
            heads(self.query(queries)), heads(self.key(keys)), heads(self.value(keys)),
            attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)  # [B, H, L, D/H]
        return out.transpose(1, 2).reshape(b, l, d)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.inner = nn.Linear(dim, dim)
        self.outer = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.outer(self.dropout(F.relu(self.inner(x)))))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = CausalSelfAttention(dim, n_heads, attn_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, allowed)
        return self.ffn(self.ffn_norm(x)) * keep


class SASRecNet(SequenceNet):
    def __init__(self, n_items: int, max_len: int, dim: int = 64, n_heads: int = 1, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, sparse: bool = False):
        super().__init__()
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.n_items, self.max_len, self.dim, self.sparse = n_items, max_len, dim, sparse
        self.item_emb = nn.Embedding(n_embeddings(n_items), dim, padding_idx=PAD, sparse=sparse)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList([Block(dim, n_heads, dropout, attn_dropout) for _ in range(n_blocks)])
        self.final_norm = nn.LayerNorm(dim, eps=1e-8)
        init_parameters(self, nn.init.xavier_uniform_, self.item_emb)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded item ids [B, L] (L <= max_len)."""
        b, l = items.shape
        keep = (items != PAD).unsqueeze(-1)  # [B, L, 1]
        positions = torch.arange(self.max_len - l, self.max_len, device=items.device)
        x = self.item_emb(items) * self.dim ** 0.5 + self.pos_emb(positions)
        x = self.emb_dropout(x) * keep
        step = torch.arange(l, device=items.device)
        causal, diagonal = step[:, None] >= step[None, :], step[:, None] == step[None, :]  # (exports to ONNX)
        allowed = causal & (keep.transpose(1, 2) | diagonal)
        allowed = allowed.unsqueeze(1)  # [B, 1, L, L]: query i may see key j
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.final_norm(x)

    forward = encode

    def output_embeddings(self) -> tuple[torch.Tensor, None]:
        """The input item table's real rows [N, D] (tied), no bias."""
        return self.item_emb.weight[FIRST_ITEM:FIRST_ITEM + self.n_items], None

    def candidate_embeddings(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Item vectors of internal ids ``ids`` (rows of the tied table; sparse gradients with ``sparse``)."""
        return F.embedding(ids, self.item_emb.weight, sparse=self.sparse), None

    def flops(self, ids: torch.Tensor) -> float:
        """Per block and position: Q, K, V and the two feed-forward maps (10·D²), attention (4·L·D)."""
        b, l = ids.shape
        return float(len(self.blocks) * b * l * (10 * self.dim ** 2 + 4 * l * self.dim))
