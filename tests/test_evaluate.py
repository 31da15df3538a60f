import numpy as np
import pytest
import torch

import seqrec
from seqrec.errors import ConfigError
from seqrec.evaluate import evaluate

from conftest import cyclic_frame


class Constant:
    """Scores every item 0: must get HR@10 = 10 / candidates, not 1."""

    max_len = 5

    def score(self, histories, out=None):
        scores = torch.zeros(len(histories), self.n_items)
        return scores if out is None else out.copy_(scores)


class Oracle(Constant):
    """Scores item i+1 highest after a history ending in i (the cyclic data's rule)."""

    def score(self, histories, out=None):
        scores = torch.zeros(len(histories), self.n_items)
        nxt = histories.windows(1)[:, -1] % self.n_items  # internal id of the next item, 0-based column
        scores[np.arange(len(histories)), nxt] = 1.0
        return scores


@pytest.fixture
def test_set():
    log = seqrec.read_interactions(cyclic_frame(n_users=40, n_items=50, length=6))
    return seqrec.leave_one_out(log).test


def test_constant_model_gets_chance_level(test_set):
    model = Constant()
    model.n_items = test_set.log.n_items
    m = evaluate(model, test_set, k=(10,), exclude_seen=False)["metrics"]
    assert m["HR@10"] == pytest.approx(10 / 50)
    seen = evaluate(model, test_set, k=(10,), exclude_seen=True)["metrics"]
    assert seen["HR@10"] == pytest.approx(10 / (50 - 5))  # 5 history items leave the candidates


def test_oracle_and_card(test_set):
    model = Oracle()
    model.n_items = test_set.log.n_items
    result = evaluate(model, test_set, k=(1, 10), split={"kind": "leave_one_out"})
    assert result["metrics"]["HR@1"] == 1.0 and result["metrics"]["NDCG@10"] == 1.0
    card = result["protocol"]
    for key in ("dataset", "split", "candidates", "seen_filtering", "tie_policy", "seed", "seqrec_version"):
        assert key in card
    assert card["dataset"]["fingerprint"] == test_set.log.fingerprint()
    assert card["candidates"] == "full ranking: all 50 items" and card["tie_policy"] == "expected"


def test_sampled_protocol_is_labelled_and_seeded(test_set):
    model = Constant()
    model.n_items = test_set.log.n_items
    a = evaluate(model, test_set, k=(10,), protocol="sampled", n_negatives=20, seed=3)
    b = evaluate(model, test_set, k=(10,), protocol="sampled", n_negatives=20, seed=3, sampling="popularity")
    assert set(a["metrics"]) == {"sampled_HR@10", "sampled_NDCG@10", "sampled_MRR@10"}
    assert a["metrics"]["sampled_HR@10"] == pytest.approx(10 / 21)
    assert "SAMPLED" in a["protocol"]["candidates"] and "popularity" in b["protocol"]["candidates"]


def test_repeat_target_is_a_miss_under_seen_filtering():
    frame = cyclic_frame(n_users=3, n_items=4, length=6)  # cycles of 4: the last item repeats a seen one
    test = seqrec.leave_one_out(seqrec.read_interactions(frame)).test
    model = Oracle()
    model.n_items = test.log.n_items
    result = evaluate(model, test, k=(1,), exclude_seen=True)
    assert result["metrics"]["HR@1"] == 0.0 and result["protocol"]["targets_never_rankable"] == 3
    assert evaluate(model, test, k=(1,), exclude_seen=False)["metrics"]["HR@1"] == 1.0


class OnAccelerator:
    """A model that keeps its scores where it computed them (as a GPU model does): it ignores the host
    buffer evaluation offers, and evaluation ranks what it returns. Its tensors are CPU ones here, so the
    code path runs on every machine; tests that need CUDA check the real thing."""

    def __init__(self, model):
        self.model, self.max_len, self.calls = model, model.max_len, 0

    def score(self, histories, out=None):
        self.calls += 1
        return self.model.score(histories).clone()


