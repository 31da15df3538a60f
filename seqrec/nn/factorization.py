"""Networks of the factorization baselines: a vector per user and per item, scored for a batch of
(user, last item) rows. Unknown users (index -1: no training events, or a new history) get a zero user
vector; the models decide what that means (:mod:`seqrec.models.factorization`).

- :class:`MFNet`: ``x_ui = <p_u, q_i> + b_i`` (BPR-MF, Rendle et al. 2009, with the item bias of the
  TransRec authors' baseline code and implicit).
- :class:`TransitionNet`: ``kind="fmc"`` ``x_li = <v_i^IL, v_l^LI> + b_i`` (factorized first-order Markov
  chain); ``"fpmc"`` adds ``<v_u^UI, v_i^IU>`` (FPMC, Rendle et al. 2010, one-item baskets as in sequential
  data); ``"transrec"`` ``x_uli = b_i - ||g_l + t + t_u - g_i||`` (TransRec, He et al. 2017: items are
  points, a user a translation vector added to the global one).
- :class:`NeuMFNet`: GMF ``p_u ⊙ q_i`` and an MLP tower over ``[p_u; q_i]`` fused by a last linear layer
  (NCF, He et al. 2017); the tower halves its width at each layer (``8d -> 4d -> 2d -> d`` for 3 layers).

Axes: B rows, C candidates, N items, D dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.ids import FIRST_ITEM, PAD

KINDS = ("fmc", "fpmc", "transrec")


def user_rows(table: nn.Embedding, users: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for ``users`` [B], zero where a user is unknown (-1)."""
    known = users >= 0
    return table(users.clamp(min=0)) * known[:, None].to(table.weight.dtype)


