"""The sequentiality audit (seqrec.analysis) and the perturbed-history evaluation it rests on."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import seqrec
from seqrec.analysis import (AuditOptions, analyze, count_rules, dataset_statistics, rules_test,
                             shuffle_within_users, timestamps_are_positions)
from seqrec.analysis.audit import Audit, split_diagnostics, verdict
from seqrec.cli import main
from seqrec.data.sequences import Histories
from seqrec.errors import ConfigError, DataError
from seqrec.evaluate import evaluate, jaccard_rows, perturbation_test
from seqrec.ids import FIRST_ITEM

from conftest import cyclic_frame


def random_frame(n_users=80, n_items=30, max_len=15, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_len, n_users)
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), lengths),
                         "item_id": rng.integers(0, n_items, lengths.sum()),
                         "timestamp": np.concatenate([np.arange(n) + 1 for n in lengths])})


def naive_rules(log, n, support, confidence):
    grams, prefixes = Counter(), Counter()
    for u in range(log.n_users):
        s = list(log.sequence(u))
        grams.update(tuple(s[i:i + n]) for i in range(len(s) - n + 1))
        prefixes.update(tuple(s[i:i + n - 1]) for i in range(len(s) - n + 2))
    holding = sum(1 for g, c in grams.items() if c > support and c / prefixes[g[:-1]] > confidence)
    return len(grams), holding


@pytest.mark.parametrize("seed", [0, 1])
def test_rules_match_a_plain_count_of_ngrams(seed):
    log = seqrec.read_interactions(random_frame(n_users=300, n_items=8, seed=seed))
    counted = count_rules(log, orders=(2, 3, 4), support=2, confidence=0.05)
    for n in (2, 3, 4):
        ngrams, holding = naive_rules(log, n, 2, 0.05)
        assert counted[n]["ngrams"] == ngrams and counted[n]["rules"] == holding
        assert 0 < holding  # the thresholds do select something here


def test_rules_vanish_when_a_chain_is_shuffled_and_the_change_is_reported():
    log = seqrec.read_interactions(cyclic_frame(n_users=600, n_items=100, length=10))
    result = rules_test(log, seeds=(0, 1, 2))
    two, three = result["orders"]["2-gram"], result["orders"]["3-gram"]
    assert two["true"] == 100 and three["true"] == 100  # every i -> i + 1 (and i, i + 1 -> i + 2) holds
    # items close on the cycle share users, so some 2-grams survive the shuffle; no 3-gram does
    assert two["relative_change"] == pytest.approx(np.mean(two["shuffled"]) / 100 - 1) and len(two["shuffled"]) == 3
    assert three["shuffled"] == [0, 0, 0] and three["relative_change"] == -1
    with pytest.raises(ConfigError, match="orders"):
        count_rules(log, orders=(1,))


def test_shuffle_within_users_keeps_each_users_items():
    log = seqrec.read_interactions(random_frame())
    shuffled = shuffle_within_users(log, np.random.default_rng(0))
    assert np.array_equal(shuffled.offsets, log.offsets) and not np.array_equal(shuffled.items, log.items)
    for u in range(log.n_users):
        assert sorted(shuffled.sequence(u)) == sorted(log.sequence(u))


def test_statistics_count_repeats_ties_and_recognise_position_timestamps():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 2], "item_id": [5, 5, 6, 5, 7, 8, 7],
                          "timestamp": [10, 10, 20, 30, 15, 25, 35]})
    log = seqrec.read_interactions(frame)
    stats = dataset_statistics(log)
    assert stats["repeats"]["consecutive"] == 1  # 5, 5
    assert stats["repeats"]["total"] == 3  # the second and third 5 of user 1, the second 7 of user 2
    assert stats["timestamp_ties"]["events"] == 1 and not stats["time"]["positions_only"]
    assert stats["sequence_length"]["max"] == 4 and stats["users"] == 2 and stats["items"] == 4
    assert not timestamps_are_positions(log)
    assert timestamps_are_positions(seqrec.read_interactions(random_frame()))  # 1-based positions
    real = seqrec.read_interactions(pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2],
                                                  "timestamp": ["2024-01-01", "2024-03-01"]}))
    assert dataset_statistics(real)["time"]["span_days"] == pytest.approx(60)


def test_iterative_core_also_drops_the_repeats_its_removals_create():
    # user 1: a b a ... with b rare: removing b makes "a a", whose second a must go too (the paper's loop)
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3],
                          "item_id": ["a", "b", "a", "c", "a", "c", "a", "c", "a", "c", "a", "c"],
                          "timestamp": range(12)})
    log = seqrec.read_interactions(frame, min_user_events=2, min_item_events=2, drop_repeats=True)
    decoded = log.vocab.decode_items(log.sequence(0))
    assert list(decoded) == ["a", "c", "a", "c"]
    assert "repeats it creates" in log.report[-1]["filter"] and log.report[-1]["events_removed"] == 2


@pytest.mark.parametrize("how, expected", [
    ("reverse", [[1, 2, 5, 4, 3], [7], [9, 8]]),
    ("last_item", [[5], [7], [9]]),
    ("drop_last", [[1, 2, 3, 4], [], [8]]),
])
def test_perturbed_histories(how, expected):
    h = Histories.from_lists([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([8, 9])])
    p = h.perturbed(how, np.random.default_rng(0), window=3)
    assert [list(p.items[s:e]) for s, e in zip(p.starts, p.ends)] == expected


def test_shuffled_histories_reorder_only_the_window_a_model_reads():
    rng = np.random.default_rng(0)
    rows = [np.arange(1, 21), np.arange(30, 34)]
    h = Histories(np.concatenate(rows), np.array([0, 20]), np.array([20, 24]), users=np.array([4, 9]))
    changed = 0
    for _ in range(5):
        p = h.perturbed("shuffle", rng, window=8)
        first, second = p.items[p.starts[0]:p.ends[0]], p.items[p.starts[1]:p.ends[1]]
        assert list(first[:12]) == list(range(1, 13)) and sorted(first[12:]) == list(range(13, 21))
        assert sorted(second) == [30, 31, 32, 33] and list(p.users) == [4, 9]
        changed += list(first[12:]) != list(range(13, 21))
    assert changed >= 4
    with pytest.raises(ConfigError, match="perturbation"):
        h.perturbed("sort", rng)


class LastItemModel:
    """Scores only the item after the history's last item (a model that reads order only)."""

    max_len = 5

    def __init__(self, n_items):
        self.n_items = n_items

    def score(self, histories, out=None):
        import torch
        scores = torch.zeros(len(histories), self.n_items)
        last = histories.items[np.maximum(histories.ends - 1, histories.starts)]
        nxt = last % self.n_items + FIRST_ITEM  # item i -> i + 1 on the cycle
        scores[np.arange(len(histories)), nxt - FIRST_ITEM] = 1.0
        return scores


