"""GRU4Rec estimator (network: :mod:`seqrec.nn.gru4rec`): session-parallel and padded training."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seqrec import losses, samplers
from seqrec.data.interactions import Interactions
from seqrec.data.sequences import session_parallel
from seqrec.errors import ConfigError, DataError, choose
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.models.base import SequentialRecommender
from seqrec.nn.gru4rec import GRU4RecNet
from seqrec.optim import OPTIMIZERS, make_optimizer

BATCHINGS = ("session", "padded")


def right_align(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [R, L] -> (the same rows right-padded, their lengths [R])."""
    lengths = (x != PAD).sum(1)
    width = x.shape[1]
    index = (torch.arange(width, device=x.device)[None, :] + (width - lengths)[:, None]) % width
    return x.gather(1, index), lengths


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018), after the official PyTorch code.

    Network: :class:`seqrec.nn.gru4rec.GRU4RecNet`. Defaults are the official code's (one layer of 100,
    constrained embedding, cross-entropy, batch 64, 2048 extra negatives with alpha 0.5, Adagrad with
    momentum at lr 0.05, 10 epochs); tuned values per dataset are in its ``paramfiles`` (e.g. Diginetica
    BPR-max: dim 512, batch 128, dropouts 0.5 / 0.3, momentum 0.15, alpha 0.3, bpreg 0.9, elu 1).

    ``batching="session"`` (default): session-parallel mini-batches (:func:`seqrec.data.sequences.session_parallel`):
    each "user" of the training log is a session, sessions run in order of their first timestamp, a slot's
    hidden state is reset exactly when its session ends and the next one starts, gradients are truncated
    after one step (as the official code). Per step, the candidates are the slots' targets plus
    ``n_negatives`` items shared by the mini-batch, drawn ∝ popularity^``sample_alpha`` **before**
    scoring; row i's positive is column i, every other column is a negative (other slots' targets
    included). ``batching="padded"``: every position of the last ``max_len + 1`` events of each user,
    like SASRec (for leave-one-out data); the candidates are each position's target plus the
    ``n_negatives`` shared sampled items (the other positions' targets are not used: a batch holds
    thousands of positions), or, for ``loss="ce"`` with ``n_negatives=0``, the whole catalogue.

    Losses (softmax applied once, to raw scores): ``ce`` (with logQ correction ``logq`` > 0:
    scores minus ``logq · log`` of each candidate's sampling weight, popularity for in-batch targets and
    popularity^alpha for sampled items, as the official code), ``bpr_max`` (with ``bpreg`` score
    regularisation; scores pass through ELU(``elu``) first when ``elu`` > 0, the official final
    activation) and ``top1_max``. The loss of a step is its mean over the full ``batch_size`` slots
    (the official sum / batch_size). Optimiser: ``adagrad_m`` (the official Adagrad with momentum,
    sparse row updates for the item tables) or ``adam``.
    Scoring reads the last ``max_len`` events of a history (a session longer than that is truncated).
    """

    name = "gru4rec"
    LOSSES = losses.SESSION_LOSSES

    def __init__(self, loss: str = "ce", batching: str = "session", dim: int = 100, n_layers: int = 1,
                 embedding: int = 0, dropout_embed: float = 0.0, dropout_hidden: float = 0.0,
                 n_negatives: int = 2048, sample_alpha: float = 0.5, logq: float = 0.0, bpreg: float = 1.0,
                 elu: float = 0.5, optimizer: str = "adagrad_m", lr: float = 0.05, momentum: float = 0.0,
                 batch_size: int = 64, max_len: int = 50, epochs: int = 10, patience: int = 3,
                 time_budget: float | None = None, seed: int = 0,
                 device: str = "cpu", progress: bool = True):
        self.loss, self.batching, self.dim, self.n_layers, self.embedding = loss, batching, dim, n_layers, embedding
        self.dropout_embed, self.dropout_hidden = dropout_embed, dropout_hidden
        self.n_negatives, self.sample_alpha, self.logq, self.bpreg, self.elu = \
            n_negatives, sample_alpha, logq, bpreg, elu
        self.optimizer, self.lr, self.momentum = optimizer, lr, momentum
        self.batch_size, self.max_len = batch_size, max_len
        self.epochs, self.patience, self.time_budget = epochs, patience, time_budget
        self.seed, self.device, self.progress = seed, device, progress

    def _build_net(self, n_items: int) -> GRU4RecNet:
        losses.check_loss(self.loss, self.LOSSES)
        choose("batching", self.batching, BATCHINGS)
        choose("optimizer", self.optimizer, OPTIMIZERS)
        if self.n_negatives == 0 and (self.loss != "ce" or self.batching == "session"):
            raise ConfigError("n_negatives=0 (full softmax) needs loss='ce' and batching='padded'")
        if self.n_negatives < 0:
            raise ConfigError(f"n_negatives must be >= 0, got {self.n_negatives}")
        return GRU4RecNet(n_items, self.dim, self.n_layers, self.embedding, self.dropout_embed, self.dropout_hidden)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, self.net_.parameters(), self.lr, self.momentum)

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        right, lengths = right_align(x)
        outputs = self.net_(right)  # [R, T, H]
        last = outputs[torch.arange(len(x), device=x.device), (lengths - 1).clamp(min=0)]
        last = last * (lengths > 0)[:, None]  # an empty history keeps the zero initial state
        return self.net_.score(last, out=out)

    def _sampled_loss(self, pos: torch.Tensor, neg: torch.Tensor, ignore: torch.Tensor,
                      pos_weight: torch.Tensor | None, neg_weight: torch.Tensor | None) -> torch.Tensor:
        """The configured loss of positives [M] against candidate scores [M, C] (``ignore`` [M, C])."""
        if self.loss == "ce":
            if self.logq > 0:  # logQ correction: subtract the log of each candidate's sampling weight
                pos = pos - self.logq * torch.log(pos_weight)
                neg = neg - self.logq * torch.log(neg_weight)
            return losses.sampled_ce(pos, neg, ignore)
        if self.loss == "bpr_max":
            if self.elu > 0:
                pos, neg = F.elu(pos, self.elu), F.elu(neg, self.elu)
            return losses.bpr_max(pos, neg, ignore, self.bpreg)
        return losses.top1_max(pos, neg, ignore)

    def _training(self, train: Interactions, generator: torch.Generator):
        counts = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items))
        sampler = samplers.PopularitySampler(counts, self.sample_alpha) if self.n_negatives else None
        popularity = counts.float().clamp(min=1).to(self.device)  # logQ weights of in-batch targets
        sample_weight = popularity ** self.sample_alpha
        sparse = self.optimizer == "adagrad_m"  # row-wise updates of the item tables, as the official code
        if self.batching == "session":
            return self._session_training(train, generator, sampler, popularity, sample_weight, sparse)
        return self._padded_training(train, generator, sampler, popularity, sample_weight, sparse)

    def _session_training(self, train, generator, sampler, popularity, sample_weight, sparse):
        lengths = train.lengths
        sessions = np.flatnonzero(lengths >= 2)
        if len(sessions) == 0:
            raise DataError(f"{train.source}: no session has 2 training events; nothing to learn from")
        start_times = np.asarray(train.times)[train.offsets[sessions]]
        order = sessions[np.lexsort((sessions, start_times))]  # by first timestamp, as the official code
        items = torch.from_numpy(train.items)
        net, state = self.net_, {}
        n_steps = int((lengths[sessions] - 1).sum())
        n_batches = -(-n_steps // min(self.batch_size, len(sessions)))  # about: slots retire at the end

        def batches(gen):
            state["h"] = None
            for positions, reset, keep in session_parallel(train.offsets, order, self.batch_size):
                yield len(positions), (torch.from_numpy(positions), torch.from_numpy(reset),
                                       None if keep is None else torch.from_numpy(keep))

        def step_loss(batch) -> torch.Tensor:
            positions = batch[0]
            hidden, state["h"] = self._advance(state["h"], batch, items, sparse)
            targets = items[positions + 1].to(self.device)
            m = len(targets)
            if sampler is not None:  # negatives drawn before any score is computed
                extra = sampler.sample(self.n_negatives, generator).to(self.device)
                columns = torch.cat([targets, extra])
            else:
                columns = targets
            weights, bias = net.candidates(columns, sparse)
            scores = torch.addmm(bias, hidden, weights.T)  # [M, M + K]
            diagonal = torch.arange(m, device=self.device)
            ignore = torch.zeros(scores.shape, dtype=torch.bool, device=self.device)
            ignore[diagonal, diagonal] = True  # row i's positive is column i
            column_weight = None
            if self.loss == "ce" and self.logq > 0:
                column_weight = torch.cat([popularity[targets - FIRST_ITEM],
                                           sample_weight[columns[m:] - FIRST_ITEM]])[None, :]
            loss = self._sampled_loss(scores[diagonal, diagonal], scores, ignore,
                                      None if column_weight is None else column_weight[0, :m], column_weight)
            return loss * (m / self.batch_size)

        return batches, n_batches, step_loss

    def _advance(self, h: list[torch.Tensor] | None, batch, items: torch.Tensor, sparse: bool = False):
        """One session-parallel step: (outputs [b, H], new per-layer states) from the previous states ``h``
        (None at the start of an epoch) and ``batch = (positions, reset, keep)`` of
        :func:`~seqrec.data.sequences.session_parallel`. Retired slots are dropped, and a slot whose session
        starts here gets an exact zero state; gradients stop at the step boundary (as the official code)."""
        positions, reset, keep = batch
        if h is None:
            h = self.net_.initial_state(len(positions), self.device)
        if keep is not None:  # slots retired: no session left to fill them
            h = [layer[keep.to(self.device)] for layer in h]
        reset = reset.to(self.device)[:, None]
        h = [layer.detach().masked_fill(reset, 0.0) for layer in h]
        return self.net_.step(items[positions].to(self.device), h, sparse)

    def _padded_training(self, train, generator, sampler, popularity, sample_weight, sparse):
        all_windows, real = self._user_windows(train, self.max_len + 1, min_events=2)
        batches, n_batches = self._window_batches(all_windows, real)
        net = self.net_

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            right, _ = right_align(window.to(self.device))
            inputs, targets = right[:, :-1], right[:, 1:]
            mask = targets != PAD
            hidden = net(inputs, sparse)[mask]  # [M, H]
            targets = targets[mask]
            if sampler is None:  # full softmax over the catalogue
                return losses.ce(hidden, net.item_weights(), targets - FIRST_ITEM, bias=net.item_bias())
            pos_w, pos_b = net.candidates(targets, sparse)
            pos = (hidden * pos_w).sum(1) + pos_b
            extra = sampler.sample(self.n_negatives, generator).to(self.device)
            neg_w, neg_b = net.candidates(extra, sparse)
            neg = torch.addmm(neg_b, hidden, neg_w.T)  # [M, K]
            clash = extra[None, :] == targets[:, None]
            return self._sampled_loss(pos, neg, clash, popularity[targets - FIRST_ITEM],
                                      sample_weight[extra - FIRST_ITEM][None, :])

        return batches, n_batches, step_loss


class GRU4RecPlus(GRU4Rec):
    """"GRU4Rec+": GRU4Rec with BPR-max and 2048 extra popularity-sampled negatives (Hidasi & Karatzoglou,
    CIKM 2018). Defaults are the official best Diginetica BPR-max parameters
    (``paramfiles/diginetica_bprmax_shared_best.py``) except ``dim`` (512 there; 100 here, the official
    class default, to keep CPU training short: pass ``dim=512`` for the tuned size)."""

    name = "gru4rec+"

    def __init__(self, loss: str = "bpr_max", batching: str = "session", dim: int = 100, n_layers: int = 1,
                 embedding: int = 0, dropout_embed: float = 0.5, dropout_hidden: float = 0.3,
                 n_negatives: int = 2048, sample_alpha: float = 0.3, logq: float = 0.0, bpreg: float = 0.9,
                 elu: float = 1.0, optimizer: str = "adagrad_m", lr: float = 0.05, momentum: float = 0.15,
                 batch_size: int = 128, max_len: int = 50, epochs: int = 10, patience: int = 3,
                 time_budget: float | None = None, seed: int = 0,
                 device: str = "cpu", progress: bool = True):
        super().__init__(loss, batching, dim, n_layers, embedding, dropout_embed, dropout_hidden, n_negatives,
                         sample_alpha, logq, bpreg, elu, optimizer, lr, momentum, batch_size, max_len, epochs,
                         patience, time_budget, seed, device, progress)
