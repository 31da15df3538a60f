"""From hidden states to a training loss: the candidate scores each kind of registered loss needs
(:data:`seqrec.losses.LOSSES`), assembled once for every network of the :class:`~seqrec.nn.layers.SequenceNet`
protocol, so any model can train with any loss.

Axes: B batch, T positions, D dim, M scored positions, K sampled negatives.
"""

from __future__ import annotations

import torch

from seqrec import losses, samplers
from seqrec.ids import FIRST_ITEM
from seqrec.nn.layers import SequenceNet


def logits(net: SequenceNet, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores [M] of one item per position: ``hidden`` [M, D] (after the head), ``items`` [M] internal ids."""
    weights, bias = net.candidate_embeddings(items)
    out = (hidden * weights).sum(-1)
    return out if bias is None else out + bias


def per_sequence_scores(net: SequenceNet, hidden: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                        negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positive [M], negatives [M, K], clash [M, K]) for ``hidden`` [M, D] at the ``mask`` [B, T] positions,
    their ``targets`` [M], and ``negatives`` [B, K] shared by the positions of a sequence.

    One [T, D] x [D, K] product per sequence: gathering K embeddings for every position instead ([M, K, D])
    would move several times the memory for the same logits."""
    positive = logits(net, hidden, targets)
    weights, bias = net.candidate_embeddings(negatives)  # [B, K, D], [B, K]
    dense = hidden.new_zeros(mask.shape + (hidden.shape[1],))  # [B, T, D]
    dense[mask] = hidden
    negative = torch.bmm(dense, weights.transpose(1, 2))[mask]  # [M, K]
    rows = mask.nonzero()[:, 0]  # the sequence of each position
    if bias is not None:
        negative = negative + bias[rows]
    return positive, negative, negatives[rows] == targets[:, None]


def shared_scores(net: SequenceNet, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positive [M], negatives [M, K], clash [M, K]) for ``hidden`` [M, D], ``targets`` [M] and ``negatives``
    [K] shared by the whole batch."""
    positive = logits(net, hidden, targets)
    weights, bias = net.candidate_embeddings(negatives)  # [K, D], [K]
    negative = hidden @ weights.T if bias is None else torch.addmm(bias, hidden, weights.T)
    return positive, negative, negatives[None, :] == targets[:, None]


def position_loss(loss: losses.Loss, net: SequenceNet, hidden: torch.Tensor, mask: torch.Tensor,
                  targets: torch.Tensor, exclude: torch.Tensor, n_negatives: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, sampler: samplers.CandidateSampler | None = None,
                  logq: float = 1.0, gbce_t: float = 0.75) -> torch.Tensor:
    """The loss of ``hidden`` [B, T, D] (from ``encode``) at the ``mask`` [B, T] positions against their
    ``targets`` [B, T] (internal ids, on the network's device):

    - ``catalogue`` losses score every item (fused, in ``dtype``);
    - ``one``: one uniform negative per position, never an item of its row of ``exclude`` [B, X] (CPU);
    - ``sampled``: the candidates of ``sampler`` (default: ``n_negatives`` uniform items per sequence, shared
      by its positions; see :class:`~seqrec.samplers.CandidateSampler`); a candidate equal to the position's
      target is left out of that position's loss (kept for the popularity sampler, see there). Where the
      sampler's rates differ between items, every score (the positive's too) is lowered by ``logq`` times the
      log of its item's sampling rate (the logQ correction; 0 turns it off). gBCE's sampling rate is the
      candidates per position over ``N - 1``.
    """
    device = hidden.device
    h = net.head(hidden[mask])  # [M, D]
    t = targets[mask]
    if loss.negatives == "catalogue":
        weights, bias = net.output_embeddings()
        return loss.fn(h, weights, t - FIRST_ITEM, dtype, bias=bias)
    if loss.negatives == "one":
        negatives = samplers.uniform_items(net.n_items, tuple(mask.shape), generator, exclude=exclude)
        return loss.fn(logits(net, h, t), logits(net, h, negatives.to(device)[mask]))
    if sampler is None:
        sampler = samplers.CandidateSampler("uniform", torch.ones(net.n_items), n_negatives)
    negatives = sampler.draw(t, len(mask), generator).to(device)  # [C] shared by the batch, or [B, K]
    if sampler.shared:
        pos, neg, clash = shared_scores(net, h, t, negatives)
    else:
        pos, neg, clash = per_sequence_scores(net, h, mask, t, negatives)
    clash = clash if sampler.drop_hits else None
    rate = sampler.log_rate(negatives, len(t))
    if rate is not None and logq:
        pos = pos - logq * sampler.log_rate(t, len(t))
        neg = neg - logq * (rate[None, :] if sampler.shared else rate[mask.nonzero()[:, 0]])
    context = {"sampling_rate": neg.shape[1] / max(net.n_items - 1, 1), "t": gbce_t}
    return loss.fn(pos, neg, clash, **{k: context[k] for k in loss.keywords})
