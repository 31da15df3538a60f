"""BERT4Rec: sequential recommendation with a bidirectional transformer (Sun et al., CIKM 2019).

Follows the paper and the authors' TensorFlow reference code (FeiSun/BERT4Rec, ``modeling.py``,
``run.py``, ``bert_train/*.json``), which is Google's BERT encoder:

- input = item embedding + learned positional embedding, then LayerNorm and dropout;
- ``n_blocks`` post-LN transformer layers, **no causal mask** (every position sees the whole window):
  multi-head self-attention (Q/K/V and an output projection, dropout on the attention weights and on
  the output), residual, LayerNorm; feed-forward ``dim -> 4 dim -> dim`` with GELU, dropout, residual,
  LayerNorm (eps 1e-12 as BERT);
- the head of the paper's eq. (7), ``softmax(GELU(h W + b) Eᵀ + b_o)`` with E the *input* item
  embeddings and b_o a per-item bias; the reference code also applies a LayerNorm after the GELU
  (``get_masked_lm_output``), and so do we. ``head="dot"`` replaces it with a plain tied dot product
  ``h Eᵀ`` (no transform, no bias), as several later reproductions do;
- weights from a truncated normal with std 0.02 (BERT's ``initializer_range``), biases zero,
  LayerNorm (1, 0);
- a ``[mask]`` item with its own embedding row (id ``n_items + 1``, see :mod:`seqrec.ids`). It is
  never scored: outputs cover the real items only, so neither ``[mask]`` nor padding is recommended.

Deviations, each deliberate:
- Windows are left-padded and positions are counted from the window's right edge, so the appended
  ``[mask]`` of inference always sits at position ``max_len - 1`` (the reference right-pads and counts
  from the left). Padded keys are masked out of attention by id: outputs at real positions are exactly
  invariant to the amount of padding, so batches are trimmed to their longest window.
- ``attn_dropout`` (default: ``dropout``, as the reference) can be set apart; with 0, attention runs
  in PyTorch's fused kernel (several times faster on CPU).
- ``norm="pre"`` (an option; default ``"post"``, the reference's) puts each LayerNorm before its
  sub-layer and one after the last layer (pre-LN), which trains faster. ``norm="rectools"`` is the layer
  of RecTools' BERT4Rec (``PreLNTransformerLayer``, ``TransformerTorchBackbone``): pre-LN with no
  LayerNorm on the embeddings nor after the last layer, dropout after the FFN's GELU, and dropout on the
  residual stream at the end of every layer.
- ``init="xavier"`` (an option; default ``"bert"``, the reference's truncated normal 0.02) draws every weight
  matrix and embedding table from a Xavier normal, as RecTools' BERT4Rec.
- ``item_dropout`` (an option; default 0, the reference has none) drops entries of the whole item table once
  per training step, and that one sample embeds the input and scores the output (RecTools' BERT4Rec does
  this in ``IdEmbeddingsItemNet``): in training, :meth:`BERT4RecNet.output_embeddings` returns the sample
  the last ``encode`` embedded its input with.

Axes: B batch, L sequence, D dim, H heads, N items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD, n_embeddings
from seqrec.nn.layers import Dropout, SequenceNet, dropout, init_parameters

HEADS = ("paper", "dot")
NORMS = ("post", "pre", "rectools")
INITS = ("bert", "xavier")
_EPS = 1e-12


def _truncated_normal(param: torch.Tensor) -> None:
    nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04)  # TF truncated_normal: within 2 std


class SelfAttention(nn.Module):
    """Multi-head self-attention with an output projection (BERT's ``attention_layer`` + dense)."""

    def __init__(self, dim: int, n_heads: int, attn_dropout: float, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.attn_dropout = n_heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.dropout(self.out(out.transpose(1, 2).reshape(b, l, d)))


class Layer(nn.Module):
    """One transformer layer: post-LN ``LN(x + Attn(x))``, ``LN(x + FFN(x))``; pre-LN ``x + Attn(LN(x))``,
    ``x + FFN(LN(x))``; or RecTools' pre-LN layer, which adds dropout inside the FFN (after the GELU) and on
    the residual stream at the layer's end."""

    def __init__(self, dim: int, n_heads: int, dropout: float, attn_dropout: float, norm: str = "post"):
        super().__init__()
        self.norm = norm
        self.attn = SelfAttention(dim, n_heads, attn_dropout, dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=_EPS)
        self.inner = nn.Linear(dim, 4 * dim)
        self.outer = nn.Linear(4 * dim, dim)
        self.inner_dropout = Dropout(dropout if norm == "rectools" else 0.0)
        self.ffn_dropout = Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=_EPS)
        self.residual_dropout = Dropout(dropout if norm == "rectools" else 0.0)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.norm == "post":
            x = self.attn_norm(x + self.attn(x, allowed))
            return self.ffn_norm(x + self.ffn(x))
        x = x + self.attn(self.attn_norm(x), allowed)
        return self.residual_dropout(x + self.ffn(self.ffn_norm(x)))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.outer(self.inner_dropout(F.gelu(self.inner(x)))))


