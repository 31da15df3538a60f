"""Caser estimator (network: :mod:`seqrec.nn.caser`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seqrec.data.batching import TargetWindowBatch, TargetWindowBatcher
from seqrec.data.interactions import Interactions
from seqrec.data.sequences import Histories
from seqrec.ids import PAD
from seqrec.models.base import UserRecommender
from seqrec.nn.caser import CaserNet
from seqrec.options import between, choice, option, span


class Caser(UserRecommender):
    """Caser (Tang & Wang, WSDM 2018) as the authors' PyTorch code trains it: every user's sliding windows
    of ``length`` (L) items followed by ``n_targets`` (T) targets (:class:`~seqrec.data.batching.TargetWindowBatcher`);
    the log loss ``-mean ln σ(y_target) - mean ln(1 - σ(y_negative))`` with ``n_negatives`` uniform negatives
    per window outside the user's training items; Adam with L2 ``weight_decay``. Defaults are the
    reference's: d 50, L 5, T 3, 4 vertical and 16 horizontal filters per height, dropout 0.5, 3 negatives,
    lr 1e-3, weight decay 1e-6, batch 512, 50 epochs.

    Recommends after any history from its last L items; an unknown user (a new history, or one without
    training events) has a zero user embedding.
    """

    name = "caser"

    dim: int = option(50, "embedding size d", check=between(1), search=choice(25, 50, 100))
    length: int = option(5, "items read, L", check=between(1), search=choice(3, 5, 7, 9))
    n_targets: int = option(3, "targets per training window, T", check=between(1),
                           search=choice(1, 2, 3))
    n_v: int = option(4, "vertical filters", check=between(1))
    n_h: int = option(16, "horizontal filters of each height", check=between(1),
                      search=choice(4, 8, 16, 32))
    dropout: float = option(0.5, "dropout before the dense layer", check=between(0, 1, high_open=True),
                             search=span(0.0, 0.7))
    n_negatives: int = option(3, "negatives per training window", check=between(1))
    weight_decay: float = option(1e-6, "Adam's L2 weight decay", check=between(0),
                                 search=span(1e-7, 1e-3, log=True))
    DEFAULTS = {"batch_size": 512, "epochs": 50, "patience": 5}

    def _build_net(self, n_items: int) -> CaserNet:
        return CaserNet(self.vocab_.n_users, n_items, self.dim, self.length, self.n_v, self.n_h, self.dropout)

    def _batcher(self, train: Interactions) -> TargetWindowBatcher:
        return TargetWindowBatcher(train, self.length, self.n_targets, self.batch_size, self.n_negatives)

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)

    def _batch_loss(self, batch: TargetWindowBatch, generator: torch.Generator) -> torch.Tensor:
        hidden = self.net_.hidden(batch.users.to(self.device), batch.inputs.to(self.device))
        targets = batch.targets.to(self.device)
        positive = self.net_.score_candidates(hidden, targets)
        negative = self.net_.score_candidates(hidden, batch.negatives.to(self.device))
        real = targets != PAD
        return -F.logsigmoid(positive)[real].mean() - F.logsigmoid(-negative).mean()

    @torch.no_grad()
    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_fitted()
        self.net_.eval()
        windows = torch.from_numpy(np.ascontiguousarray(histories.windows(self.length))).to(self.device)
        hidden = self.net_.hidden(self._known_users(histories), windows)
        return self.net_.score_all(hidden, out=out if self.device == "cpu" else None)
