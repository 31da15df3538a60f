"""User-item factorization baselines: BPR-MF and NCF (NeuMF). Networks: :mod:`seqrec.nn.factorization`."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from seqrec.data.batching import PairBatch, PairBatcher
from seqrec.data.interactions import Interactions
from seqrec.data.sequences import Histories
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.models.base import UserRecommender
from seqrec.nn.factorization import MFNet, NeuMFNet
from seqrec.options import between, choice, option, span

log = logging.getLogger(__name__)
FOLD_IN_ITEMS = 50  # the latest items of a new history a BPR-MF user vector is fitted to
FOLD_IN_NEGATIVES = 256  # uniform negatives (shared by the rows of a call) of the fold-in objective


class BPRMF(UserRecommender):
    """BPR-MF (Rendle et al., UAI 2009): matrix factorization ``x_ui = <p_u, q_i> + b_i`` trained with the
    BPR criterion ``-ln σ(x_ui - x_uj)`` over (user, item, negative) triples, the negative uniform among
    the items the user has no event with, and L2 on the rows each update uses.

    A new history (or a user without training events) is folded in: a user vector is fitted to it with the
    item vectors fixed (``fold_in_steps`` Adam steps on the same criterion, over its latest
    ``FOLD_IN_ITEMS`` items against ``FOLD_IN_NEGATIVES`` uniform items outside it, seeded), as implicit's
    ``recalculate_user`` does for ALS; known users use their trained vector.

    Deviations: an item bias (as the TransRec authors' BPR-MF baseline and implicit); Adam in mini-batches
    of shuffled events instead of SGD on bootstrap-sampled triples.
    """

    name = "bprmf"

    dim: int = option(64, "factors", check=between(1), search=choice(32, 64, 128, 256))
    reg: float = option(1e-5, "L2 penalty on the rows an update uses, per event", check=between(0),
                       search=span(1e-7, 1e-2, log=True))
    fold_in_steps: int = option(50, "Adam steps fitting a vector to a new history", check=between(1))
    DEFAULTS = {"batch_size": 1024, "epochs": 100, "patience": 5}

    def _build_net(self, n_items: int) -> MFNet:
        return MFNet(self.vocab_.n_users, n_items, self.dim)

    def _batcher(self, train: Interactions) -> PairBatcher:
        return PairBatcher(train, self.batch_size, 1, consecutive=False)

    def _batch_loss(self, batch: PairBatch, generator: torch.Generator) -> torch.Tensor:
        users = self.net_.user(batch.users.to(self.device))
        candidates = torch.cat([batch.items[:, None], batch.negatives], 1).to(self.device)
        scores = self.net_.score_candidates(users, candidates)
        l2 = self._l2(users, self.net_.item(candidates), self.net_.bias(candidates))
        return F.softplus(scores[:, 1:] - scores[:, :1]).mean() + l2

    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_fitted()
        self.net_.eval()
        users = self._known_users(histories)
        with torch.no_grad():
            vectors = self.net_.user(users.clamp(min=0))
        unknown = torch.nonzero(users < 0).flatten()
        if len(unknown):
            vectors[unknown] = self._fold_in(histories.subset(unknown.cpu().numpy()))
        with torch.no_grad():
            return self.net_.score_all(vectors, out=out if self.device == "cpu" else None)

    def _fold_in(self, histories: Histories) -> torch.Tensor:
        """User vectors [R, D] fitted to each history with the item table fixed (see the class docstring)."""
        windows = torch.from_numpy(histories.windows(FOLD_IN_ITEMS)).to(self.device)
        real = windows != PAD
        generator = torch.Generator().manual_seed(self.seed)
        negatives = torch.randint(FIRST_ITEM, FIRST_ITEM + self.net_.n_items, (FOLD_IN_NEGATIVES,),
                                  generator=generator).to(self.device)
        with torch.no_grad():
            pos_q, pos_b = self.net_.item(windows), self.net_.bias(windows)[..., 0]
            neg_q, neg_b = self.net_.item(negatives), self.net_.bias(negatives)[:, 0]
            # pairs (history item, negative outside the history) of each row
            negative_seen = (windows[:, :, None] == negatives).any(1)  # [R, K]
            pairs = real[:, :, None] & ~negative_seen[:, None, :]
            weight = pairs.float() / pairs.sum((1, 2), keepdim=True).clamp(min=1)
        vectors = torch.zeros(len(windows), self.dim, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam([vectors], lr=0.05)
        with torch.enable_grad():
            for _ in range(self.fold_in_steps):
                pos = torch.einsum("rd,rld->rl", vectors, pos_q) + pos_b
                neg = vectors @ neg_q.T + neg_b
                loss = (F.softplus(neg[:, None, :] - pos[:, :, None]) * weight).sum() \
                    + self.reg * vectors.pow(2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return vectors.detach()


class NCF(UserRecommender):
    """NCF's NeuMF (He et al., WWW 2017): GMF and an MLP over user and item embeddings, fused by a last
    linear layer, trained with the log loss on each observed (user, item) and ``n_negatives`` (the paper's
    4) uniform items the user has no event with. The tower has ``n_layers`` layers halving its width down to
    ``dim`` (the paper's "predictive factors"; its ``[64, 32, 16, 8]`` tower is ``dim=8, n_layers=3``).

    NCF has no notion of history: a row whose user is unknown (a new history, or a user without training
    events) is scored by training popularity, and a warning counts such rows (the labelled fallback).

    Deviation: trained from scratch (the paper also reports NeuMF initialised from pre-trained GMF and MLP).
    """

    name = "ncf"

    dim: int = option(16, "predictive factors (GMF size and the tower's last layer)", check=between(1),
                     search=choice(8, 16, 32, 64))
    n_layers: int = option(3, "MLP tower layers", check=between(1), search=choice(1, 2, 3))
    n_negatives: int = option(4, "negatives per observed event", check=between(1), search=choice(2, 4, 8))
    dropout: float = option(0.0, "dropout in the MLP tower", check=between(0, 1, high_open=True),
                             search=span(0.0, 0.5))
    reg: float = option(0.0, "L2 penalty on the embedding rows an update uses, per event", check=between(0),
                       search=choice(0.0, 1e-6, 1e-5, 1e-4))
    DEFAULTS = {"batch_size": 256, "epochs": 50, "patience": 5}

    def _start_fit(self, train) -> Interactions:
        train = super()._start_fit(train)
        self.popularity_ = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items)).float()
        return train

    def _build_net(self, n_items: int) -> NeuMFNet:
        return NeuMFNet(self.vocab_.n_users, n_items, self.dim, self.n_layers, self.dropout)

    def _batcher(self, train: Interactions) -> PairBatcher:
        return PairBatcher(train, self.batch_size, self.n_negatives, consecutive=False)

    def _batch_loss(self, batch: PairBatch, generator: torch.Generator) -> torch.Tensor:
        users = batch.users.to(self.device)
        candidates = torch.cat([batch.items[:, None], batch.negatives], 1).to(self.device)
        logits = self.net_.score_candidates(users, candidates)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        if self.reg:
            loss = loss + self._l2(*self.net_.users(users), self.net_.gmf_item(candidates),
                                   self.net_.mlp_item(candidates))
        return loss

    @torch.no_grad()
    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_fitted()
        self.net_.eval()
        users = self._known_users(histories)
        scores = self.net_.score_all(users, out=out if self.device == "cpu" else None)
        unknown = users < 0
        if unknown.any():
            log.warning("NCF: %d of %d rows have no known user and are scored by training popularity",
                        int(unknown.sum()), len(users))
            scores[unknown] = self.popularity_.to(scores.device)
        return scores

    @torch.no_grad()
    def score_candidates(self, histories: Histories, candidates: torch.Tensor,
                         out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``candidates`` [R, C] only (the MLP runs on R x C pairs, not on the whole catalogue)."""
        self._check_fitted()
        self.net_.eval()
        users = self._known_users(histories)
        candidates = candidates.to(self.device)
        scores = self.net_.score_candidates(users, candidates)
        unknown = users < 0
        if unknown.any():
            scores[unknown] = self.popularity_.to(self.device)[candidates[unknown] - FIRST_ITEM]
        return scores

    def state(self) -> dict[str, torch.Tensor]:
        return {**super().state(), "popularity": self.popularity_}

    def restore(self, vocab, histories, state, train_result) -> "NCF":
        state = dict(state)
        self.popularity_ = state.pop("popularity")
        return super().restore(vocab, histories, state, train_result)
