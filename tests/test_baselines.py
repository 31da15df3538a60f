"""The seed's baselines: each passes the estimator contract; what each must learn; its own behaviour."""

import functools

import numpy as np
import pytest
import torch

import seqrec
from seqrec.data.batching import PairBatcher, TargetWindowBatcher, UserItems
from seqrec.data.sequences import Histories
from seqrec.errors import DataError
from seqrec.ids import PAD

from conftest import cyclic_frame, tiny_baseline
from contract import RecommenderContract


class TestPopRec(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "poprec"))
    sequential = neural = False


class TestBPRMF(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "bprmf"))
    sequential = False
    hr10_threshold = 0.9


class TestNCF(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "ncf"))
    sequential = False
    hr10_threshold = 0.9


class TestFMC(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "fmc"))


class TestFPMC(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "fpmc"))


class TestTransRec(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "transrec"))


class TestCaser(RecommenderContract):
    make = staticmethod(functools.partial(tiny_baseline, "caser"))


@pytest.fixture(scope="module")
def small_log():
    return seqrec.read_interactions(cyclic_frame(n_users=64, n_items=30, length=8, min_length=2))


def test_negatives_never_fall_in_the_users_items(small_log):
    seen = UserItems(small_log)
    users = torch.arange(small_log.n_users).repeat_interleave(50)
    negatives = seen.negatives(users, 7, torch.Generator().manual_seed(0))
    assert not seen.contains(users, negatives).any()
    for u in range(small_log.n_users):  # against a direct check
        mine = set(small_log.sequence(u).tolist())
        drawn = set(negatives[users == u].flatten().tolist())
        assert not drawn & mine and drawn <= set(range(1, small_log.n_items + 1))
        assert seen.contains(torch.tensor([u]), torch.tensor([[small_log.sequence(u)[0]]])).item()


def test_pair_batches_are_the_logs_events_and_consecutive_pairs(small_log):
    generator = torch.Generator().manual_seed(0)
    for consecutive in (False, True):
        batches = list(PairBatcher(small_log, 50, 2, consecutive).epoch(generator))
        got = sorted((int(u), int(p), int(i)) for b in batches for u, p, i in zip(b.users, b.previous, b.items))
        want = sorted((u, int(s[t - 1]) if consecutive else PAD, int(s[t]))
                      for u in range(small_log.n_users) for s in [small_log.sequence(u)]
                      for t in range(1 if consecutive else 0, len(s)))
        assert got == want and all(b.negatives.shape == (len(b.items), 2) for b in batches)


def test_caser_windows_are_the_references_sliding_windows(small_log):
    batcher = TargetWindowBatcher(small_log, 3, 2, 1000, 1)
    got = sorted((int(u), *map(int, x), *map(int, y)) for u, x, y in zip(batcher.users, batcher.inputs, batcher.targets))
    want = []
    for u in range(small_log.n_users):
        s = small_log.sequence(u).tolist()
        if len(s) < 5:  # one window, left-padded
            want.append((u, *([PAD] * (5 - len(s)) + s)))
        else:
            want += [(u, *s[e - 5:e]) for e in range(5, len(s) + 1)]
    assert got == sorted(want)


def test_bprmf_folds_a_new_history_in(cyclic_split):
    model = tiny_baseline("bprmf").fit(cyclic_split.train)
    history = model.histories_.sequence(0)
    known = Histories(history, np.array([0]), np.array([len(history)]), np.array([0]))
    folded = model.score(Histories.from_lists([history]))[0]
    items = torch.from_numpy(history - 1)
    assert folded[items].mean() > folded.mean() + 1.0  # the history's own items score high
    top_known = set(torch.topk(model.score(known)[0], 10).indices.tolist())
    top_folded = set(torch.topk(folded, 10).indices.tolist())
    assert len(top_known & top_folded) >= 5  # the folded-in vector recommends much like the trained one


def test_ncf_scores_unknown_users_by_popularity_with_a_warning(cyclic_split, caplog):
    model = tiny_baseline("ncf", epochs=1).fit(cyclic_split.train)
    with caplog.at_level("WARNING"):
        scores = model.score(Histories.from_lists([np.array([3, 4])]))
    assert "scored by training popularity" in caplog.text
    assert torch.equal(scores[0], model.popularity_)


@pytest.mark.parametrize("name", ["fpmc", "transrec", "caser", "bprmf", "ncf"])
def test_known_users_use_their_vector_and_users_without_training_events_do_not(name, cyclic_split):
    model = tiny_baseline(name, epochs=2).fit(cyclic_split.train)
    history = model.histories_.sequence(0)
    as_user = lambda users: Histories(history, np.array([0]), np.array([len(history)]), np.array(users))  # noqa: E731
    anonymous = model.score(Histories.from_lists([history]))
    assert not torch.allclose(model.score(as_user([0])), anonymous)
    model.trained_users_[0] = False  # as a user with no training event (a test session)
    assert torch.allclose(model.score(as_user([0])), anonymous)


def test_transrec_keeps_item_points_in_the_unit_ball(cyclic_split):
    model = tiny_baseline("transrec", epochs=2, lr=0.1).fit(cyclic_split.train)
    assert model.net_.point.weight.norm(dim=1).max() <= 1.0 + 1e-5


def test_poprec_ranks_by_training_counts(cyclic_split):
    model = seqrec.PopRec().fit(cyclic_split.train)
    counts = np.bincount(cyclic_split.train.items, minlength=cyclic_split.train.n_items + 1)[1:]
    assert np.array_equal(model.score(Histories.from_lists([np.array([1])]))[0].numpy(), counts)
    top = model.recommend([[]], k=3)[0][0]
    assert sorted(counts, reverse=True)[:3] == [counts[model.vocab_.encode_items([i])[0] - 1] for i in top]


def test_user_models_keep_their_users(cyclic_split):
    model = tiny_baseline("fpmc", epochs=1).fit(cyclic_split.train)
    model.set_histories(cyclic_split.log)  # same users: fine
    other = seqrec.read_interactions(cyclic_frame(n_users=10))
    with pytest.raises(DataError, match="vector per training user"):
        model.set_histories(other)


def test_ncf_full_scores_equal_its_candidate_scores(cyclic_split):
    model = tiny_baseline("ncf", epochs=1).fit(cyclic_split.train)
    users = torch.tensor([0, 3, 7])
    full = model.net_.score_all(users, chunk=50)  # several row blocks
    candidates = torch.arange(1, model.vocab_.n_items + 1).repeat(3, 1)
    assert torch.allclose(full, model.net_.score_candidates(users, candidates), atol=1e-5)


def test_sampled_evaluation_of_ncf_scores_only_the_candidates_with_the_same_result(cyclic_split, monkeypatch):
    model = tiny_baseline("ncf", epochs=1).fit(cyclic_split.train)
    fast = seqrec.evaluate(model, cyclic_split.test, k=(10,), protocol="sampled", n_negatives=20, seed=2)
    monkeypatch.setattr(model.net_, "score_all", lambda *a, **k: pytest.fail("scored the whole catalogue"))
    assert seqrec.evaluate(model, cyclic_split.test, k=(10,), protocol="sampled", n_negatives=20,
                           seed=2)["metrics"] == fast["metrics"]
    monkeypatch.undo()
    generic = seqrec.Recommender.score_candidates  # the full scores, gathered
    monkeypatch.setattr(type(model), "score_candidates", generic)
    slow = seqrec.evaluate(model, cyclic_split.test, k=(10,), protocol="sampled", n_negatives=20, seed=2)
    assert slow["metrics"] == pytest.approx(fast["metrics"], abs=1e-6)
