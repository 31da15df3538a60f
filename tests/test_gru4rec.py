"""GRU4Rec: session-parallel batching, and one test for each flaw Hidasi & Czapp (RecSys 2023) found in
third-party implementations: hidden state not reset at session boundaries, negatives sampled after the
softmax, softmax applied twice, a wrong BPR-max, dropout missing or inverted."""

import math

import numpy as np
import pytest
import torch

import seqrec
from seqrec import losses
from seqrec.data.sequences import session_parallel
from seqrec.ids import PAD
from seqrec.models import right_align
from seqrec.nn.gru4rec import GRU4RecNet
from seqrec.optim import AdagradM
from seqrec.samplers import PopularitySampler

from conftest import cyclic_frame, tiny_gru4rec


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def test_session_parallel_visits_every_pair_once_and_resets_exactly_at_session_starts():
    lengths = np.array([3, 2, 5, 2, 4, 3])
    offsets = _offsets(lengths)
    session_of = np.repeat(np.arange(len(lengths)), lengths)
    seen, slot_session = [], None
    for positions, reset, keep in session_parallel(offsets, np.arange(len(lengths)), batch_size=2):
        if keep is not None:
            slot_session = slot_session[keep]
        current = session_of[positions]
        if slot_session is not None:  # a slot resets exactly when it holds a different session than before
            assert np.array_equal(reset, current != slot_session)
        else:
            assert reset.all()
        assert (session_of[positions + 1] == current).all()  # the target is in the same session
        slot_session = current
        seen.extend(positions.tolist())
    expected = [p for s in range(len(lengths)) for p in range(offsets[s], offsets[s + 1] - 1)]
    assert sorted(seen) == expected


def _net(**kw):
    torch.manual_seed(0)
    return GRU4RecNet(n_items=30, dim=8, **kw).eval()


def _run_slots(model, items, offsets, order, batch_size):
    outputs, h = {}, None
    with torch.no_grad():
        for batch in session_parallel(offsets, order, batch_size):
            hidden, h = model._advance(h, tuple(None if x is None else torch.from_numpy(x) for x in batch), items)
            outputs.update({int(p): hidden[i].clone() for i, p in enumerate(batch[0])})
    return outputs


def test_hidden_state_reset_is_exact_a_session_does_not_depend_on_the_one_before_it():
    model = tiny_gru4rec(n_layers=2)
    model.net_, model.device = _net(n_layers=2), "cpu"
    items = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12, 13, 14])  # sessions A = [5..10], B = [11..14]
    after_a = _run_slots(model, items, np.array([0, 6, 10]), np.array([0, 1]), batch_size=1)  # B follows A
    alone = _run_slots(model, items[6:], np.array([0, 4]), np.array([0]), batch_size=1)  # B from scratch
    for t in range(3):
        assert torch.equal(after_a[6 + t], alone[t])  # bit for bit
    with torch.no_grad():  # without the reset, A's state would leak into B
        leaked = model.net_(items[None, :9])[0, 6:]
        fresh = model.net_(items[None, 6:9])[0]
    assert not torch.allclose(leaked, fresh, atol=1e-4)


def test_step_and_sequence_paths_agree_in_eval_mode():
    net = _net(n_layers=2, dropout_embed=0.5, dropout_hidden=0.5)
    seq = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        whole = net(seq)[0]
        h = net.initial_state(1)
        for t in range(4):
            out, h = net.step(seq[:, t], h)
            assert torch.allclose(out[0], whole[t], atol=1e-6)


def test_right_align_and_scoring_ignore_padding():
    x = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    right, lengths = right_align(x)
    assert right.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]] and lengths.tolist() == [2, 4, 0]
    model = tiny_gru4rec()
    model.net_, model.vocab_ = _net(), object()
    a = model._score_last(torch.tensor([[0, 0, 0, 7, 8]]))
    b = model._score_last(torch.tensor([[7, 8]]))
    assert torch.allclose(a, b, atol=1e-6) and a.shape == (1, 30)
    empty = model._score_last(torch.tensor([[0, 0]]))
    assert torch.allclose(empty, model.net_.item_bias()[None, :])  # zero state: only the item biases