@pytest.mark.parametrize("protocol", ["full", "sampled"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_scores_returned_outside_the_buffer_give_the_same_figures(protocol, exclude_seen):
    log = seqrec.read_interactions(cyclic_frame(n_users=300, n_items=50, length=8))
    train, _, test = seqrec.leave_one_out(log)
    model = seqrec.SASRec(max_len=8, dim=16, epochs=2, patience=2, progress=False).fit(train)
    wrapped = OnAccelerator(model)
    options = dict(k=(1, 5, 10), protocol=protocol, exclude_seen=exclude_seen, batch_size=64)
    on_device = evaluate(wrapped, test, **options)
    on_host = evaluate(model, test, **options)
    assert wrapped.calls == 5  # 300 rows in batches of 64
    assert on_device["metrics"] == pytest.approx(on_host["metrics"], abs=1e-12)
    assert on_device["protocol"]["targets_never_rankable"] == on_host["protocol"]["targets_never_rankable"]


def test_session_sets_rank_only_items_with_a_training_event_and_keep_seen_items():
    import pandas as pd

    rows = [("s1", "a", 1), ("s1", "b", 2), ("s1", "c", 3), ("s2", "a", 4), ("s2", "b", 5),  # training
            ("s4", "y", 7), ("s4", "a", 8), ("s3", "b", 10), ("s3", "a", 11), ("s3", "z", 12)]  # y, z: never trained
    log = seqrec.read_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    split = seqrec.session_split(log, test_fraction=0.25, valid_fraction=0.34)
    test = split.test
    assert test.exclude_seen is False and sorted(log.vocab.decode_items(test.candidates)) == ["a", "b", "c"]
    model = Constant()
    model.n_items = log.n_items  # 5 items, 2 of them never trained on
    result = evaluate(model, test, k=(3,))
    assert result["metrics"]["HR@3"] == pytest.approx(1.0)  # 3 candidates, not 5: every target in the top 3
    assert "2 items without one are never ranked" in result["protocol"]["candidates"]
    assert result["protocol"]["seen_filtering"] is False


def test_negatives_without_replacement_are_distinct_outside_the_history_and_follow_popularity():
    from seqrec.evaluate import _sample_negatives

    rng = np.random.default_rng(0)
    n_items, rows = 30, 400
    popularity = np.arange(1, n_items + 1, dtype=float)  # item j+1 drawn ∝ j+1
    seen_rows = np.repeat(np.arange(rows), 3)
    seen_items = np.tile([28, 29, 30], rows)  # the most popular items are in every history
    targets = np.full(rows, 27)
    negatives = _sample_negatives(rng, n_items, rows, 20, seen_rows, seen_items, targets, popularity,
                                  replacement=False)
    assert negatives.shape == (rows, 20)
    assert all(len(set(row)) == 20 for row in negatives.tolist())
    assert not np.isin(negatives, [27, 28, 29, 30]).any() and negatives.min() >= 1
    counts = np.bincount(negatives.ravel(), minlength=n_items + 1)
    assert counts[26] > counts[2]  # popular items are drawn more often (not uniformly)
    with pytest.raises(ConfigError, match="distinct negatives"):
        _sample_negatives(rng, n_items, 2, 27, seen_rows[:6], seen_items[:6], targets[:2], popularity, False)


def test_several_tie_policies_from_one_pass(test_set):
    model = seqrec.PopRec().fit(test_set.log)  # popularity: many ties
    both = evaluate(model, test_set, k=(10,), protocol="sampled", tie_policy=("expected", "optimistic"), seed=1)
    for policy in ("expected", "optimistic"):
        alone = evaluate(model, test_set, k=(10,), protocol="sampled", tie_policy=policy, seed=1)
        assert both["by_tie_policy"][policy] == alone["metrics"]
    assert both["metrics"] == both["by_tie_policy"]["expected"] and both["protocol"]["tie_policy"] == "expected"
    assert both["by_tie_policy"]["optimistic"]["sampled_HR@10"] > both["metrics"]["sampled_HR@10"]
