"""Training losses as pure functions of scores (torch only).

Shapes: M scored positions, N items, K negatives, D hidden size.

- :func:`bce`        one sampled negative per position (SASRec, Kang & McAuley 2018).
- :func:`ce`         full softmax cross-entropy over the catalogue ("SASRec+", Klenitskiy & Vasilev,
                     "Turning Dross Into Gold Loss", RecSys 2023). Computed from hidden states and the
                     item table in item chunks, fused with its backward pass, so the [M, N] logits are
                     never materialised: the same value and gradients as ``F.cross_entropy(h @ Wᵀ, t)``
                     at a fraction of the memory traffic.
- :func:`sampled_ce` cross-entropy over the positive and K sampled negatives (same paper); with
                     GRU4Rec's logQ correction when the caller subtracts ``logq · log q(item)`` from the
                     scores first.
- :func:`gbce`       generalised BCE over the positive and K sampled negatives (Petrov & Macdonald, gSASRec,
                     RecSys 2023): the positive's log-likelihood raised to the power β, which undoes the
                     overconfidence that negative sampling teaches; ``t`` = 0 is plain BCE, ``t`` = 1 fully calibrated.
- :func:`bpr_max`    BPR-max with score regularisation (Hidasi & Karatzoglou, "Recurrent Neural Networks
                     with Top-k Gains", CIKM 2018, eq. 9; the official GRU4Rec code).
- :func:`top1_max`   TOP1-max (same paper, eq. 8).

Each sampled loss takes the positive's score [M], the negatives' scores [M, K] and an optional mask [M, K]
of negatives to ignore (a sampled copy of the positive, or GRU4Rec's own target column); each applies its
softmax exactly once, to raw scores. A loss that needs more than scores names it in ``Loss.keywords``
(gBCE: ``sampling_rate``, negatives per position over the catalogue size - 1, and ``t``); the caller passes
those as keyword arguments.

:data:`LOSSES` is the registry: name -> :class:`Loss` (the function and which negatives it needs:
``"catalogue"`` every item, ``"one"`` one sampled negative per position, ``"sampled"`` a set of sampled
candidates). Models look losses up there with :func:`get`, never by if-chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqrec.errors import choose

_CHUNK_ELEMENTS = 1 << 19  # logits per chunk on a CPU (2 MiB in fp32, the L2 size here): keeps each chunk in cache
# on a GPU each chunk costs a handful of kernel launches, and a few hundred chunks per step would leave the
# device idle between them: there a chunk may hold 2^27 logits (512 MiB in fp32), one or two per step
_CHUNK_ELEMENTS_GPU = 1 << 27


def bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, positive vs one negative per position: mean of -log σ(p) - log(1 - σ(n))."""
    return (F.softplus(-pos_logits) + F.softplus(neg_logits)).mean()


