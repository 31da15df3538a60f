"""GRU4Rec: session-parallel batching, and one test for each flaw Hidasi & Czapp (RecSys 2023) found in
third-party implementations: hidden state not reset at session boundaries, negatives sampled after the
softmax, softmax applied twice, a wrong BPR-max, dropout missing or inverted."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import seqrec
from seqrec import losses
from seqrec.data.batching import SessionParallelBatcher
from seqrec.data.sequences import Histories, session_parallel
from seqrec.ids import FIRST_ITEM
from seqrec.nn.gru4rec import GRU4RecNet, right_align
from seqrec.optim import AdagradM
from seqrec.samplers import PopularitySampler
from seqrec.train import Callback

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


def _session_outputs(model, log, batch_size):
    """Each training event's output through the model's session-parallel step, keyed by event index."""
    outputs = {}
    with torch.no_grad():
        for batch in SessionParallelBatcher(log, batch_size).epoch():
            hidden = model._advance(batch)
            outputs.update({int(p): hidden[i].clone() for i, p in enumerate(batch.positions)})
    return outputs


def test_hidden_state_reset_is_exact_a_session_does_not_depend_on_the_one_before_it():
    import pandas as pd
    from seqrec.data.interactions import Interactions, from_frame

    model = tiny_gru4rec(n_blocks=2)
    model.net_ = _net(n_blocks=2)
    events = [(0, i, t) for t, i in enumerate(range(5, 11))] + [(1, i, 10 + t) for t, i in enumerate(range(11, 15))]
    both = from_frame(pd.DataFrame(events, columns=["user", "item", "time"]), "ab")  # A = [5..10], then B
    alone = Interactions(both.vocab, np.array([0, 4]), both.items[6:], both.times[6:])  # B only, same ids
    after_a = _session_outputs(model, both, batch_size=1)  # one slot: B follows A in it
    fresh = _session_outputs(model, alone, batch_size=1)
    for t in range(3):
        assert torch.equal(after_a[6 + t], fresh[t])  # bit for bit
    items = torch.from_numpy(both.items)
    with torch.no_grad():  # without the reset, A's state would leak into B
        leaked = model.net_.run(items[None, :9])[0, 6:]
        clean = model.net_.run(items[None, 6:9])[0]
    assert not torch.allclose(leaked, clean, atol=1e-4)


def test_step_and_sequence_paths_agree_in_eval_mode():
    net = _net(n_blocks=2, embed_dropout=0.5, hidden_dropout=0.5)
    seq = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        whole = net.run(seq)[0]
        h = net.initial_state(1)
        for t in range(4):
            out, h = net.step(seq[:, t], h)
            assert torch.allclose(out[0], whole[t], atol=1e-6)


def test_right_align_and_scoring_ignore_padding():
    x = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    right, lengths = right_align(x)
    assert right.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]] and lengths.tolist() == [2, 4, 0]
    net = _net()
    left = net.encode(torch.tensor([[0, 0, 0, 7, 8]]))
    assert torch.allclose(left[0, 3:], net.run(torch.tensor([[7, 8]]))[0], atol=1e-6)
    assert (left[0, :3] == 0).all()
    model = tiny_gru4rec()
    model.net_, model.vocab_ = net, object()
    a = model.score(Histories.from_lists([np.array([7, 8])]))
    empty = model.score(Histories.from_lists([np.array([], dtype=np.int64)]))
    assert a.shape == (1, 30)
    assert torch.allclose(empty, net.output_embeddings()[1][None, :])  # zero state: only the item biases


class NoCatalogueScores(TorchFunctionMode):
    """Fails any matrix product whose result has a dimension of the catalogue's size: scoring every item."""

    PRODUCTS = {torch.mm, torch.addmm, torch.matmul, torch.bmm, torch.einsum, F.linear,
                torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.matmul}

    def __init__(self, n_items):
        super().__init__()
        self.n_items = n_items

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.PRODUCTS and isinstance(out, torch.Tensor) and self.n_items in out.shape:
            raise AssertionError(f"training scored the whole catalogue: {func.__name__} -> {tuple(out.shape)}")
        return out


@pytest.mark.parametrize("batching", ["session", "padded"])
def test_negatives_are_sampled_before_scoring_and_the_catalogue_is_never_scored(batching):
    log = seqrec.read_interactions(cyclic_frame(n_users=64, n_items=53))
    model = tiny_gru4rec(n_negatives=7, batch_size=16, epochs=1, batching=batching)
    with NoCatalogueScores(53):  # the guard sees every product the training path makes, whatever calls it
        model.fit(log)
        with pytest.raises(AssertionError, match="whole catalogue"):  # and it is not vacuous
            model.score(Histories.from_lists([np.array([1, 2])]))
    assert model.train_result_.epochs[0].loss > 0


def test_popularity_sampler_follows_popularity_to_the_alpha():
    counts = torch.tensor([1.0, 4.0, 9.0, 0.0, 16.0])
    sampler = PopularitySampler(counts, alpha=0.5)
    draws = sampler.sample(200_000, torch.Generator().manual_seed(0)) - 1
    freq = torch.bincount(draws, minlength=5).double() / 200_000
    expected = torch.tensor([1, 2, 3, 0, 4]) / 10
    assert torch.allclose(freq, expected.double(), atol=0.005)
    assert freq[3] == 0  # never a negative if never seen


class FirstStep(Callback):
    """Records the network's weights and the batch at the first training step, and that step's loss."""

    def __init__(self, model):
        self.model, self.state, self.batch, self.loss = model, None, None, None

    def on_batch(self, batch):
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in self.model.net_.state_dict().items()}
            self.batch = batch

    def on_loss(self, loss):
        if self.loss is None:
            self.loss = loss.item()


