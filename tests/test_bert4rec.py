"""BERT4Rec: bidirectional attention, the head, masking, and inference with an appended [mask]."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqrec.data.batching import cloze_mask, corrupt, user_windows
from seqrec.data.sequences import Histories
from seqrec.ids import PAD, mask_id
from seqrec.nn.bert4rec import BERT4RecNet
from seqrec.nn.sasrec import SASRecNet

from conftest import tiny_bert4rec

N_ITEMS = 30


def net(**kw):
    torch.manual_seed(0)
    params = dict(n_items=N_ITEMS, max_len=8, dim=16, n_heads=2, n_blocks=2, dropout=0.3)
    params.update(kw)
    return BERT4RecNet(**params).eval()


@pytest.mark.parametrize("head", ["paper", "dot"])
def test_shapes_and_scores_cover_real_items_only(head):
    model = net(head=head)
    hidden = model(torch.randint(1, N_ITEMS + 2, (4, 8)))  # may hold the MASK id
    assert hidden.shape == (4, 8, 16)
    scores = model.score(hidden[:, -1])
    assert scores.shape == (4, N_ITEMS)  # no column for PAD or MASK: neither can be recommended
    assert model.item_emb.weight.shape[0] == N_ITEMS + 2
    if head == "paper":  # softmax(GELU(h W + b) Eᵀ + b_o), with the reference's LayerNorm after the GELU
        t = model.transform_norm(F.gelu(model.transform(hidden[:, -1])))
        expected = t @ model.item_emb.weight[1:N_ITEMS + 1].T + model.out_bias
    else:
        expected = hidden[:, -1] @ model.item_emb.weight[1:N_ITEMS + 1].T
    assert torch.allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("norm", ["post", "pre", "rectools"])
def test_bidirectional_a_later_item_changes_earlier_outputs_unlike_sasrec(norm):
    x = torch.randint(1, N_ITEMS + 1, (3, 8))
    y = x.clone()
    y[:, 6] = (x[:, 6] % N_ITEMS) + 1
    bert = net(norm=norm)
    assert not torch.allclose(bert(x)[:, :6], bert(y)[:, :6])
    torch.manual_seed(0)
    sasrec = SASRecNet(N_ITEMS, 8, 16, 2, 2, 0.3).eval()
    assert torch.allclose(sasrec(x)[:, :6], sasrec(y)[:, :6], atol=1e-6)


@pytest.mark.parametrize("norm", ["post", "pre", "rectools"])
def test_outputs_do_not_depend_on_left_padding(norm):
    model = net(norm=norm)
    x = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[PAD, PAD, PAD, 4, 5, 6]])
    assert torch.allclose(model(x), model(padded)[:, 3:], atol=1e-5)


def test_mask_chooses_round_rho_times_length_real_positions_at_least_one():
    window = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 2, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0] * 9 + [7]])
    for seed in range(20):
        chosen = cloze_mask(window, 0.2, 0.0, torch.Generator().manual_seed(seed))
        assert chosen.sum(1).tolist() == [1, 2, 1]  # max(1, round(len * 0.2))
        assert not chosen[window == PAD].any()
    last_only = cloze_mask(window, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert last_only.sum().item() == 3 and last_only[:, -1].all()


def test_masking_is_spread_over_all_positions():
    window = torch.arange(1, 11).repeat(20000, 1)
    share = cloze_mask(window, 0.5, 0.0, torch.Generator().manual_seed(0)).float().mean(0)
    assert torch.allclose(share, torch.full((10,), 0.5), atol=0.015)


def test_inference_appends_mask_and_drops_the_oldest_item_at_max_len():
    model = tiny_bert4rec(max_len=8)
    model.net_, model.vocab_ = net(), object()
    masked = mask_id(N_ITEMS)
    full = torch.arange(1, 9)[None, :]  # 8 items: the oldest must make room for [mask]
    expected = model.net_.score(model.net_.encode(torch.cat([full[:, 1:], torch.tensor([[masked]])], 1))[:, -1])
    assert torch.allclose(model.score(Histories.from_lists([full[0].numpy()])), expected, atol=1e-6)
    expected = model.net_.score(model.net_.encode(torch.tensor([[3, 4, masked]]))[:, -1])
    assert torch.allclose(model.score(Histories.from_lists([np.array([3, 4])])), expected, atol=1e-6)


def test_bad_options_are_refused():
    from seqrec.errors import ConfigError
    from conftest import cyclic_frame

    for bad, match in ((dict(mask_prob=0.0), "mask_prob"), (dict(last_mask_prob=1.5), "last_mask_prob"),
                       (dict(head="mlp"), "head"), (dict(norm="mid"), "norm"), (dict(init="he"), "init"),
                       (dict(weight_decay=-0.1), "weight_decay"), (dict(item_dropout=1.0), "item_dropout"),
                       (dict(sliding_window=2.0), "sliding_window")):
        with pytest.raises(ConfigError, match=match):
            tiny_bert4rec(**bad).fit(cyclic_frame(n_users=8))
    assert np.isfinite(tiny_bert4rec(epochs=1).fit(cyclic_frame(n_users=8)).train_result_.epochs[0].loss)


def test_bert_style_corruption_keeps_targets_and_splits_80_10_10():
    window = torch.arange(1, 11).repeat(5000, 1)
    chosen = torch.ones_like(window, dtype=torch.bool)
    chosen[:, 0] = False
    inputs = corrupt(window, chosen, N_ITEMS, 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(inputs[:, 0], window[:, 0])  # not chosen: untouched
    masked = (inputs[:, 1:] == mask_id(N_ITEMS)).float().mean().item()
    same = (inputs[:, 1:] == window[:, 1:]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01)
    assert same == pytest.approx(0.1 + 0.1 / N_ITEMS, abs=0.01)  # kept, or replaced by itself at random
    assert ((inputs >= 1) & (inputs <= N_ITEMS + 1)).all()
    reference = corrupt(window, chosen, N_ITEMS, 1.0, torch.Generator().manual_seed(0))
    assert (reference[:, 1:] == mask_id(N_ITEMS)).all()  # the reference's mask_prob=1.0: always [mask]


@torch.no_grad()
def test_init_bert_is_truncated_normal_002_and_xavier_is_xavier_normal():
    torch.manual_seed(0)
    bert = BERT4RecNet(n_items=3000, max_len=50, dim=64)
    xavier = BERT4RecNet(n_items=3000, max_len=50, dim=64, init="xavier")
    w = bert.item_emb.weight[1:]
    assert abs(float(w.std()) - 0.02 * 0.88) < 0.002 and float(w.abs().max()) <= 0.04  # std of N(0, .02) cut at 2 std
    rows, cols = xavier.item_emb.weight.shape
    assert abs(float(xavier.item_emb.weight[1:].std()) - (2 / (rows + cols)) ** 0.5) < 0.002
    inner = xavier.layers[0].inner.weight  # [4D, D]
    assert abs(float(inner.std()) - (2 / (64 + 256)) ** 0.5) < 0.005
    assert float(xavier.item_emb.weight[PAD].abs().sum()) == 0.0 and float(xavier.layers[0].inner.bias.abs().sum()) == 0


def test_weight_decay_applies_to_matrices_and_embeddings_not_to_biases_or_layernorm():
    from conftest import cyclic_frame

    model = tiny_bert4rec(epochs=1, weight_decay=0.01).fit(cyclic_frame(n_users=8))
    optimizer = model._optimizer()
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    for name, param in model.net_.named_parameters():
        assert (id(param) in decayed) == (param.dim() == 2), name
    plain = tiny_bert4rec(epochs=1).fit(cyclic_frame(n_users=8))._optimizer()
    assert type(plain) is torch.optim.Adam and plain.defaults["betas"] == (0.9, 0.98)  # no decay: Adam


def test_item_dropout_draws_one_table_per_step_for_input_and_output_and_none_in_evaluation():
    model = net(item_dropout=0.5, dropout=0.0).train()
    x = torch.randint(1, N_ITEMS + 1, (4, 8))
    hidden = model(x)
    table = model.table()
    dropped = table == 0
    assert 0.3 < float(dropped[1:].float().mean()) < 0.7
    assert torch.allclose(table[~dropped], 2 * model.item_emb.weight[~dropped])  # inverted dropout, p 0.5
    assert torch.equal(model.output_embeddings()[0], table[1:N_ITEMS + 1])  # the output uses the input's sample
    reference = net(item_dropout=0.5, dropout=0.0).train()
    reference.item_emb.weight.data.copy_(table.detach())  # the same table without dropout gives the same outputs
    reference.item_dropout = 0.0
    assert torch.allclose(reference(x), hidden, atol=1e-5)
    hidden.sum().backward()  # gradients reach the weights through the sample
    assert model.item_emb.weight.grad is not None
    model.eval()
    assert model.table() is model.item_emb.weight
    assert torch.equal(model(x), model(x))  # no dropout in evaluation


def test_sliding_windows_are_the_reference_generators():
    import pandas as pd
    from seqrec.data.interactions import from_frame

    lengths = {"a": 3, "b": 7, "c": 12, "d": 9}
    frame = pd.DataFrame([(u, f"{u}{t}", t) for u, n in lengths.items() for t in range(n)],
                         columns=["user", "item", "time"])
    train = from_frame(frame, "toy")
    width, step = 5, 2
    per_user = []  # gen_data_fin.py: starts range(n - width, 0, -step) + [0] for a history longer than width
    for u in range(train.n_users):
        seq = train.items[train.offsets[u]:train.offsets[u + 1]].tolist()
        starts = [0] if len(seq) <= width else list(range(len(seq) - width, 0, -step)) + [0]
        per_user.append([[0] * (width - len(seq[s:s + width])) + seq[s:s + width] for s in starts])
    got, real = user_windows(train, width, min_events=1, stride=step)
    assert got.tolist() == [w for windows in per_user for w in windows]
    assert real.tolist() == [width - w.count(0) for windows in per_user for w in windows]
    assert [len(w) for w in per_user] == [1, 2, 5, 3]
    last, real = user_windows(train, width, min_events=1)  # stride 0: the last window only
    assert last.tolist() == [windows[0] for windows in per_user] and real.tolist() == [3, 5, 5, 5]


def test_rectools_layout_has_no_embedding_or_final_layernorm_and_drops_the_residual_stream():
    model = net(norm="rectools")
    x = torch.randint(1, N_ITEMS + 1, (3, 8))
    h = model.item_emb(x) + model.pos_emb(torch.arange(8))  # no LayerNorm on the embeddings
    allowed = torch.ones(3, 1, 1, 8, dtype=torch.bool)
    for layer in model.layers:  # evaluation: x + Attn(LN(x)), then x + FFN(LN(x)); no LayerNorm at the end
        h = h + layer.attn(layer.attn_norm(h), allowed)
        h = h + layer.outer(F.gelu(layer.inner(layer.ffn_norm(h))))
    assert torch.allclose(model(x), h, atol=1e-5)
    layer = model.layers[0]
    assert layer.inner_dropout.p == layer.residual_dropout.p == 0.3
    assert net(norm="pre").layers[0].residual_dropout.p == net(norm="post").layers[0].inner_dropout.p == 0.0
    model.train()
    torch.manual_seed(1)
    a = model(x)
    model.layers[-1].residual_dropout.p = 0.0
    torch.manual_seed(1)
    b = model(x)
    assert (a == 0).float().mean() > 0.25 and (b == 0).float().mean() < 0.05  # the last layer's output is dropped


def test_rectools_configuration_saves_and_loads(tmp_path):
    import seqrec
    from conftest import cyclic_frame

    model = tiny_bert4rec(epochs=2, norm="rectools", head="dot", init="xavier", item_dropout=0.2,
                          mask_token_share=0.8, sliding_window=0.5).fit(cyclic_frame(n_users=16))
    model.save(tmp_path / "run")
    loaded = seqrec.load(tmp_path / "run")
    assert loaded.get_params() == model.get_params()
    a, sa = model.recommend([[1, 2, 3], [7]], k=5)
    b, sb = loaded.recommend([[1, 2, 3], [7]], k=5)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
