"""From hidden states to a loss, for every kind of registered loss, checked against the loss written out
directly on the network's output embeddings (no estimator involved)."""

import pytest
import torch
import torch.nn.functional as F

from seqrec import losses, samplers
from seqrec.models.objectives import per_sequence_scores, position_loss, shared_scores
from seqrec.nn import BERT4RecNet, GRU4RecNet, SASRecNet
from seqrec.nn.layers import SequenceNet

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


class Logits(SequenceNet):
    """A context-free model: one learned logit per item (hidden state 1, item vector [z_j])."""

    def __init__(self, n_items):
        super().__init__()
        self.n_items = n_items
        self.z = torch.nn.Parameter(torch.zeros(n_items, 1))

    def output_embeddings(self):
        return self.z, None


def learned_distribution(kind: str, logq: float, steps: int = 600, n: int = 30, m: int = 64, k: int = 8):
    """Train the logits of :class:`Logits` with sampled softmax on targets drawn from a known softmax p;
    return KL(p || learned softmax)."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(n, generator=g) * 1.5, 0)
    sampler = samplers.CandidateSampler(kind, (p * 1e5).round(), k, alpha=1.0)  # popularity = target share
    net = Logits(n)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    hidden, mask = torch.ones(m, 1, 1), torch.ones(m, 1, dtype=torch.bool)
    for _ in range(steps):
        targets = torch.multinomial(p, m, replacement=True, generator=g)[:, None] + 1
        loss = position_loss(losses.get("sampled_ce"), net, hidden, mask, targets, targets, k, g,
                             sampler=sampler, logq=logq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    learned = torch.softmax(net.z.detach()[:, 0], 0)
    return float((p * (p / learned).log()).sum())


@pytest.mark.parametrize("kind", ["popularity", "in_batch", "mixed"])
def test_logq_correction_recovers_the_true_distribution_that_biased_negatives_distort(kind):
    corrected, biased = learned_distribution(kind, logq=1.0), learned_distribution(kind, logq=0.0)
    assert corrected < 0.03, (corrected, biased)
    assert biased > 3 * corrected, (corrected, biased)


def test_candidate_samplers_draw_what_they_say_and_their_rates():
    counts = torch.tensor([50.0, 30.0, 15.0, 5.0, 0.0])
    targets = torch.tensor([1, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    in_batch = samplers.CandidateSampler("in_batch", counts, 3)
    assert in_batch.shared and in_batch.draw(targets, 2, g).tolist() == [1, 2, 3]
    p = counts / counts.sum()
    expected = torch.log(1 - (1 - p[:3]) ** 4)
    assert torch.allclose(in_batch.log_rate(torch.tensor([1, 2, 3]), 4), expected.float())
    mixed = samplers.CandidateSampler("mixed", counts, 6)
    drawn = mixed.draw(targets, 2, g)
    assert set(targets.tolist()) <= set(drawn.tolist()) and len(set(drawn.tolist())) == len(drawn)
    rate = torch.log(1 - (1 - p[:3]) ** 4 * (1 - 1 / 5) ** 6)
    assert torch.allclose(mixed.log_rate(torch.tensor([1, 2, 3]), 4), rate.float())
    popularity = samplers.CandidateSampler("popularity", counts, 1000, alpha=0.5)
    draws = popularity.draw(targets, 2, g)
    assert draws.shape == (2, 1000) and (draws != 5).all()  # never an item without training events
    share = torch.bincount(draws.reshape(-1), minlength=6)[1:5].float() / 2000
    assert torch.allclose(share, counts[:4].sqrt() / counts[:4].sqrt().sum(), atol=0.03)
    assert not popularity.drop_hits and in_batch.drop_hits
    assert samplers.CandidateSampler("uniform", counts, 3).log_rate(targets, 4) is None


@pytest.mark.parametrize("kind", ["in_batch", "mixed"])
def test_shared_candidates_score_every_position_against_the_batch_with_the_logq_shift(kind):
    net = NETS["sasrec"]().eval()
    hidden, mask, targets = batch()
    counts = torch.arange(1, N_ITEMS + 1).float()
    sampler = samplers.CandidateSampler(kind, counts, 5)
    got = position_loss(losses.get("sampled_ce"), net, hidden, mask, targets, targets, 5,
                        torch.Generator().manual_seed(1), sampler=sampler, logq=0.5)
    t = targets[mask]
    cand = sampler.draw(t, 3, torch.Generator().manual_seed(1))
    h = hidden[mask]
    pos = logits_of(net, h, t[:, None])[:, 0] - 0.5 * sampler.log_rate(t, len(t))
    neg = logits_of(net, h, cand) - 0.5 * sampler.log_rate(cand, len(t))[None, :]
    expected = losses.sampled_ce(pos, neg, cand[None, :] == t[:, None])
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