def _reference_loss(name, pos, neg, reg, elu_alpha):
    """The losses of the paper (Hidasi & Karatzoglou 2018, eqs. 8-9) and plain cross-entropy, written out
    here without seqrec.losses; neg [M, C - 1] excludes each row's own target column."""
    if name == "ce":
        return torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1).sub(pos).mean()
    if name == "bpr_max":
        pos, neg = F.elu(pos, elu_alpha), F.elu(neg, elu_alpha)
        s = torch.softmax(neg, 1)
        return (-torch.log((s * torch.sigmoid(pos[:, None] - neg)).sum(1)) + reg * (s * neg ** 2).sum(1)).mean()
    s = torch.softmax(neg, 1)
    return (s * (torch.sigmoid(neg - pos[:, None]) + torch.sigmoid(neg ** 2))).sum(1).mean()


@pytest.mark.parametrize("loss", ["ce", "bpr_max", "top1_max"])
def test_the_session_training_step_computes_the_papers_loss_once(loss):
    """The model's own training path, checked against the loss written out from its scores: a second
    softmax, a positive left among its own negatives (no diagonal mask), a missing bpreg or ELU each change
    the value."""
    log = seqrec.read_interactions(cyclic_frame(n_users=64))
    model = tiny_gru4rec(loss=loss, n_negatives=9, batch_size=16, epochs=1, bpreg=0.5, elu_alpha=0.7,
                         sample_alpha=0.3)
    spy = FirstStep(model)
    model.fit(log, callbacks=[spy])
    net = GRU4RecNet(log.n_items, model.dim)
    net.load_state_dict(spy.state)
    counts = torch.from_numpy(np.bincount(log.items - FIRST_ITEM, minlength=log.n_items))
    extra = PopularitySampler(counts, 0.3).sample(9, torch.Generator().manual_seed(model.seed))  # the first draw
    with torch.no_grad():
        hidden, _ = net.step(spy.batch.inputs, net.initial_state(16))
        columns = torch.cat([spy.batch.targets, extra])
        scores = hidden @ net.out_emb.weight[columns].T + net.out_bias.weight[columns, 0]  # [16, 16 + 9]
    own = torch.eye(16, 25, dtype=torch.bool)
    expected = _reference_loss(loss, scores[own], scores[~own].view(16, 24), 0.5, 0.7)
    assert spy.loss == pytest.approx(expected.item(), rel=1e-6)
    far = 20e-6 * abs(expected.item())  # each flaw moves the loss well beyond that tolerance
    assert abs(expected.item() - _reference_loss(loss, scores[own], scores, 0.5, 0.7).item()) > far  # diagonal
    if loss == "bpr_max":
        assert abs(expected.item() - _reference_loss(loss, scores[own], scores[~own].view(16, 24), 1.0, 0.7)) > far


def test_softmax_is_applied_once():
    # a target scored far above 999 negatives: cross-entropy of raw scores is ~0; a second softmax over
    # probabilities would leave it near log(1000) - 1.
    pos, neg = torch.tensor([30.0]), torch.zeros(1, 999)
    assert losses.sampled_ce(pos, neg).item() == pytest.approx(999 * math.exp(-30), abs=1e-9)
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
    net = _net(embed_dropout=0.8, hidden_dropout=0.0).train()
    items = torch.arange(1, 31).repeat(200)
    dropped = net.embed(items)
    zero = (dropped == 0).float().mean().item()
    assert zero == pytest.approx(0.8, abs=0.02)  # p is the drop rate, not the keep rate
    kept = dropped != 0
    assert torch.allclose(dropped[kept], (net.out_emb.weight[items] * 5.0)[kept])  # scaled by 1 / (1 - p)
    net = _net(embed_dropout=0.0, hidden_dropout=0.0).train()
    out, _ = net.step(items, net.initial_state(len(items)))
    assert (out == 0).sum() == 0  # no dropout asked for, none applied
    net = _net(embed_dropout=0.0, hidden_dropout=0.5).train()
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
    with pytest.raises(seqrec.ConfigError, match="n_negatives=0 with batching='padded'"):
        tiny_gru4rec(n_negatives=0, batching="padded", loss="top1_max").fit(cyclic_frame(n_users=8))
    with pytest.raises(seqrec.ConfigError, match="choose from"):
        tiny_gru4rec(loss="bce").fit(cyclic_frame(n_users=8))
    with pytest.raises(seqrec.ConfigError, match="batching"):
        tiny_gru4rec(batching="random").fit(cyclic_frame(n_users=8))


def test_session_training_with_retiring_slots_and_logq():
    log = seqrec.read_interactions(cyclic_frame(n_users=40, length=5, min_length=2))
    model = tiny_gru4rec(batch_size=16, logq=1.0, epochs=2).fit(log)  # 40 sessions: slots retire at the end
    assert model.train_result_.epochs[-1].loss > 0
    items, scores = model.recommend([[3, 4]], k=log.n_items, exclude_seen=False)
    assert sorted(items[0].tolist()) == sorted(log.vocab.items.tolist()) and np.isfinite(scores).all()


def test_session_training_with_mini_batch_negatives_only(cyclic_split):
    # the 2016 paper's sampling: the other slots' targets are the only negatives (n_negatives=0)
    model = tiny_gru4rec(loss="top1_max", n_negatives=0, epochs=4, patience=4, lr=0.1)
    model.fit(cyclic_split.train, valid=cyclic_split.valid)
    assert all(np.isfinite(e.loss) for e in model.train_result_.epochs)  # no step without negatives yields NaN
    assert seqrec.evaluate(model, cyclic_split.test, k=(1,))["metrics"]["HR@1"] >= 0.8
