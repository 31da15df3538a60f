import torch

from seqrec.ids import PAD
from seqrec.nn.sasrec import SASRecNet


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