def test_perturbation_test_finds_a_model_that_reads_order_and_one_that_does_not():
    log = seqrec.read_interactions(cyclic_frame(n_users=300, n_items=40, length=12))
    test = seqrec.leave_one_out(log).test
    order = perturbation_test(LastItemModel(40), test, "shuffle", n_bootstrap=200)
    ndcg = order["change"]["NDCG@10"]
    assert order["true"]["HR@10"] == 1.0 and ndcg["significant"] and ndcg["high"] < -0.5
    assert 0 <= order["jaccard@10"]["mean"] < 1 and order["protocol"]["perturbation"]["histories"] == "shuffle"
    assert order["rows"]["jaccard"].shape == (len(test),)
    popular = seqrec.PopRec().fit(seqrec.leave_one_out(log).train)
    none = perturbation_test(popular, test, "reverse", n_bootstrap=200)
    assert none["change"]["NDCG@10"]["relative"] == 0 and not none["change"]["NDCG@10"]["significant"]
    assert none["jaccard@10"]["mean"] == 1.0
    last = perturbation_test(LastItemModel(40), test, "last_item", n_bootstrap=50)
    assert last["change"]["HR@10"]["relative"] == 0  # the last item is all it reads


def test_evaluate_rows_and_top_lists_agree_with_the_means():
    log = seqrec.read_interactions(cyclic_frame(n_users=100, n_items=40, length=8))
    test = seqrec.leave_one_out(log).test
    result = evaluate(LastItemModel(40), test, k=(5, 10), rows=True, top=3)
    for name, value in result["metrics"].items():
        assert result["rows"][name].mean() == pytest.approx(value)
    assert result["top"].shape == (len(test), 3)
    assert np.array_equal(result["top"][:, 0], test.targets)  # the model's first choice is the target
    with pytest.raises(ConfigError, match="full protocol"):
        evaluate(LastItemModel(40), test, protocol="sampled", top=3)
    with pytest.raises(ConfigError, match="full protocol only"):
        perturbation_test(LastItemModel(40), test, protocol="sampled")


