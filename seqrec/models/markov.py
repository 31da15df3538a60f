"""Markov-chain baselines trained on consecutive pairs with S-BPR: FMC, FPMC and TransRec. Network:
:class:`seqrec.nn.factorization.TransitionNet`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seqrec.data.batching import PairBatch, PairBatcher
from seqrec.data.interactions import Interactions
from seqrec.data.sequences import Histories
from seqrec.data.splits import EvalSet
from seqrec.models.base import UserRecommender
from seqrec.nn.factorization import TransitionNet
from seqrec.options import between, choice, option, span
from seqrec.train import Callback


class _KeepInBall(Callback):
    """TransRec's constraint: after every optimiser step, item points are renormalised into the unit ball."""

    def __init__(self, model: "TransitionRecommender"):
        self.model = model

    def on_step(self, step: int) -> None:
        self.model.net_.project()


class TransitionRecommender(UserRecommender):
    """A model of the transition from a user's last item ``l`` to the next ``i``, trained with S-BPR
    (Rendle et al. 2010): for every consecutive pair of a user's training sequence, ``-ln σ(x_uli - x_ulj)``
    with ``j`` uniform among the items the user has no event with, plus L2 on the rows each update uses.
    Recommends after any history from its last item (an empty history: the item biases alone, or, for
    TransRec, distances from the translation vector); an unknown user (a new history, or one without
    training events) has a zero user vector, so FPMC scores it by the Markov chain alone and TransRec by
    the global translation.

    Deviations: an item bias ``b_i`` (the TransRec authors' code of all three); Adam in mini-batches of
    shuffled pairs instead of SGD on bootstrap-sampled ones.
    """

    kind = ""  # TransitionNet's kind

    dim: int = option(64, "latent dimensions", check=between(1), search=choice(16, 32, 64, 128))
    reg: float = option(1e-5, "L2 penalty on the rows an update uses, per pair", check=between(0),
                       search=span(1e-7, 1e-2, log=True))
    DEFAULTS = {"batch_size": 1024, "epochs": 100, "patience": 5}

    def fit(self, train, valid: EvalSet | None = None, callbacks: Sequence[Callback] = ()) -> "TransitionRecommender":
        return super().fit(train, valid, [*callbacks, _KeepInBall(self)])

    def _build_net(self, n_items: int) -> TransitionNet:
        return TransitionNet(self.vocab_.n_users, n_items, self.dim, self.kind)

    def _batcher(self, train: Interactions) -> PairBatcher:
        return PairBatcher(train, self.batch_size, 1, consecutive=True)

    def _batch_loss(self, batch: PairBatch, generator: torch.Generator) -> torch.Tensor:
        users = batch.users.to(self.device)
        candidates = torch.cat([batch.items[:, None], batch.negatives], 1).to(self.device)
        queries = self.net_.queries(users, batch.previous.to(self.device))
        scores = self.net_.score_candidates(queries, candidates)
        rows = [*queries.values(), self.net_.bias(candidates)]
        rows += [getattr(self.net_, name)(candidates) for name in ("next", "item", "point") if hasattr(self.net_, name)]
        return F.softplus(scores[:, 1:] - scores[:, :1]).mean() + self._l2(*rows)

    @torch.no_grad()
    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_fitted()
        self.net_.eval()
        last = torch.from_numpy(np.ascontiguousarray(histories.windows(1)[:, 0])).to(self.device)
        queries = self.net_.queries(self._known_users(histories), last)
        return self.net_.score_all(queries, out=out if self.device == "cpu" else None)


class FMC(TransitionRecommender):
    """FMC: the factorized first-order Markov chain ``x_li = <v_i^IL, v_l^LI> + b_i`` (the Markov part of
    FPMC, Rendle et al. 2010), with no user term (see :class:`TransitionRecommender`)."""

    name = "fmc"
    kind = "fmc"


class FPMC(TransitionRecommender):
    """FPMC (Rendle et al., WWW 2010): ``x_uli = <v_u^UI, v_i^IU> + <v_i^IL, v_l^LI> + b_i``, matrix
    factorization plus a factorized Markov chain, with one-item baskets as sequential data has them
    (see :class:`TransitionRecommender`)."""

    name = "fpmc"
    kind = "fpmc"


class TransRec(TransitionRecommender):
    """TransRec (He, Kang & McAuley, RecSys 2017): items are points ``g_i`` in a space where a user is a
    translation ``t + t_u``; ``x_uli = b_i - ||g_l + t + t_u - g_i||`` (Euclidean distance, the paper's
    choice), item points kept in the unit ball (renormalised after every step), personal offsets ``t_u``
    starting at zero (see :class:`TransitionRecommender`)."""

    name = "transrec"
    kind = "transrec"
