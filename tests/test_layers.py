"""Shared network pieces: the fast dropout mask, and the network protocol every network implements."""

import pytest
import torch

from seqrec.ids import PAD
from seqrec.nn import BERT4RecNet, GRU4RecNet, SASRecNet
from seqrec.nn.layers import dropout, keep_mask

N_ITEMS = 29


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_keep_mask_drops_with_probability_p_in_every_lane(p):
    torch.manual_seed(0)
    keep = keep_mask((1001, 257), p)  # odd sizes: the last 64-bit word is cut
    assert keep.shape == (1001, 257) and keep.dtype == torch.bool
    dropped = 1.0 - keep.float()
    n = keep.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # 5 standard deviations
    assert abs(float(dropped.mean()) - p) < tolerance
    # each of the four 16-bit lanes of a random word (the top one has no sign bit) drops at the same rate
    for lane in range(4):
        share = dropped.flatten()[lane::4]
        assert abs(float(share.mean()) - p) < 5 * (p * (1 - p) / len(share)) ** 0.5, lane
    # neighbours are independent: a dropped entry's right neighbour is dropped at rate p too
    pairs = dropped.flatten()[:-1] * dropped.flatten()[1:]
    assert abs(float(pairs.sum() / dropped.flatten()[:-1].sum()) - p) < 10 * tolerance


def test_keep_mask_follows_the_global_seed_and_dropout_scales_the_kept():
    torch.manual_seed(3)
    first = keep_mask((50, 7), 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((50, 7), 0.3))
    assert not torch.equal(first, keep_mask((50, 7), 0.3))
    assert keep_mask((0, 4), 0.3).shape == (0, 4)
    x = (torch.rand(200, 30) + 1.0).requires_grad_()
    out = dropout(x, 0.25)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)
    out.sum().backward()  # the gradient passes the kept entries, scaled, and none of the dropped
    assert torch.allclose(x.grad, kept.float() / 0.75)


NETS = {"sasrec": lambda: SASRecNet(N_ITEMS, 8, 16, 2, 2, 0.0),
        "bert4rec": lambda: BERT4RecNet(N_ITEMS, 8, 16, 2, 2, 0.0),
        "bert4rec-dot": lambda: BERT4RecNet(N_ITEMS, 8, 16, 2, 2, 0.0, head="dot"),
        "gru4rec": lambda: GRU4RecNet(N_ITEMS, 16, 2, input_dim=8)}


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_network_follows_the_protocol(name):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    ids = torch.tensor([[PAD, PAD, 3, 4, 5], [1, 2, 3, 4, 5]])
    hidden = net.encode(ids)
    assert hidden.shape == (2, 5, 16)
    weights, bias = net.output_embeddings()
    assert weights.shape == (N_ITEMS, 16) and (bias is None or bias.shape == (N_ITEMS,))
    scores = net.score(hidden[:, -1])
    expected = net.head(hidden[:, -1]) @ weights.T + (0 if bias is None else bias)
    assert scores.shape == (2, N_ITEMS) and torch.allclose(scores, expected, atol=1e-5)
    items = torch.tensor([1, 7, N_ITEMS])
    w, b = net.candidate_embeddings(items)  # the candidates' rows are the output rows of those items
    assert torch.equal(w, weights[items - 1]) and (b is None or torch.equal(b, bias[items - 1]))
    assert net.flops(ids) > 0 and net.head_flops(10, N_ITEMS) >= 2 * 10 * N_ITEMS * 16
    short = net.encode(ids[:1, 2:])  # real positions do not depend on left padding
    assert torch.allclose(short, hidden[:1, 2:], atol=1e-5)