def test_jaccard_rows():
    a = np.array([[1, 2, 3], [1, 2, 3]])
    b = np.array([[3, 2, 1], [4, 5, 1]])
    assert jaccard_rows(a, b).tolist() == [1.0, pytest.approx(1 / 5)]


def fake_audit(changes: list[tuple[float, bool]] | None, rules_change=-0.95) -> Audit:
    models = [{"model": f"m{i}", "change": {"NDCG@10": {"relative": r, "low": r - 0.05, "high": r + 0.05,
                                                        "significant": s}}}
              for i, (r, s) in enumerate(changes or [])]
    rules = {"orders": {"2-gram": {"true": 100, "shuffled_mean": 100 * (1 + rules_change),
                                   "relative_change": rules_change}}}
    return Audit("x", {}, {}, [], {}, rules, {}, models)


@pytest.mark.parametrize("changes, expected", [
    ([(-0.38, True), (-0.17, True)], "sequential"),  # Games in the paper
    ([(-0.12, True), (-0.05, False)], "weakly sequential"),
    ([(-0.062, True), (-0.07, True)], "not sequential"),  # significant but negligible (our Diginetica)
    ([(-0.07, False), (-0.16, False)], "not sequential"),  # Diginetica in the paper
    ([(0.05, True)], "not sequential"),  # a significant *gain* is no sign of order
])
def test_verdict_thresholds(changes, expected):
    result = verdict(fake_audit(changes), AuditOptions())
    assert result["verdict"] == expected and result["basis"] == "model-based test"
    assert result["thresholds"]["strong_drop"] == 0.2 and result["thresholds"]["weak_drop"] == 0.1
    with pytest.raises(ConfigError, match="weak thresholds"):
        AuditOptions(weak_drop=0.3).validate()


@pytest.mark.parametrize("drop, expected", [(-0.97, "sequential"), (-0.6, "weakly sequential"),
                                            (-0.2, "not sequential")])
def test_rules_only_verdict_says_it_is_less_reliable(drop, expected):
    result = verdict(fake_audit(None, drop), AuditOptions())
    assert result["verdict"] == expected and "less reliable" in result["basis"]


def test_leave_one_out_leakage_in_global_time():
    # user 1's last event (the test target, t=5) happens before user 2's training events (t=10, 11)
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2, 2], "item_id": [1, 2, 3, 1, 2, 3, 4],
                          "timestamp": [1, 2, 5, 10, 11, 12, 13]})
    split = seqrec.leave_one_out(seqrec.read_interactions(frame))
    leak = split_diagnostics(split, positional=False)["leakage"]
    assert leak["targets_before_other_training_events"] == 1 and leak["share_of_targets"] == 0.5
    assert split_diagnostics(split, positional=True)["leakage"]["measurable"] is False