def test_negatives_are_sampled_before_scoring_and_the_catalogue_is_never_scored(monkeypatch):
    log = seqrec.read_interactions(cyclic_frame(n_users=64))
    model = tiny_gru4rec(n_negatives=7, batch_size=16, epochs=1)
    shapes = []
    original = GRU4RecNet.candidates

    def record(self, items, sparse=False):
        shapes.append(tuple(items.shape))
        return original(self, items, sparse)

    def forbidden(*args, **kwargs):
        raise AssertionError("training scored the whole catalogue")

    monkeypatch.setattr(GRU4RecNet, "candidates", record)
    monkeypatch.setattr(GRU4RecNet, "score", forbidden)
    model.fit(log)
    # 64 sessions of equal length fill the 16 slots four times over: every step scores 16 targets + 7 negatives
    assert len(shapes) == 4 * 11 and set(shapes) == {(16 + 7,)}


def test_popularity_sampler_follows_popularity_to_the_alpha():
    counts = torch.tensor([1.0, 4.0, 9.0, 0.0, 16.0])
    sampler = PopularitySampler(counts, alpha=0.5)
    draws = sampler.sample(200_000, torch.Generator().manual_seed(0)) - 1
    freq = torch.bincount(draws, minlength=5).double() / 200_000
    expected = torch.tensor([1, 2, 3, 0, 4]) / 10
    assert torch.allclose(freq, expected.double(), atol=0.005)
    assert freq[3] == 0  # never a negative if never seen


def test_softmax_is_applied_once():
    # a target scored far above 999 negatives: cross-entropy of raw scores is ~0; a second softmax over
    # probabilities would leave it near log(1000) - 1.
    pos, neg = torch.tensor([30.0]), torch.zeros(1, 999)
    assert losses.sampled_ce(pos, neg).item() == pytest.approx(999 * math.exp(-30), abs=1e-9)
    model = tiny_gru4rec(loss="ce")
    assert model._sampled_loss(pos, neg, torch.zeros(1, 999, dtype=torch.bool), None, None).item() < 1e-9
    assert losses.sampled_ce(torch.zeros(3), torch.zeros(3, 9)).item() == pytest.approx(math.log(10))


def _bpr_max_reference(pos, neg, ignore, reg):
    """The paper's eq. (9) written out with numpy, one position at a time."""
    total = 0.0
    for r_i, r, skip in zip(pos, neg, ignore):
        r = r[~skip]
        s = np.exp(r - r.max()) / np.exp(r - r.max()).sum()
        total += -np.log((s / (1 + np.exp(-(r_i - r)))).sum()) + reg * (s * r ** 2).sum()
    return total / len(pos)


def test_bpr_max_matches_the_paper_and_excludes_the_target_from_the_negative_softmax():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=5), rng.normal(size=(5, 12))
    ignore = np.zeros((5, 12), dtype=bool)
    ignore[np.arange(5), np.arange(5)] = True  # in-batch: the row's own target column
    for reg in (0.0, 0.9):
        got = losses.bpr_max(torch.tensor(pos), torch.tensor(neg), torch.tensor(ignore), reg).item()
        assert got == pytest.approx(_bpr_max_reference(pos, neg, ignore, reg), rel=1e-9)
    # BPR-max is not BPR: with one dominant negative it tracks that negative, not the mean
    one_hot = torch.tensor([[10.0, 0.0, 0.0]])
    assert losses.bpr_max(torch.tensor([5.0]), one_hot, reg=0.0).item() == pytest.approx(
        -math.log(torch.sigmoid(torch.tensor(-5.0)).item()), rel=1e-2)