def _items(n_items: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(n_items + FIRST_ITEM, dim, padding_idx=PAD)
    nn.init.normal_(table.weight, 0.0, std)
    with torch.no_grad():
        table.weight[PAD].zero_()
    return table


def _users(n_users: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(max(n_users, 1), dim)
    nn.init.normal_(table.weight, 0.0, std)
    return table


class MFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, std: float = 0.1):
        super().__init__()
        self.n_items = n_items
        self.user = _users(n_users, dim, std)
        self.item = _items(n_items, dim, std)
        self.bias = nn.Embedding(n_items + FIRST_ITEM, 1, padding_idx=PAD)
        nn.init.zeros_(self.bias.weight)

    def score_candidates(self, user_vectors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, C] for user vectors [B, D] and candidate ids [B, C]."""
        return torch.einsum("bd,bcd->bc", user_vectors, self.item(candidates)) + self.bias(candidates)[..., 0]

    def score_all(self, user_vectors: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N] scores of every real item."""
        scores = torch.mm(user_vectors, self.item.weight[FIRST_ITEM:].T, out=out)
        return scores.add_(self.bias.weight[FIRST_ITEM:, 0])


class TransitionNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, kind: str, std: float = 0.1):
        super().__init__()
        self.n_items, self.kind = n_items, kind
        self.bias = nn.Embedding(n_items + FIRST_ITEM, 1, padding_idx=PAD)
        nn.init.zeros_(self.bias.weight)
        if kind == "transrec":
            self.point = _items(n_items, dim, std)  # g: items in a shared space, kept in the unit ball
            self.translation = nn.Parameter(torch.randn(dim) * std)  # t: the global translation
            self.user = _users(n_users, dim, 0.0)  # t_u: personal offsets, zero at the start
        else:
            self.next = _items(n_items, dim, std)  # v^IL: the item as a next item
            self.last = _items(n_items, dim, std)  # v^LI: the item as the last item
            if kind == "fpmc":
                self.user = _users(n_users, dim, std)  # v^UI
                self.item = _items(n_items, dim, std)  # v^IU

    def queries(self, users: torch.Tensor, last: torch.Tensor) -> dict:
        """What a row contributes: (users [B], last items [B], PAD for an empty history)."""
        if self.kind == "transrec":
            return {"point": self.point(last) + self.translation + user_rows(self.user, users)}
        out = {"last": self.last(last)}
        if self.kind == "fpmc":
            out["user"] = user_rows(self.user, users)
        return out

    def score_candidates(self, q: dict, candidates: torch.Tensor) -> torch.Tensor:
        bias = self.bias(candidates)[..., 0]
        if self.kind == "transrec":
            return bias - _distance(q["point"][:, None, :] - self.point(candidates))
        scores = bias + torch.einsum("bd,bcd->bc", q["last"], self.next(candidates))
        if self.kind == "fpmc":
            scores = scores + torch.einsum("bd,bcd->bc", q["user"], self.item(candidates))
        return scores

    def score_all(self, q: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        bias = self.bias.weight[FIRST_ITEM:, 0]
        if self.kind == "transrec":  # ||a - g||^2 = |a|^2 - 2 a.g + |g|^2, by one product
            points = self.point.weight[FIRST_ITEM:]
            squared = torch.mm(q["point"], points.T, out=out).mul_(-2)
            squared.add_((q["point"] ** 2).sum(1, keepdim=True)).add_((points ** 2).sum(1))
            return squared.clamp_(min=0).add_(1e-12).sqrt_().neg_().add_(bias)
        scores = torch.mm(q["last"], self.next.weight[FIRST_ITEM:].T, out=out)
        if self.kind == "fpmc":
            scores.addmm_(q["user"], self.item.weight[FIRST_ITEM:].T)
        return scores.add_(bias)

    @torch.no_grad()
    def project(self) -> None:
        """TransRec keeps every item point in the unit ball (renormalised after each step, as the paper)."""
        if self.kind == "transrec":
            norms = self.point.weight.norm(dim=1, keepdim=True).clamp_(min=1.0)
            self.point.weight.div_(norms)


def _distance(diff: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis, with a gradient at 0."""
    return ((diff ** 2).sum(-1) + 1e-12).sqrt()


class NeuMFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, dropout: float = 0.0, std: float = 0.01):
        super().__init__()
        self.n_items = n_items
        width = dim * 2 ** n_layers  # the tower's input: [p_u; q_i], each half of it
        self.gmf_user, self.gmf_item = _users(n_users, dim, std), _items(n_items, dim, std)
        self.mlp_user, self.mlp_item = _users(n_users, width // 2, std), _items(n_items, width // 2, std)
        self.tower = nn.ModuleList(nn.Linear(width >> k, width >> (k + 1)) for k in range(n_layers))
        self.out = nn.Linear(2 * dim, 1)
        self.dropout = dropout
        for layer in self.tower:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.kaiming_uniform_(self.out.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.out.bias)

    def users(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return user_rows(self.gmf_user, users), user_rows(self.mlp_user, users)

    def _first(self, mlp_user: torch.Tensor, mlp_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first tower layer split into its user and item halves (a linear map of a concatenation)."""
        first = self.tower[0]
        half = mlp_user.shape[-1]
        return F.linear(mlp_user, first.weight[:, :half], first.bias), F.linear(mlp_items, first.weight[:, half:])

    def _fuse(self, gmf: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.relu(hidden), self.dropout, self.training)
        for layer in self.tower[1:]:
            hidden = F.dropout(F.relu(layer(hidden)), self.dropout, self.training)
        return self.out(torch.cat([gmf, hidden], -1))[..., 0]

    def score_candidates(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, C] logits for users [B] and candidate ids [B, C]."""
        gmf_user, mlp_user = self.users(users)
        user_part, item_part = self._first(mlp_user, self.mlp_item(candidates))
        return self._fuse(gmf_user[:, None, :] * self.gmf_item(candidates), user_part[:, None, :] + item_part)

    def score_all(self, users: torch.Tensor, out: torch.Tensor | None = None, chunk: int = 1 << 18) -> torch.Tensor:
        """[B, N] logits of every real item (as :meth:`score_candidates`, evaluation mode). The output layer is
        split by its input halves: the GMF half is one matrix product, and the tower runs in row blocks of at
        most ``chunk`` (row, item) pairs, in place."""
        gmf_user, mlp_user = self.users(users)
        user_part, item_part = self._first(mlp_user, self.mlp_item.weight[FIRST_ITEM:])
        dim = gmf_user.shape[1]
        w_gmf, w_tower = self.out.weight[0, :dim], self.out.weight[0, dim:]
        out = torch.mm(gmf_user * w_gmf, self.gmf_item.weight[FIRST_ITEM:].T, out=out).add_(self.out.bias)
        step = max(1, chunk // max(self.n_items, 1))
        for s in range(0, len(users), step):
            rows = slice(s, s + step)
            hidden = torch.add(user_part[rows, None, :], item_part).relu_()
            for layer in self.tower[1:]:
                hidden = layer(hidden).relu_()
            out[rows] += hidden @ w_tower
        return out