class BERT4RecNet(SequenceNet):
    def __init__(self, n_items: int, max_len: int, dim: int = 64, n_heads: int = 2, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, head: str = "paper",
                 norm: str = "post", init: str = "bert", item_dropout: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {list(HEADS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {list(NORMS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose from {list(INITS)}")
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.n_items, self.max_len, self.dim, self.head_kind = n_items, max_len, dim, head
        self.item_dropout = item_dropout
        self._table: torch.Tensor | None = None  # the item table of the last training forward
        self.item_emb = nn.Embedding(n_embeddings(n_items, with_mask=True), dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.emb_norm = nn.LayerNorm(dim, eps=_EPS) if norm != "rectools" else nn.Identity()
        self.emb_dropout = Dropout(dropout)
        self.layers = nn.ModuleList([Layer(dim, n_heads, dropout, attn_dropout, norm) for _ in range(n_blocks)])
        self.final_norm = nn.LayerNorm(dim, eps=_EPS) if norm == "pre" else None
        if head == "paper":
            self.transform = nn.Linear(dim, dim)
            self.transform_norm = nn.LayerNorm(dim, eps=_EPS)
            self.out_bias = nn.Parameter(torch.zeros(n_items))
        init_parameters(self, nn.init.xavier_normal_ if init == "xavier" else _truncated_normal, self.item_emb)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded ids [B, L] (L <= max_len; may hold the MASK id)."""
        b, l = items.shape
        table = self.item_emb.weight
        if self.training and self.item_dropout > 0:
            table = dropout(table, self.item_dropout)
        self._table = table if self.training else None
        positions = torch.arange(self.max_len - l, self.max_len, device=items.device)
        x = self.emb_dropout(self.emb_norm(F.embedding(items, table, PAD) + self.pos_emb(positions)))
        allowed = (items != PAD)[:, None, None, :]  # [B, 1, 1, L]: every query sees every real key
        for layer in self.layers:
            x = layer(x, allowed)
        return x if self.final_norm is None else self.final_norm(x)

    forward = encode

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's transform of hidden states [..., D] (identity for ``head="dot"``)."""
        if self.head_kind == "dot":
            return hidden
        return self.transform_norm(F.gelu(self.transform(hidden)))

    def table(self) -> torch.Tensor:
        """The [V, D] item table of this step: in training, the one the last forward embedded its input with
        (one ``item_dropout`` sample shared by input and output); in evaluation the weights."""
        return self._table if self.training and self._table is not None else self.item_emb.weight

    def output_embeddings(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[N, D] real rows of this step's item table (tied to the input), and the per-item bias of the
        paper's head (None for ``head="dot"``)."""
        return self.table()[FIRST_ITEM:FIRST_ITEM + self.n_items], self.out_bias if self.head_kind == "paper" else None

    def flops(self, ids: torch.Tensor) -> float:
        """Per layer and position: QKV, output projection and the 4x feed-forward (24·D²), attention (4·L·D)."""
        b, l = ids.shape
        return float(len(self.layers) * b * l * (24 * self.dim ** 2 + 4 * l * self.dim))

    def head_flops(self, n_positions: int, n_candidates: int) -> float:
        transform = 2.0 * n_positions * self.dim ** 2 if self.head_kind == "paper" else 0.0
        return transform + super().head_flops(n_positions, n_candidates)
