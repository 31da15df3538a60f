"""BERT4Rec estimator (network: :mod:`seqrec.nn.bert4rec`)."""

from __future__ import annotations

import torch

from seqrec import losses, samplers
from seqrec.data.interactions import Interactions
from seqrec.errors import ConfigError, choose
from seqrec.ids import FIRST_ITEM, PAD, mask_id
from seqrec.models.base import SequentialRecommender
from seqrec.models.sasrec import SASRec
from seqrec.nn.bert4rec import HEADS, INITS, NORMS, BERT4RecNet


class BERT4Rec(SequentialRecommender):
    """BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

    Network: :class:`seqrec.nn.bert4rec.BERT4RecNet` (see its docstring for fidelity notes).

    Training (the reference's ``gen_data_fin.py`` + ``run.py``): each user's last ``max_len`` training items
    form one window; every epoch, each window gets a fresh random mask of exactly
    ``max(1, round(length * mask_prob))`` positions (the reference's ``masked_lm_prob``; it always
    replaces a chosen item by ``[mask]``, its ``mask_prob=1.0``), and the loss is taken over the masked
    positions only: ``ce`` (full softmax over the catalogue, the paper's), ``sampled_ce`` (``n_negatives``
    uniform negatives shared by a window's positions) or ``bce`` (one uniform negative per position).
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
    item_dropout=0.2, mask_prob=0.15, mask_token_share=0.8`` (``benchmarks/run.py ml100k-bert4rec-rectools``).
    On MovieLens-100K (max_len 200, dim 64) it gave test NDCG@10 0.094–0.111 over five seeds (mean 0.101),
    and 0.112–0.116 over three seeds (mean 0.114) without the item dropout, against 0.064–0.094 for every
    variant with the paper's or our pre-LN layer (benchmarks/results/ml100k-bert4rec-*.json). On Beauty, at
    dim 64 it learned more slowly than the paper's setting; at RecTools' Beauty size (``dim=256,
    n_heads=4``, on a GPU) it is the best: validation chose epoch 62 (test NDCG@10 0.0224), and refit on
    train + validation for 62 epochs it reached 0.0269 / 0.0268 over two seeds, 0.0270 on a 2-core CPU
    (RecTools 0.0242; benchmarks/results/beauty-bert4rec-rectools-*refit62*.json). The defaults stay the reference's.

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
    defaults, so ``epochs`` defaults to 400 with ``patience`` 20; history.json records each epoch's time.
    ``bucketing`` batches windows of similar length (see :class:`SASRec`), each batch's loss weighted by
    its share of the epoch's masked positions.
    """

    name = "bert4rec"

    def __init__(self, loss: str = "ce", max_len: int = 50, dim: int = 64, n_heads: int = 2, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, head: str = "paper", norm: str = "post",
                 init: str = "bert", item_dropout: float = 0.0, sliding_window: float = 0.0,
                 mask_prob: float = 0.2, mask_token_share: float = 1.0, last_mask_prob: float = 0.0,
                 n_negatives: int = 256, lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 128, bucketing: bool = False, epochs: int = 400, patience: int = 20,
                 time_budget: float | None = None, seed: int = 0, device: str = "cpu", bf16: bool = False,
                 progress: bool = True):
        self.loss, self.max_len, self.dim, self.n_heads, self.n_blocks = loss, max_len, dim, n_heads, n_blocks
        self.dropout, self.attn_dropout, self.head, self.norm = dropout, attn_dropout, head, norm
        self.init, self.item_dropout, self.sliding_window = init, item_dropout, sliding_window
        self.mask_prob, self.mask_token_share, self.last_mask_prob = mask_prob, mask_token_share, last_mask_prob
        self.n_negatives = n_negatives
        self.lr, self.weight_decay, self.batch_size, self.bucketing = lr, weight_decay, batch_size, bucketing
        self.epochs, self.patience, self.time_budget = epochs, patience, time_budget
        self.seed, self.device = seed, device
        self.bf16, self.progress = bf16, progress

    def _build_net(self, n_items: int) -> BERT4RecNet:
        losses.check_loss(self.loss)
        choose("head", self.head, HEADS)
        choose("norm", self.norm, NORMS)
        choose("init", self.init, INITS)
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 <= self.mask_token_share <= 1.0:
            raise ConfigError(f"mask_token_share must be in [0, 1], got {self.mask_token_share}")
        if not 0.0 <= self.last_mask_prob <= 1.0:
            raise ConfigError(f"last_mask_prob must be in [0, 1], got {self.last_mask_prob}")
        if not 0.0 <= self.item_dropout < 1.0:
            raise ConfigError(f"item_dropout must be in [0, 1), got {self.item_dropout}")
        if not 0.0 <= self.sliding_window <= 1.0:
            raise ConfigError(f"sliding_window must be in [0, 1], got {self.sliding_window}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        return BERT4RecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                           self.attn_dropout, self.head, self.norm, self.init, self.item_dropout)

    _autocast = SASRec._autocast

    def _make_optimizer(self) -> torch.optim.Optimizer | None:
        """Adam, or with ``weight_decay`` AdamW decaying the weight matrices and embeddings but not biases or
        LayerNorm parameters (as BERT's ``AdamWeightDecayOptimizer``)."""
        if not self.weight_decay:
            return None
        params = list(self.net_.parameters())
        groups = [{"params": [p for p in params if p.dim() == 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.98), fused=True)

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        masked = torch.full((len(x), 1), mask_id(self.net_.n_items), dtype=x.dtype, device=x.device)
        x = torch.cat([x, masked], dim=1)[:, -self.max_len:]  # append [mask]; drop the oldest at max_len
        with self._autocast():
            hidden = self.net_(x)[:, -1]
        return self.net_.score(hidden.float(), out=out)

    def mask(self, window: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Boolean [B, L]: the positions of left-padded ``window`` to replace by ``[mask]`` this time."""
        real = window != PAD
        n_real = real.sum(1)
        n_mask = torch.clamp(torch.round(n_real * self.mask_prob), min=1).to(torch.int64)  # as BERT's generator
        keys = torch.rand(window.shape, generator=generator).masked_fill_(~real, 2.0)
        chosen = keys.argsort(1).argsort(1) < n_mask[:, None]  # the n_mask real positions of lowest key
        if self.last_mask_prob > 0:
            last = torch.rand(len(window), generator=generator) < self.last_mask_prob
            chosen[last] = False
            chosen[last, -1] = True  # left padding: the last column is always a real item
        return chosen

    def corrupt(self, window: torch.Tensor, chosen: torch.Tensor, n_items: int,
                generator: torch.Generator) -> torch.Tensor:
        """The training input: chosen positions become ``[mask]`` (or, beyond ``mask_token_share``, a random
        item or themselves, half and half)."""
        inputs = window.masked_fill(chosen, mask_id(n_items))
        if self.mask_token_share < 1.0:
            u = torch.rand(window.shape, generator=generator)
            keep = chosen & (u >= self.mask_token_share + (1 - self.mask_token_share) / 2)
            random = chosen & (u >= self.mask_token_share) & ~keep
            inputs[keep] = window[keep]
            inputs[random] = torch.randint(FIRST_ITEM, FIRST_ITEM + n_items, (int(random.sum()),), generator=generator)
        return inputs

    def _training(self, train: Interactions, generator: torch.Generator):
        step = max(1, int(self.sliding_window * self.max_len)) if self.sliding_window > 0 else 0
        all_windows, real = self._user_windows(train, self.max_len, min_events=1, step=step)
        batches, n_batches = self._window_batches(all_windows, real)
        net, n_items = self.net_, train.n_items
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        expected = torch.clamp(torch.round(real * self.mask_prob), min=1)
        expected = (1 - self.last_mask_prob) * expected + self.last_mask_prob
        masked_per_batch = float(expected.sum()) / n_batches

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            chosen = self.mask(window, generator)
            inputs = self.corrupt(window, chosen, n_items, generator).to(self.device)
            with self._autocast():
                hidden = net(inputs)
            chosen = chosen.to(self.device)
            hidden = net.project(hidden.float()[chosen])  # [M, D] at masked positions only
            targets = window.to(self.device)[chosen]  # [M] internal ids
            weight = float(chosen.sum()) / masked_per_batch if self.bucketing else 1.0
            bias = net.item_bias()
            if self.loss == "ce":
                return weight * losses.ce(hidden, net.item_weights(), targets - FIRST_ITEM, dtype, bias=bias)

            def logits(h, items):  # h [M, D] or [M, K, D]-broadcastable; items internal ids
                out = (h * net.table()[items]).sum(-1)
                return out if bias is None else out + bias[items - FIRST_ITEM]

            positive = logits(hidden, targets)
            if self.loss == "bce":
                negatives = samplers.uniform_items(n_items, tuple(window.shape), generator, exclude=window)
                negative = logits(hidden, negatives.to(self.device)[chosen])
                return weight * losses.bce(positive, negative)
            negatives = samplers.uniform_items(n_items, (len(window), self.n_negatives), generator).to(self.device)
            # one [L, D] x [D, K] product per window, as SASRec: gathering K embeddings for every masked
            # position instead ([M, K, D]) moved several times the memory for the same logits
            dense = hidden.new_zeros(window.shape + (hidden.shape[1],))
            dense[chosen] = hidden
            negative = torch.bmm(dense, net.table()[negatives].transpose(1, 2))[chosen]  # [M, K]
            rows = chosen.nonzero()[:, 0]  # window of each masked position
            if bias is not None:
                negative = negative + bias[negatives - FIRST_ITEM][rows]
            clash = negatives[rows] == targets[:, None]
            return weight * losses.sampled_ce(positive, negative, clash)

        return batches, n_batches, step_loss
