"""BERT4Rec estimator (network: :mod:`seqrec.nn.bert4rec`)."""

from __future__ import annotations

import torch

from seqrec.data.batching import ClozeBatch, ClozeBatcher
from seqrec.data.interactions import Interactions
from seqrec.ids import mask_id
from seqrec.models.base import TransformerRecommender
from seqrec.nn.bert4rec import HEADS, INITS, NORMS, BERT4RecNet
from seqrec.options import between, option, span


class BERT4Rec(TransformerRecommender):
    """BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

    Network: :class:`seqrec.nn.bert4rec.BERT4RecNet` (see its docstring for fidelity notes).

    Training (the reference's ``gen_data_fin.py`` + ``run.py``): each user's last ``max_len`` training items
    form one window; every epoch, each window gets a fresh random mask of exactly
    ``max(1, round(length * mask_prob))`` positions (the reference's ``masked_lm_prob``; it always
    replaces a chosen item by ``[mask]``, its ``mask_prob=1.0``), and the loss is taken over the masked
    positions only: ``ce`` (full softmax over the catalogue, the paper's), the sampled losses
    (``n_negatives`` uniform negatives shared by a window's positions) or ``bce`` (one uniform negative per
    position).
    The paper's ρ: 0.2 for MovieLens-1M, 0.4 for Steam, 0.6 for Beauty (``mask_prob`` defaults to 0.2).
    ``mask_token_share`` (default 1.0, the reference's): the share of chosen positions whose input becomes
    ``[mask]``; the others are split evenly between a random item and the unchanged item (BERT's 80/10/10
    is ``mask_token_share=0.8``, as RecTools' BERT4Rec). All chosen positions are targets either way.
    ``last_mask_prob``: the fraction of windows in which *only the last item* is masked instead, which
    trains exactly the inference task (appended ``[mask]``); later reproductions use it to close the
    train/inference gap (the reference's data generator adds such windows too). Default 0.
    Inference appends ``[mask]`` to the history (dropping the oldest item at ``max_len``) and scores the
    items at that position.
    ``init``: ``"bert"`` (default, the reference's truncated normal with std 0.02) or ``"xavier"`` (Xavier
    normal for every weight matrix and embedding table, as RecTools' BERT4Rec): the larger initial weights
    leave the early plateau sooner on MovieLens-100K, but on a large catalogue Xavier gives the item table a
    *smaller* std (0.006 for Beauty's 54k items) and learned more slowly there. ``weight_decay``: AdamW
    decay of the weight matrices and embeddings, not of biases and LayerNorm (the reference: 0.01 with lr
    1e-4); default 0. ``item_dropout``: dropout on the whole item table, one sample per training step
    shared by the input embedding and the output head (RecTools' BERT4Rec); default 0.

    RecTools' BERT4Rec is these choices together: ``norm="rectools", head="dot", init="xavier",
    item_dropout=0.2, mask_prob=0.15, mask_token_share=0.8``; results of each configuration are in
    ``benchmarks/RESULTS.md``. The defaults stay the reference's.

    ``sliding_window`` (the reference's ``prop_sliding_window``; its scripts use 0.5): a history longer
    than ``max_len`` also gives windows starting ``sliding_window * max_len`` items apart back to its first
    item, as the reference's data generator. Default 0: each user contributes its last ``max_len`` items,
    as SASRec's training here.

    Deviations from the reference, each deliberate: dynamic masking every epoch instead of 10 fixed
    copies (``dupe_factor``) of each window; no sliding windows by default (above); Adam with lr 1e-3 and
    betas (0.9, 0.98), by default no weight decay, and no warm-up or decay (the reference: AdamW lr 1e-4,
    400k steps), with early stopping on validation NDCG@10 instead of a fixed step budget; the reference also
    trains on every user's validation item (its generator holds out only the test item), which
    ``model.refit(split.train_valid)`` (``seqrec train --refit true``) reproduces once validation has chosen
    the number of epochs. The RecSys 2022
    replicability study (Petrov & Macdonald) found that BERT4Rec needs far more training than its
    defaults, so ``epochs`` defaults to 400 with ``patience`` 20.
    ``bucketing`` batches windows of similar length (see :class:`SASRec`), each batch's loss weighted by
    its share of the epoch's masked positions. Masking and corruption are the data layer's
    (:class:`~seqrec.data.batching.ClozeBatcher`).
    """

    name = "bert4rec"
    DEFAULTS = {"n_heads": 2, "epochs": 400, "patience": 20}

    head: str = option("paper", "output head: the paper's transform + bias, or a plain dot product", choices=HEADS)
    norm: str = option("post", "LayerNorm placement: the reference's post-LN, pre-LN, or RecTools' layer",
                       choices=NORMS)
    init: str = option("bert", "initialisation: BERT's truncated normal 0.02, or Xavier normal", choices=INITS)
    item_dropout: float = option(0.0, "dropout on the whole item table, one sample per step (RecTools')",
                                 check=between(0, 1, high_open=True))
    sliding_window: float = option(0.0, "long histories also give windows this share of max_len apart (0: off)",
                                   check=between(0, 1))
    mask_prob: float = option(0.2, "share of each window's items masked (the paper's rho)",
                              check=between(0, 1, low_open=True), search=span(0.1, 0.6))
    mask_token_share: float = option(1.0, "share of masked items replaced by [mask] (BERT's 0.8; the rest "
                                          "random or kept)", check=between(0, 1))
    last_mask_prob: float = option(0.0, "share of windows in which only the last item is masked",
                                   check=between(0, 1))

    def _build_net(self, n_items: int) -> BERT4RecNet:
        return BERT4RecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                           self.attn_dropout, self.head, self.norm, self.init, self.item_dropout)

    def _next_hidden(self, windows: torch.Tensor) -> torch.Tensor:
        """Append ``[mask]`` (dropping the oldest item at ``max_len``) and read the hidden state there."""
        masked = torch.full_like(windows[:, :1], mask_id(self.net_.n_items))  # (keeps the batch size symbolic for ONNX)
        return super()._next_hidden(torch.cat([windows, masked], dim=1)[:, -self.max_len:])

    def _batcher(self, train: Interactions) -> ClozeBatcher:
        stride = max(1, int(self.sliding_window * self.max_len)) if self.sliding_window > 0 else 0
        return ClozeBatcher(train, self.max_len, self.batch_size, self.mask_prob, self.mask_token_share,
                            self.last_mask_prob, stride, self.bucketing)

    def _batch_loss(self, batch: ClozeBatch, generator: torch.Generator) -> torch.Tensor:
        hidden = self._encode(batch.inputs)  # [B, L, D]
        return batch.weight * self._position_loss(hidden, batch.chosen, batch.window, batch.window, generator)
