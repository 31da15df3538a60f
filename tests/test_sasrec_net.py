import pytest
import torch

from seqrec.ids import PAD
from seqrec.nn.sasrec import SASRecNet, dropout, keep_mask


def net(**kw):
    torch.manual_seed(0)
    params = dict(n_items=30, max_len=8, dim=16, n_heads=2, n_blocks=2, dropout=0.3)
    params.update(kw)
    return SASRecNet(**params).eval()


def test_shapes_and_scores_cover_real_items_only():
    model = net()
    hidden = model(torch.randint(1, 31, (4, 8)))
    assert hidden.shape == (4, 8, 16)
    assert model.score(hidden[:, -1]).shape == (4, 30)  # PAD has no column: it can never be recommended
    assert torch.count_nonzero(model.item_emb.weight[PAD]) == 0


def test_causality_changing_position_j_leaves_earlier_outputs_unchanged():
    model = net()
    x = torch.randint(1, 31, (3, 8))
    y = x.clone()
    y[:, 5] = (x[:, 5] % 30) + 1
    hx, hy = model(x), model(y)
    assert torch.allclose(hx[:, :5], hy[:, :5], atol=1e-6)
    assert not torch.allclose(hx[:, 5:], hy[:, 5:])


def test_padding_invariance_and_trimming():
    model = net()
    items = torch.tensor([[0, 0, 0, 0, 0, 7, 3, 9]])
    more_history = torch.tensor([[0, 0, 0, 0, 4, 7, 3, 9]])
    trimmed = items[:, 5:]
    full_out = model(items)
    assert torch.allclose(full_out[:, 5:], model(trimmed), atol=1e-6)  # positions anchored at the right edge
    assert not torch.allclose(full_out[:, -1], model(more_history)[:, -1])
    # padded slots do not leak into real positions, whatever the padding ids' neighbours
    batch = torch.cat([items, more_history])
    assert torch.allclose(model(batch)[0], full_out[0], atol=1e-6)


def test_dropout_only_in_training():
    model = net()
    x = torch.randint(1, 31, (2, 8))
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


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
