"""From hidden states to a loss, for every kind of registered loss, checked against the loss written out
directly on the network's output embeddings (no estimator involved)."""

import pytest
import torch
import torch.nn.functional as F

from seqrec import losses, samplers
from seqrec.models.objectives import per_sequence_scores, position_loss, shared_scores
from seqrec.nn import BERT4RecNet, GRU4RecNet, SASRecNet

N_ITEMS = 40
NETS = {"sasrec": lambda: SASRecNet(N_ITEMS, 6, 8, 1, 1, 0.0),
        "bert4rec-paper-head": lambda: BERT4RecNet(N_ITEMS, 6, 8, 2, 1, 0.0),
        "gru4rec": lambda: GRU4RecNet(N_ITEMS, 8)}


def batch():
    torch.manual_seed(0)
    targets = torch.randint(1, N_ITEMS + 1, (3, 5))
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    return torch.randn(3, 5, 8), mask, targets


def logits_of(net, hidden, items):
    weights, bias = net.output_embeddings()
    out = net.head(hidden) @ weights.T + (0 if bias is None else bias)
    return out[:, items - 1] if items.dim() == 1 else out.gather(1, items - 1)


@pytest.mark.parametrize("name", sorted(NETS))
def test_catalogue_loss_is_plain_cross_entropy_over_every_item(name):
    net = NETS[name]().eval()
    hidden, mask, targets = batch()
    got = position_loss(losses.get("ce"), net, hidden, mask, targets, targets, 0, torch.Generator())
    weights, bias = net.output_embeddings()
    full = net.head(hidden[mask]) @ weights.T + (0 if bias is None else bias)
    assert got.item() == pytest.approx(F.cross_entropy(full, targets[mask] - 1).item(), rel=1e-5)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("loss", ["sampled_ce", "bpr_max", "top1_max"])
def test_sampled_losses_share_k_negatives_per_sequence_and_drop_copies_of_the_target(name, loss):
    net = NETS[name]().eval()
    hidden, mask, targets = batch()
    got = position_loss(losses.get(loss), net, hidden, mask, targets, targets, 7, torch.Generator().manual_seed(3))
    negatives = samplers.uniform_items(N_ITEMS, (3, 7), torch.Generator().manual_seed(3))  # the same draw
    rows = mask.nonzero()[:, 0]
    h = hidden[mask]
    pos = logits_of(net, h, targets[mask][:, None])[:, 0]
    neg = logits_of(net, h, negatives[rows])
    expected = losses.LOSSES[loss].fn(pos, neg, negatives[rows] == targets[mask][:, None])
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_one_negative_loss_never_draws_an_item_of_the_window():
    net = NETS["sasrec"]().eval()
    hidden, mask, targets = batch()
    got = position_loss(losses.get("bce"), net, hidden, mask, targets, targets, 0, torch.Generator().manual_seed(5))
    negatives = samplers.uniform_items(N_ITEMS, (3, 5), torch.Generator().manual_seed(5), exclude=targets)
    assert not (negatives[:, :, None] == targets[:, None, :]).any(-1).any()
    h = hidden[mask]
    pos = logits_of(net, h, targets[mask][:, None])[:, 0]
    neg = logits_of(net, h, negatives[mask][:, None])[:, 0]
    assert got.item() == pytest.approx((F.softplus(-pos) + F.softplus(neg)).mean().item(), rel=1e-5)


def test_per_sequence_and_shared_scores_are_the_dot_products():
    net = NETS["gru4rec"]().eval()
    hidden, mask, targets = batch()
    h, t = hidden[mask], targets[mask]
    negatives = torch.randint(1, N_ITEMS + 1, (3, 4))
    pos, neg, clash = per_sequence_scores(net, h, mask, t, negatives)
    rows = mask.nonzero()[:, 0]
    assert torch.allclose(neg, logits_of(net, h, negatives[rows]), atol=1e-5)
    assert torch.equal(clash, negatives[rows] == t[:, None])
    shared = torch.tensor([1, 2, 3, t[0].item()])
    pos2, neg2, clash2 = shared_scores(net, h, t, shared)
    assert torch.allclose(pos, pos2) and torch.allclose(neg2, logits_of(net, h, shared), atol=1e-5)
    assert clash2[0, 3] and clash2.sum(1)[0] >= 1
