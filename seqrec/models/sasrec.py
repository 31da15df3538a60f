"""SASRec estimator (network: :mod:`seqrec.nn.sasrec`)."""

from __future__ import annotations

import torch

from seqrec import losses
from seqrec.data.batching import NextItemBatch, NextItemBatcher
from seqrec.data.interactions import Interactions
from seqrec.errors import ConfigError
from seqrec.models.base import TransformerRecommender
from seqrec.nn.sasrec import SASRecNet
from seqrec.optim import SplitAdam
from seqrec.options import option


class SASRec(TransformerRecommender):
    """SASRec (Kang & McAuley, ICDM 2018) trained on all positions of each user's sequence.

    Network: :class:`seqrec.nn.sasrec.SASRecNet` (see its docstring for fidelity notes).
    Training follows the reference: each user's last ``max_len + 1`` training items give ``max_len``
    (input, next-item) pairs (:class:`~seqrec.data.batching.NextItemBatcher`); every non-padding position is
    a training target. Losses (:mod:`seqrec.losses`): ``bce`` (the paper's: one uniform negative per position,
    not in the user's window; the reference excludes the user's whole training set, we exclude the
    ``max_len + 1`` items of the window), ``ce`` (full softmax, the default: "SASRec+"), and the sampled
    ``sampled_ce``, ``gbce``, ``bpr_max``, ``top1_max`` (by default ``n_negatives`` uniform negatives shared by
    a sequence's positions, a negative equal to the position's target dropped from that position's loss;
    other samplers with logQ correction: :class:`~seqrec.samplers.CandidateSampler`). Adam with betas
    (0.9, 0.98) as the reference (which adds no L2 by default); ``weight_decay`` > 0 makes it AdamW, decaying
    the weight matrices and embeddings (not biases or LayerNorm); with ``sparse_items``, lazy Adam on the item table
    (:class:`~seqrec.optim.SplitAdam`), a deviation for catalogues of millions, where a dense update of the
    whole table dominates a sampled step. With ``bucketing`` each batch's loss is weighted by its share of the
    epoch's positions, so that every position weighs the same as with random batches (unweighted, bucketing
    lost accuracy).
    Defaults follow the paper (dim 64, 2 blocks, 1 head, lr 1e-3, batch 128); max_len 50 suits Amazon data
    (the paper used 200 for MovieLens-1M); dropout 0.2 is the paper's MovieLens-1M value (it used 0.5 on the
    sparse Amazon data).
    """

    name = "sasrec"

    sparse_items: bool = option(False, "update the item table row by row from sparse gradients (lazy Adam): for "
                                       "catalogues of millions with a sampled loss", group="training")

    def validate(self) -> None:
        super().validate()
        if self.sparse_items and losses.get(self.loss).negatives == "catalogue":
            raise ConfigError("sparse_items needs a sampled loss (bce, sampled_ce, gbce, ...): the full softmax "
                              "touches every row of the item table at every step")
        if self.sparse_items and self.weight_decay:
            raise ConfigError("sparse_items updates the item table lazily (SparseAdam), which has no weight decay: "
                              "use weight_decay 0 with it")

    def _build_net(self, n_items: int) -> SASRecNet:
        return SASRecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                         self.attn_dropout, sparse=self.sparse_items)

    def _optimizer(self):
        if not self.sparse_items:
            return super()._optimizer()
        table = self.net_.item_emb.weight
        return SplitAdam([p for p in self.net_.parameters() if p is not table], [table], self.lr)

    def _batcher(self, train: Interactions) -> NextItemBatcher:
        return NextItemBatcher(train, self.max_len, self.batch_size, self.bucketing)

    def _batch_loss(self, batch: NextItemBatch, generator: torch.Generator) -> torch.Tensor:
        hidden = self._encode(batch.inputs)  # [B, T, D]
        return batch.weight * self._position_loss(hidden, batch.mask, batch.targets, batch.window, generator)