def test_temporal_split_predicting_the_last_event():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 3, 3], "item_id": [1, 2, 3, 4, 5, 6, 7, 8],
                          "timestamp": [1, 2, 9, 10, 3, 4, 9, 10]})
    split = seqrec.temporal_split(seqrec.read_interactions(frame), quantile=0.6, target="last")
    boundary = split.params["boundary"]
    assert boundary == pytest.approx(np.quantile(frame["timestamp"], 0.6))
    test = split.test
    users = list(split.log.vocab.users[test.users])
    assert users == [1, 3]  # user 2 has no event at or after the boundary
    assert list(test.cuts) == [3, 1]  # everything but the last event, post-boundary events included
    assert split_diagnostics(split, positional=False)["cold"]["cold_users"] == 1  # user 3 starts after it
    with pytest.raises(ConfigError, match="target"):
        seqrec.temporal_split(split.log, target="middle")


FAST = {"sasrec": {"dim": 16, "n_blocks": 1, "n_heads": 1, "lr": 0.01}, "gru4rec": {"dim": 16, "input_dim": 16,
                                                                                      "lr": 0.01}}


@pytest.fixture(scope="module")
def chain_audit(tmp_path_factory):
    frame = cyclic_frame(n_users=300, n_items=30, length=10)
    frame["timestamp"] = 1_700_000_000 + frame["timestamp"] * 60 + frame["user_id"]  # real times
    return analyze(frame, params=FAST, max_len=10, epochs=6, patience=6, n_bootstrap=200, valid_users=200,
                   min_user_events=2, min_item_events=2, quantile=0.8)


def test_audit_of_a_chain_is_sequential_and_writes_a_readable_report(chain_audit, tmp_path):
    audit = chain_audit
    assert audit.verdict["verdict"] == "sequential" and audit.split["kind"] == "temporal"
    assert audit.rules["orders"]["3-gram"]["relative_change"] < -0.5
    for m in audit.models:
        assert m["change"]["NDCG@10"]["relative"] < -0.2 and m["change"]["NDCG@10"]["significant"]
        assert m["training"]["epochs"] >= 1 and m["params"]["max_len"] == 10
    paths = audit.write(tmp_path / "report")
    text = paths["markdown"].read_text()
    assert text.index("Verdict: SEQUENTIAL") < text.index("## Findings") < text.index("Sequential rules.")
    assert "![" in text and "NDCG@10" in text and "Deviations from the paper" in text
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page
    summary = json.loads(paths["summary"].read_text())
    assert summary["verdict"] == "sequential" and set(summary["models"]) == {"sasrec", "gru4rec"}
    assert set(summary["models"]["sasrec"]) == {"HR@10", "NDCG@10", "jaccard@10"}
    full = json.loads(paths["json"].read_text())
    assert full["split"]["leakage"]["targets_before_other_training_events"] == 0


def test_analyze_cli_without_models_on_order_free_data(tmp_path, capsys):
    data = tmp_path / "log.csv"
    random_frame(n_users=400, n_items=10, seed=3).to_csv(data, index=False)
    out = tmp_path / "audit"
    assert main(["analyze", str(data), "--models", "none", "--json", "--out", str(out),
                 "--min-user-events", "0", "--min-item-events", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verdict"] == "not sequential" and "rules only" in summary["basis"]
    assert summary["split"] == "loo"  # the timestamps are positions: no global time
    assert (out / "report.html").is_file() and not (out / "models.png").exists()
    report = (out / "report.md").read_text()
    assert "skipped (--models none)" in report and "only positions" in report


def test_analyze_refuses_what_it_cannot_do(tmp_path, capsys):
    data = tmp_path / "log.csv"
    random_frame().to_csv(data, index=False)
    assert main(["analyze", str(data), "--models", "none", "--split", "temporal", "--out", str(tmp_path)]) == 2
    assert "only positions" in capsys.readouterr().err
    assert main(["analyze", str(data), "--models", "caser", "--out", str(tmp_path)]) == 2
    assert "not part of the audit" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"user": [1], "item_id": [2], "timestamp": [3]}).to_csv(bad, index=False)
    assert main(["analyze", str(bad), "--models", "none", "--out", str(tmp_path)]) == 2
    assert "missing column" in capsys.readouterr().err
    with pytest.raises(DataError, match="no interactions left"):
        analyze(random_frame(n_users=3), models=["none"])
