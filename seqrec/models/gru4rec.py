"""GRU4Rec estimator (network: :mod:`seqrec.nn.gru4rec`): session-parallel and padded training."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seqrec import losses, samplers
from seqrec.data.batching import NextItemBatch, NextItemBatcher, SessionBatch, SessionParallelBatcher
from seqrec.data.interactions import Interactions
from seqrec.errors import ConfigError
from seqrec.ids import FIRST_ITEM
from seqrec.models.base import SequentialRecommender
from seqrec.models.objectives import shared_scores
from seqrec.nn.gru4rec import GRU4RecNet
from seqrec.optim import OPTIMIZERS, make_optimizer
from seqrec.options import between, choice, option, span

BATCHINGS = ("session", "padded")


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018), after the official PyTorch code.

    Network: :class:`seqrec.nn.gru4rec.GRU4RecNet`. Defaults are the official code's (one layer of 100,
    constrained embedding, cross-entropy, batch 64, 2048 extra negatives with alpha 0.5, Adagrad with
    momentum at lr 0.05, 10 epochs); tuned values per dataset are in its ``paramfiles`` (e.g. Diginetica
    BPR-max: dim 512, batch 128, dropouts 0.5 / 0.3, momentum 0.15, alpha 0.3, bpreg 0.9, ELU alpha 1).

    ``batching="session"`` (default): session-parallel mini-batches
    (:class:`~seqrec.data.batching.SessionParallelBatcher`): each "user" of the training log is a session,
    sessions run in order of their first timestamp, a slot's hidden state is reset exactly when its session
    ends and the next one starts, gradients are truncated after one step (as the official code). Per step,
    the candidates are the slots' targets plus ``n_negatives`` items shared by the mini-batch, drawn ∝
    popularity^``sample_alpha`` **before** scoring; row i's positive is column i, every other column is a
    negative (other slots' targets included). ``batching="padded"``: every position of the last
    ``max_len + 1`` events of each user, like SASRec (for leave-one-out data); the candidates are each
    position's target plus the ``n_negatives`` shared sampled items (the other positions' targets are not
    used: a batch holds thousands of positions), or, for ``loss="ce"`` with ``n_negatives=0``, the whole
    catalogue. Session-parallel with ``n_negatives=0`` uses the mini-batch's targets alone (the 2016 paper's
    sampling).

    Losses (softmax applied once, to raw scores): ``ce`` (cross-entropy over the candidates, with logQ
    correction ``logq`` > 0: scores minus ``logq · log`` of each candidate's sampling weight, popularity for
    in-batch targets and popularity^alpha for sampled items, as the official code), ``bpr_max`` (with
    ``bpreg`` score regularisation; scores pass through ELU(``elu_alpha``) first when ``elu_alpha`` > 0, the
    official final activation) and ``top1_max``. The loss of a step is its mean over the full ``batch_size``
    slots (the official sum / batch_size). Optimiser: ``adagrad_m`` (the official Adagrad with momentum,
    sparse row updates for the item tables) or ``adam``.
    Scoring reads the last ``max_len`` events of a history (a session longer than that is truncated).
    """

    name = "gru4rec"
    LOSSES = ("ce", "bpr_max", "top1_max")
    DEFAULTS = {"dim": 100, "n_negatives": 2048, "lr": 0.05, "batch_size": 64, "epochs": 10,
                "patience": 3}
    # after the official code's parameter spaces (hidasib/GRU4Rec): one loss per search, 2048 negatives
    SEARCH = {"lr": span(0.01, 0.25, step=0.005), "dim": choice(64, 100, 128, 256, 512),
              "batch_size": span(32, 256, step=16), "embed_dropout": span(0.0, 0.5, step=0.05),
              "hidden_dropout": span(0.0, 0.7, step=0.05), "momentum": span(0.0, 0.9, step=0.05),
              "sample_alpha": span(0.0, 1.0, step=0.1), "bpreg": span(0.0, 2.0, step=0.05, when={"loss": "bpr_max"}),
              "elu_alpha": span(0.0, 3.0, step=0.1, when={"loss": "bpr_max"}),
              "logq": choice(0.0, 1.0, when={"loss": "ce"}), "max_len": None, "n_negatives": None}

    n_blocks: int = option(1, "GRU layers", check=between(1))
    batching: str = option("session", "session-parallel mini-batches, or padded windows of each user",
                           choices=BATCHINGS)
    input_dim: int | None = option(None, "size of a separate input item table (None: the output table, the "
                                         "official 'constrained embedding')", check=between(1, none_ok=True))
    embed_dropout: float = option(0.0, "dropout on the input embeddings", check=between(0, 1, high_open=True))
    hidden_dropout: float = option(0.0, "dropout on each GRU layer's output", check=between(0, 1, high_open=True))
    sample_alpha: float = option(0.5, "negatives drawn ∝ popularity^alpha (0 uniform, 1 popularity)",
                                 check=between(0))
    logq: float = option(0.0, "logQ correction strength of the ce loss (0: off)", check=between(0))
    bpreg: float = option(1.0, "score regularisation of bpr_max", check=between(0))
    elu_alpha: float = option(0.5, "ELU alpha of the final activation under bpr_max (0: none)", check=between(0))
    optimizer: str = option("adagrad_m", "the official Adagrad with momentum, or Adam", choices=OPTIMIZERS,
                            group="training")
    momentum: float = option(0.0, "momentum of adagrad_m", check=between(0), group="training")

    def validate(self) -> None:
        super().validate()
        if self.n_negatives == 0 and self.loss != "ce" and self.batching == "padded":
            raise ConfigError("n_negatives=0 with batching='padded' is the full softmax: it needs loss='ce'")

    def check_data_parallel(self) -> None:
        super().check_data_parallel()
        if self.batching == "session":
            raise ConfigError("session-parallel batches carry each slot's state from step to step and cannot be "
                              "split over processes: use --batching padded, or --devices 1")

    def _build_net(self, n_items: int) -> GRU4RecNet:
        sparse = self.optimizer == "adagrad_m"  # row-wise updates of the item tables, as the official code
        return GRU4RecNet(n_items, self.dim, self.n_blocks, self.input_dim, self.embed_dropout,
                          self.hidden_dropout, sparse)

    def _optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, self.net_.parameters(), self.lr, self.momentum)

    def _batcher(self, train: Interactions):
        counts = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items))
        self._sampler = samplers.PopularitySampler(counts, self.sample_alpha) if self.n_negatives else None
        self._popularity = counts.float().clamp(min=1).to(self.device)  # logQ weights of in-batch targets
        self._state = None  # the session slots' hidden states, carried from step to step
        if self.batching == "session":
            return SessionParallelBatcher(train, self.batch_size)
        return NextItemBatcher(train, self.max_len, self.batch_size)

    def _scored_candidates(self, batch) -> int:
        in_batch = batch.n_sequences if isinstance(batch, SessionBatch) else 1  # the other slots' targets
        if self.n_negatives == 0 and in_batch == 1:
            return self.net_.n_items
        return in_batch + self.n_negatives

    def _batch_loss(self, batch, generator: torch.Generator) -> torch.Tensor:
        if isinstance(batch, SessionBatch):
            return self._session_loss(batch, generator)
        return self._padded_loss(batch, generator)

    def _candidate_loss(self, pos: torch.Tensor, neg: torch.Tensor, ignore: torch.Tensor,
                        pos_weight: torch.Tensor | None, neg_weight: torch.Tensor | None) -> torch.Tensor:
        """The configured loss of positives [M] against candidate scores [M, C] (``ignore`` [M, C]); the
        sampling weights of the positives [M] and candidates [1, C], when given (:meth:`_weights`), correct
        the scores by logQ."""
        if pos_weight is not None:  # subtract the log of each candidate's sampling weight
            pos = pos - self.logq * torch.log(pos_weight)
            neg = neg - self.logq * torch.log(neg_weight)
        if self.loss == "bpr_max" and self.elu_alpha > 0:  # the official final activation
            pos, neg = F.elu(pos, self.elu_alpha), F.elu(neg, self.elu_alpha)
        regularisation = (self.bpreg,) if self.loss == "bpr_max" else ()
        return losses.LOSSES["sampled_ce" if self.loss == "ce" else self.loss].fn(pos, neg, ignore, *regularisation)

    def _weights(self, items: torch.Tensor, alpha: float = 1.0) -> torch.Tensor | None:
        """Sampling weights of ``items`` for the logQ correction of ``ce``: popularity (in-batch targets) or
        popularity^alpha (sampled items); None when the correction is off."""
        if self.loss != "ce" or self.logq <= 0:
            return None
        return self._popularity[items - FIRST_ITEM] ** alpha

    def _session_loss(self, batch: SessionBatch, generator: torch.Generator) -> torch.Tensor:
        hidden = self._advance(batch)
        targets = batch.targets.to(self.device)
        m = len(targets)
        extra = None
        if self._sampler is not None:  # negatives drawn before any score is computed
            extra = self._sampler.sample(self.n_negatives, generator).to(self.device)
        columns = targets if extra is None else torch.cat([targets, extra])
        weights, bias = self.net_.candidate_embeddings(columns)
        scores = torch.addmm(bias, hidden, weights.T)  # [M, M + K]
        diagonal = torch.arange(m, device=self.device)
        ignore = torch.zeros(scores.shape, dtype=torch.bool, device=self.device)
        ignore[diagonal, diagonal] = True  # row i's positive is column i
        pos_weight = self._weights(targets)
        neg_weight = None
        if pos_weight is not None:
            neg_weight = pos_weight if extra is None else torch.cat([pos_weight, self._weights(extra, self.sample_alpha)])
            neg_weight = neg_weight[None, :]
        loss = self._candidate_loss(scores[diagonal, diagonal], scores, ignore, pos_weight, neg_weight)
        return loss * (m / self.batch_size)

    def _advance(self, batch: SessionBatch) -> torch.Tensor:
        """One session-parallel step: the slots' outputs [b, H] from the carried states (none at an epoch's
        first step). Retired slots are dropped, and a slot whose session starts here gets an exact zero
        state; gradients stop at the step boundary (as the official code)."""
        h = None if batch.first else self._state
        if h is None:
            h = self.net_.initial_state(len(batch.positions), self.device)
        if batch.keep is not None:  # slots retired: no session left to fill them
            h = [layer[batch.keep.to(self.device)] for layer in h]
        reset = batch.reset.to(self.device)[:, None]
        h = [layer.detach().masked_fill(reset, 0.0) for layer in h]
        hidden, self._state = self.net_.step(batch.inputs.to(self.device), h)
        return hidden

    def _padded_loss(self, batch: NextItemBatch, generator: torch.Generator) -> torch.Tensor:
        inputs = batch.inputs.to(self.device)
        mask = batch.mask.to(self.device)
        hidden = self.net_.encode(inputs)[mask]  # [M, H]
        targets = batch.targets.to(self.device)[mask]
        if self._sampler is None:  # full softmax over the catalogue
            weights, bias = self.net_.output_embeddings()
            return losses.ce(hidden, weights, targets - FIRST_ITEM, bias=bias)
        extra = self._sampler.sample(self.n_negatives, generator).to(self.device)
        pos, neg, clash = shared_scores(self.net_, hidden, targets, extra)
        neg_weight = self._weights(extra, self.sample_alpha)
        return self._candidate_loss(pos, neg, clash, self._weights(targets),
                                    None if neg_weight is None else neg_weight[None, :])


class GRU4RecPlus(GRU4Rec):
    """"GRU4Rec+": GRU4Rec with BPR-max and 2048 popularity-sampled negatives (Hidasi & Karatzoglou, 2018).

    Defaults are the official best Diginetica BPR-max parameters
    (``paramfiles/diginetica_bprmax_shared_best.py``) except ``dim`` (512 there; 100 here, the official
    class default, to keep CPU training short: pass ``dim=512`` for the tuned size)."""

    name = "gru4rec+"
    DEFAULTS = {"loss": "bpr_max", "embed_dropout": 0.5, "hidden_dropout": 0.3, "sample_alpha": 0.3,
                "bpreg": 0.9, "elu_alpha": 1.0, "momentum": 0.15, "batch_size": 128}