def test_top1_max_closed_form():
    got = losses.top1_max(torch.zeros(2), torch.zeros(2, 4)).item()
    assert got == pytest.approx(1.0)  # softmax weights 1/4 each, sigmoid(0) + sigmoid(0) = 1


def test_dropout_is_present_separate_and_not_inverted():
    net = _net(dropout_embed=0.8, dropout_hidden=0.0).train()
    items = torch.arange(1, 31).repeat(200)
    dropped = net.embed(items)
    zero = (dropped == 0).float().mean().item()
    assert zero == pytest.approx(0.8, abs=0.02)  # p is the drop rate, not the keep rate
    kept = dropped != 0
    assert torch.allclose(dropped[kept], (net.out_emb.weight[items] * 5.0)[kept])  # scaled by 1 / (1 - p)
    net = _net(dropout_embed=0.0, dropout_hidden=0.0).train()
    out, _ = net.step(items, net.initial_state(len(items)))
    assert (out == 0).sum() == 0  # no dropout asked for, none applied
    net = _net(dropout_embed=0.0, dropout_hidden=0.5).train()
    out, state = net.step(items, net.initial_state(len(items)))
    assert (out == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(state[0], out)  # the dropped-out output is the carried state (official code)
    net.eval()
    assert torch.equal(net.embed(items), net.out_emb.weight[items])
    assert (net.step(items, net.initial_state(len(items)))[0] == 0).sum() == 0


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_adagrad_m_sparse_rows_match_the_official_update_and_leave_other_rows_alone(momentum):
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(6, 3))
    opt = AdagradM([table], lr=0.1, momentum=momentum)
    before = table.detach().clone()
    for rows in ([1, 1, 4], [1, 1, 4], [4]):
        opt.zero_grad()
        torch.nn.functional.embedding(torch.tensor(rows), table, sparse=True).sum().backward()
        grad = table.grad.coalesce().values().clone()
        opt.step()
        assert torch.equal(table.grad.coalesce().values(), grad)  # the step leaves the gradient alone
    # row 1 (gradient 2 in steps 1-2, none in step 3: not moved, its momentum kept) and row 4 (gradient 1
    # in every step): acc = k g², v = momentum v - lr g / sqrt(acc + eps), p += v
    for row, grads in ((1, (2.0, 2.0)), (4, (1.0, 1.0, 1.0))):
        acc, v, expected = 0.0, 0.0, before[row].clone()
        for g in grads:
            acc += g * g
            v = momentum * v - 0.1 * g / math.sqrt(acc + 1e-6)
            expected += v
        assert torch.allclose(table[row], expected, atol=1e-6)
    untouched = [0, 2, 3, 5]
    assert torch.equal(table[untouched], before[untouched])


def test_gru4rec_plus_preset_is_bpr_max_with_extra_negatives():
    plus = seqrec.GRU4RecPlus()
    assert plus.loss == "bpr_max" and plus.n_negatives == 2048 and plus.name == "gru4rec+"
    assert seqrec.models.MODELS["gru4rec+"] is seqrec.GRU4RecPlus


def test_gru4rec_rejects_inconsistent_options():
    with pytest.raises(seqrec.ConfigError, match="n_negatives=0"):
        tiny_gru4rec(n_negatives=0).fit(cyclic_frame(n_users=8))
    with pytest.raises(seqrec.ConfigError, match="choose from"):
        tiny_gru4rec(loss="bce").fit(cyclic_frame(n_users=8))
    with pytest.raises(seqrec.ConfigError, match="batching"):
        tiny_gru4rec(batching="random").fit(cyclic_frame(n_users=8))


def test_session_training_with_retiring_slots_and_logq():
    log = seqrec.read_interactions(cyclic_frame(n_users=40, length=5, min_length=2))
    model = tiny_gru4rec(batch_size=16, logq=1.0, epochs=2).fit(log)  # 40 sessions: slots retire at the end
    assert model.train_result_.history[-1].loss > 0
    assert PAD not in model.recommend([[3, 4]], k=5)[0]