def sampled_ce(pos_logits: torch.Tensor, neg_logits: torch.Tensor,
               neg_is_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy over [positive, K negatives]: pos [M], neg [M, K].

    ``neg_is_pos`` [M, K] marks negatives that equal the position's positive; they are removed from
    the softmax (a sampled copy of the target is not a negative).
    """
    if neg_is_pos is not None:
        neg_logits = neg_logits.masked_fill(neg_is_pos, float("-inf"))
    logits = torch.cat([pos_logits[:, None], neg_logits], dim=1)  # [M, 1 + K]
    return (torch.logsumexp(logits, dim=1) - pos_logits).mean()


def gbce_beta(sampling_rate: float, t: float) -> float:
    """gSASRec's β = α (t (1 - 1/α) + 1/α) for sampling rate α = K / (N - 1) and calibration t (eq. 12)."""
    alpha = min(max(sampling_rate, 1e-12), 1.0)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(pos_logits: torch.Tensor, neg_logits: torch.Tensor, neg_is_pos: torch.Tensor | None = None, *,
         sampling_rate: float, t: float = 0.75) -> torch.Tensor:
    """Generalised binary cross-entropy (gSASRec): the mean over every scored element (positives and
    non-ignored negatives) of ``-β log σ(p)`` for a positive and ``-log(1 - σ(n))`` for a negative, β from
    :func:`gbce_beta`. Equal to the reference's BCE on the transformed positive logit
    ``log(1 / (σ(p)^-β - 1))``, computed without its clipping (``β softplus(-p)`` is exact and stable)."""
    beta = gbce_beta(sampling_rate, t)
    negative = F.softplus(neg_logits)
    n_elements = neg_logits.numel() + pos_logits.numel()
    if neg_is_pos is not None:
        negative = negative.masked_fill(neg_is_pos, 0.0)
        n_elements -= int(neg_is_pos.sum())
    return (beta * F.softplus(-pos_logits).sum() + negative.sum()) / max(n_elements, 1)


def bpr_max(pos_logits: torch.Tensor, neg_logits: torch.Tensor, neg_is_pos: torch.Tensor | None = None,
            reg: float = 1.0) -> torch.Tensor:
    """BPR-max: mean over positions of ``-log Σ_j s_j σ(r_i - r_j) + reg · Σ_j s_j r_j²``, where
    ``s = softmax`` of the negatives' scores r_j (the ignored ones excluded) and r_i the positive's."""
    weights = _negative_softmax(neg_logits, neg_is_pos)
    gain = (weights * torch.sigmoid(pos_logits[:, None] - neg_logits)).sum(1)
    ranked = -torch.log(gain + 1e-24).masked_fill(weights.sum(1) == 0, 0.0)  # a row without negatives: 0
    return (ranked + reg * (weights * neg_logits.square()).sum(1)).mean()


def top1_max(pos_logits: torch.Tensor, neg_logits: torch.Tensor,
             neg_is_pos: torch.Tensor | None = None) -> torch.Tensor:
    """TOP1-max: mean over positions of ``Σ_j s_j (σ(r_j - r_i) + σ(r_j²))`` (s as in :func:`bpr_max`)."""
    weights = _negative_softmax(neg_logits, neg_is_pos)
    return (weights * (torch.sigmoid(neg_logits - pos_logits[:, None]) + torch.sigmoid(neg_logits.square()))
            ).sum(1).mean()


def _negative_softmax(neg_logits: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """Softmax of the negatives' scores without the ignored ones; all zero for a row whose negatives are all
    ignored (e.g. a session-parallel step with one slot and no sampled negatives)."""
    if ignore is None:
        return torch.softmax(neg_logits, dim=1)
    empty = ignore.all(1, keepdim=True)
    weights = torch.softmax(neg_logits.masked_fill(ignore & ~empty, float("-inf")), dim=1)
    return weights.masked_fill(empty, 0.0)


def ce(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
       compute_dtype: torch.dtype = torch.float32, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Full softmax cross-entropy of ``hidden @ weight.T (+ bias)`` [M, N] against ``targets`` [M]
    (0-based rows of weight).

    ``compute_dtype=torch.bfloat16`` runs the matrix products in bf16 (accumulating the softmax in fp32).
    ``bias`` [N] is an optional per-item output bias (BERT4Rec's head).
    """
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
        return _FusedCE.apply(hidden, weight, targets, compute_dtype, bias, False)
    return _FusedCE.apply(hidden, weight, targets, compute_dtype, bias, True)


def ce_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy of given logits [M, N]; the reference that :func:`ce` must match."""
    return F.cross_entropy(logits, targets)


class _FusedCE(torch.autograd.Function):
    """Cross-entropy of ``hidden @ weight.T`` computed chunk by chunk over items.

    Forward: log-sum-exp per item chunk. Backward: recompute each chunk's logits, turn them into
    softmax probabilities in place, and accumulate both gradients. One reused [M, C] buffer keeps the
    working set in cache; nothing of size [M, N] is ever allocated.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, compute_dtype, bias, has_bias):
        h = hidden.detach().to(compute_dtype)
        b = bias.detach().float()
        w = weight.detach().to(compute_dtype)
        m = hidden.shape[0]
        chunks = _chunks(m, weight.shape[0], hidden.device)
        buf = torch.empty(m, chunks[0].stop - chunks[0].start, dtype=compute_dtype, device=hidden.device)
        lse_parts = torch.empty(m, len(chunks), dtype=torch.float32, device=hidden.device)
        for j, sl in enumerate(chunks):
            logits = _chunk_logits(h, w, sl, buf)
            if has_bias:
                logits.add_(b[sl])
            lse_parts[:, j] = torch.logsumexp(logits.float() if compute_dtype != torch.float32 else logits, dim=1)
        lse = torch.logsumexp(lse_parts, dim=1)  # [M]
        target_logits = (h.float() * w[targets].float()).sum(-1) + b[targets]
        ctx.save_for_backward(hidden, weight, targets, lse, b)
        ctx.compute_dtype, ctx.has_bias = compute_dtype, has_bias
        return (lse - target_logits).mean()

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse, bias = ctx.saved_tensors
        dtype, has_bias = ctx.compute_dtype, ctx.has_bias
        scale = grad_out / hidden.shape[0]
        h, w = hidden.to(dtype), weight.to(dtype)
        m = hidden.shape[0]
        chunks = _chunks(m, weight.shape[0], hidden.device)
        buf = torch.empty(m, chunks[0].stop - chunks[0].start, dtype=torch.float32, device=hidden.device)
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_w = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if has_bias else None
        neg_lse = -lse[:, None]
        for sl in chunks:
            width = sl.stop - sl.start
            probs = buf[:, :width]
            if dtype == torch.float32:
                torch.mm(h, w[sl].T, out=probs)
            else:
                probs.copy_(h @ w[sl].T)
            if has_bias:
                probs.add_(bias[sl])
            probs.add_(neg_lse).exp_().mul_(scale)  # softmax * dL/dlogits scale, in place
            if has_bias:
                grad_b[sl] = probs.sum(0)
            p = probs if dtype == torch.float32 else probs.to(dtype)
            if dtype == torch.float32:
                grad_h.addmm_(p, w[sl])
            else:
                grad_h.add_(p @ w[sl])
            grad_w[sl] = p.T @ h
        grad_h.sub_(scale * weight[targets])
        grad_w.index_add_(0, targets, -scale * hidden.float())
        if has_bias:
            grad_b.index_add_(0, targets, (-scale).expand(len(targets)).float())
            grad_b = grad_b.to(bias.dtype)
        return grad_h.to(hidden.dtype), grad_w.to(weight.dtype), None, None, grad_b, None


def _chunk_logits(h, w, sl, buf):
    out = buf[:, :sl.stop - sl.start]
    return torch.mm(h, w[sl].T, out=out)


def chunk_size(m: int, n: int, device: torch.device | str = "cpu") -> int:
    """Items per chunk of the fused softmax for ``m`` positions: an [m, chunk] block of logits fits the
    device's budget."""
    budget = _CHUNK_ELEMENTS if torch.device(device).type == "cpu" else _CHUNK_ELEMENTS_GPU
    return min(n, max(128, budget // max(m, 1)))


def _chunks(m: int, n: int, device: torch.device | str = "cpu"):
    """Slices of the ``n`` items, each small enough that an [m, chunk] block of logits fits the budget."""
    size = max(128, chunk_size(m, n, device))
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@dataclass(frozen=True)
class Loss:
    name: str
    negatives: str  # "catalogue" | "one" | "sampled" (see the module docstring)
    fn: Callable[..., torch.Tensor]
    help: str
    keywords: tuple[str, ...] = ()  # what the loss needs beyond scores (see the module docstring)


LOSSES = {loss.name: loss for loss in (
    Loss("ce", "catalogue", ce, "full softmax cross-entropy over the catalogue"),
    Loss("bce", "one", bce, "binary cross-entropy, one uniform negative per position (original SASRec)"),
    Loss("sampled_ce", "sampled", sampled_ce, "softmax cross-entropy over the target and n_negatives sampled items"),
    Loss("gbce", "sampled", gbce, "generalised BCE over n_negatives sampled items, calibrated by gbce_t (gSASRec)",
         ("sampling_rate", "t")),
    Loss("bpr_max", "sampled", bpr_max, "BPR-max with score regularisation over sampled negatives (GRU4Rec)"),
    Loss("top1_max", "sampled", top1_max, "TOP1-max over sampled negatives (GRU4Rec)"),
)}


def sampled_losses() -> tuple[str, ...]:
    """The names of the losses that score ``n_negatives`` sampled items."""
    return tuple(name for name, loss in LOSSES.items() if loss.negatives == "sampled")


def get(name: str, valid=None) -> Loss:
    """The registered loss ``name``; a ConfigError lists the valid names (``valid``, default all)."""
    return LOSSES[choose("loss", name, valid if valid is not None else LOSSES)]
