import math

import pytest
import torch

from seqrec.errors import ConfigError
from seqrec.metrics import ranking_metrics
from seqrec.ranking import rank_counts


def metrics_for(scores, target, ks=(1, 2, 10), policy="expected"):
    scores = torch.tensor([scores], dtype=torch.float32)
    higher, tied = rank_counts(scores, torch.tensor([target]))
    return {k: float(v[0]) for k, v in ranking_metrics(higher, tied, ks, policy).items()}


def test_rank_one_and_rank_two_closed_form():
    first = metrics_for([0.9, 0.1, 0.5], target=0)
    assert first["HR@1"] == 1 and first["NDCG@1"] == 1 and first["MRR@10"] == 1
    second = metrics_for([0.9, 0.1, 0.5], target=2)
    assert second["HR@1"] == 0 and second["HR@2"] == 1
    assert second["NDCG@2"] == pytest.approx(1 / math.log2(3)) and second["MRR@2"] == pytest.approx(0.5)
    assert second["NDCG@1"] == 0 and second["MRR@1"] == 0


def test_constant_scores_do_not_win_ties_for_free():
    n = 1000
    expected = metrics_for([0.0] * n, target=7, ks=(10,))
    assert expected["HR@10"] == pytest.approx(10 / n)
    assert expected["NDCG@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, 11)) / n)
    assert expected["MRR@10"] == pytest.approx(sum(1 / r for r in range(1, 11)) / n)
    assert metrics_for([0.0] * n, 7, ks=(10,), policy="pessimistic")["HR@10"] == 0
    assert metrics_for([0.0] * n, 7, ks=(10,), policy="optimistic")["HR@10"] == 1


def test_expected_policy_averages_over_the_tie_block():
    # one item above, target tied with two others: rank uniform on {2, 3, 4}
    m = metrics_for([5.0, 1.0, 1.0, 1.0, 0.0], target=2, ks=(2, 3))
    assert m["HR@2"] == pytest.approx(1 / 3) and m["HR@3"] == pytest.approx(2 / 3)
    assert m["MRR@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)


def test_filtered_target_is_a_miss():
    m = metrics_for([float("-inf"), 0.1, 0.2], target=0, ks=(3,))
    assert m == {"HR@3": 0.0, "NDCG@3": 0.0, "MRR@3": 0.0}


def test_max_k_shortcut_gives_the_same_metrics():
    scores = torch.randn(50, 200).round(decimals=1)  # plenty of ties
    targets = torch.randint(0, 200, (50,))
    full = ranking_metrics(*rank_counts(scores, targets), (5, 20))
    fast = ranking_metrics(*rank_counts(scores, targets, max_k=20), (5, 20))
    for name in full:
        assert torch.allclose(full[name], fast[name])


def test_unknown_tie_policy_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown tie policy 'random'; choose from \['expected'"):
        ranking_metrics(torch.zeros(1), torch.zeros(1), (10,), "random")
