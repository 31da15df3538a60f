"""Optimisers the models ask for by name. Adam is PyTorch's; ``adagrad_m`` is GRU4Rec's own.

``AdagradM`` is the official GRU4Rec code's ``IndexedAdagradM`` (Adagrad with momentum): per parameter
``acc += g²``, ``v = momentum · v - lr · g / sqrt(acc + eps)``, ``p += v``. For a *sparse* gradient (an
embedding looked up with ``sparse=True``) only the rows that received gradient are touched, their
accumulator, momentum and value alike: the other rows keep their momentum untouched, exactly as the
official code (a dense Adagrad-with-momentum would keep moving every row by its old momentum).
"""

from __future__ import annotations

import torch

from seqrec.errors import choose

OPTIMIZERS = ("adam", "adagrad_m")
ADAM_BETAS = (0.9, 0.98)  # the SASRec reference's (and BERT4Rec's here); PyTorch's default is (0.9, 0.999)


class AdagradM(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6):
        if lr <= 0:
            raise ValueError(f"invalid learning rate {lr}")
        if momentum < 0:
            raise ValueError(f"invalid momentum {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p)
                    if momentum > 0:
                        state["mom"] = torch.zeros_like(p)
                grad = p.grad
                if grad.is_sparse:
                    # Row updates through index_add_ (no alpha) and index_select only: on CPU these are several
                    # times faster than advanced indexing (acc[rows], acc[rows] = ...) or index_add_ with alpha.
                    grad = grad.coalesce()  # the update is not linear in g: rows must be unique
                    rows, values = grad.indices()[0], grad.values()
                    state["acc"].index_add_(0, rows, values * values)
                    step = values / state["acc"].index_select(0, rows).add_(eps).sqrt_()
                    step.mul_(-lr)  # -lr·g/√(acc+eps)
                    if momentum > 0:
                        old = state["mom"].index_select(0, rows)
                        delta = step.add_(old, alpha=momentum - 1.0)  # new - old momentum
                        state["mom"].index_add_(0, rows, delta)
                        p.index_add_(0, rows, delta.add_(old))  # the new momentum
                    else:
                        p.index_add_(0, rows, step)
                else:
                    state["acc"].addcmul_(grad, grad)
                    denom = state["acc"].add(eps).sqrt_()
                    if momentum > 0:
                        state["mom"].mul_(momentum).addcdiv_(grad, denom, value=-lr)
                        p.add_(state["mom"])
                    else:
                        p.addcdiv_(grad, denom, value=-lr)


class SplitAdam:
    """Adam over the parameters with dense gradients (fused) and PyTorch's ``SparseAdam`` over those with sparse
    ones (an item table looked up with ``sparse=True``): the lazy variant of Adam, which updates a row's
    moments and value only at steps where the row has a gradient. With millions of items and a sampled loss a
    step touches a few thousand rows, and dense Adam would read and write the whole table (and its gradient)
    every step. The same betas and learning rate for both."""

    def __init__(self, dense, sparse, lr: float, betas=ADAM_BETAS):
        self.parts = [torch.optim.Adam(list(dense), lr=lr, betas=betas, fused=True),
                      torch.optim.SparseAdam(list(sparse), lr=lr, betas=betas)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """``adam`` (betas 0.9, 0.98 as the SASRec reference; fused unless a gradient is sparse) or ``adagrad_m``."""
    choose("optimizer", name, OPTIMIZERS)
    params = list(params)
    if name == "adagrad_m":
        return AdagradM(params, lr=lr, momentum=momentum)
    return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, fused=True)
