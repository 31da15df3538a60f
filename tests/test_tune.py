"""seqrec tune: search spaces declared with the options, the search (selection on validation only, pruning,
budget), resuming from the study, the refit and the report."""

from __future__ import annotations

import json
import sqlite3

import optuna
import pytest

import seqrec
from seqrec import tuning
from seqrec.cli import main
from seqrec.errors import ConfigError
from seqrec.models import MODELS, build
from seqrec.options import Search, choice, search_from, span
from tests.conftest import cyclic_frame

SPACE = {"dim": [16, 64], "max_len": [8, 50], "n_blocks": [1, 2], "n_heads": [1, 2], "loss": ["ce", "sampled_ce"],
         "n_negatives": {"choices": [8, 16], "when": {"loss": ["sampled_ce"]}}, "weight_decay": None,
         "lr": {"low": 1e-3, "high": 2e-2, "log": True}}
FIXED = {"epochs": 3, "patience": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    cyclic_frame(n_users=200, length=10, min_length=4).to_csv(folder / "log.csv", index=False)
    (folder / "space.json").write_text(json.dumps(SPACE))
    return folder


def run(data, out, **options):
    values = {"data": str(data / "log.csv"), "model": "sasrec", "budget": "10m", "out": str(out),
              "space": str(data / "space.json"), "trials": 3, **FIXED, **options}
    return seqrec.tune(**values)


# ---- durations and spaces -------------------------------------------------------------------------------
def test_budgets_parse_as_durations():
    assert tuning.parse_duration("2h") == 7200
    assert tuning.parse_duration("1h30m") == 5400
    assert tuning.parse_duration("45s") == 45
    assert tuning.parse_duration("90") == 90
    for bad in ("soon", "2 days", "0", "-5", "1h 30x"):
        with pytest.raises(ConfigError, match="budget"):
            tuning.parse_duration(bad)


def test_space_entries_from_a_file_and_their_errors():
    assert search_from("dim", [32, 64]) == choice(32, 64)
    assert search_from("lr", {"low": 1e-4, "high": 1e-2, "log": True}) == span(1e-4, 1e-2, log=True)
    assert search_from("dropout", None) is None
    conditional = search_from("n_negatives", {"choices": [8], "when": {"loss": "sampled_ce"}})
    assert conditional.conditions == {"loss": ("sampled_ce",)}
    with pytest.raises(ConfigError, match="lr: a log-scale search range needs low > 0"):
        search_from("lr", {"low": 0, "high": 1, "log": True})
    with pytest.raises(ConfigError, match="dim: unknown key"):
        search_from("dim", {"values": [1]})
    with pytest.raises(ConfigError, match="needs both 'low' and 'high'"):
        search_from("lr", {"low": 0.1})
    with pytest.raises(ConfigError, match="low <= high"):
        span(2, 1)


def test_every_models_declared_space_holds_valid_values_and_its_defaults():
    for name, cls in MODELS.items():
        space = tuning.search_space(name) if cls.search_space() else {}
        for option, spec in space.items():
            assert isinstance(spec, Search)
            for other in spec.conditions:
                assert other in cls.option_fields(), (name, option, other)
    sasrec = seqrec.SASRec.search_space()
    searched = {"lr", "dim", "n_blocks", "n_heads", "dropout", "max_len", "loss", "n_negatives", "weight_decay"}
    assert searched <= set(sasrec)
    assert "mask_prob" in seqrec.BERT4Rec.search_space() and "mask_prob" not in sasrec
    gru = seqrec.GRU4Rec.search_space()
    assert "max_len" not in gru and gru["lr"].low == 0.01  # the official code's space, not the transformers'
    assert seqrec.PopRec.search_space() == {}
    for cls in (seqrec.SASRec, seqrec.BERT4Rec):  # the defaults lie in the space: the first trial is them
        defaults = cls().get_params()
        assert all(tuning._admits(spec, defaults[name]) for name, spec in cls.search_space().items())


def test_a_space_file_overrides_the_declared_space_and_fixed_options_leave_it(data):
    space = tuning.search_space("sasrec", data / "space.json", fixed={"dim": 32})
    assert "dim" not in space and "weight_decay" not in space
    assert space["n_heads"] == choice(1, 2) and space["dropout"] == seqrec.SASRec.search_space()["dropout"]
    bad = data / "bad.json"
    bad.write_text(json.dumps({"n_heads": [0, 1]}))
    with pytest.raises(ConfigError, match="n_heads"):
        tuning.search_space("sasrec", bad)
    bad.write_text(json.dumps({"colour": [1]}))
    with pytest.raises(ConfigError, match="colour"):
        tuning.search_space("sasrec", bad)
    bad.write_text(json.dumps({"loss": {"low": 0, "high": 1}}))
    with pytest.raises(ConfigError, match="loss is str: give it choices"):
        tuning.search_space("sasrec", bad)


def test_conditional_options_are_searched_only_when_their_condition_holds(data):
    space = tuning.search_space("sasrec", data / "space.json")
    search = tuning._Search.__new__(tuning._Search)
    search.space, search.fixed, search.cls = space, {}, seqrec.SASRec
    search.defaults = seqrec.SASRec().get_params()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        params = search.params_of(study.ask())
        seen.add(params["loss"])
        assert ("n_negatives" in params) == (params["loss"] == "sampled_ce")
        build("sasrec", params).validate()
    assert seen == {"ce", "sampled_ce"}


# ---- the search ------------------------------------------------------------------------------------------
def test_tune_selects_on_validation_refits_and_reports(data, tmp_path, monkeypatch):
    events = []
    objective, evaluate = tuning._Search._objective, tuning.evaluate_test

    def traced_objective(self, trial):
        events.append("trial")
        return objective(self, trial)

    def traced_evaluate(model, evalset, *args, **kwargs):
        events.append("test")
        return evaluate(model, evalset, *args, **kwargs)

    monkeypatch.setattr(tuning._Search, "_objective", traced_objective)
    monkeypatch.setattr(tuning, "evaluate_test", traced_evaluate)
    report = run(data, tmp_path / "run", seeds=2)
    # the test split is read only after the last trial, by the chosen configuration (and the defaults beside it)
    assert events[:3] == ["trial"] * 3 and set(events[3:]) == {"test"}
    defaults = seqrec.SASRec().get_params()  # the first trial is the defaults (all lie in this space)
    assert report["defaults_trial"]["number"] == 0 and len(report["trials"]) == 3
    assert all(defaults[k] == v for k, v in report["trials"][0]["params"].items())
    assert "NDCG@10" in report["defaults_test"]
    best = max((t for t in report["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert report["best_trial"] == best["number"] and report["selection_valid"] == best["value"]
    assert all(len(t["curve"]) >= 1 and t["seconds"] > 0 for t in report["trials"])
    assert report["valid_test_gap"] == pytest.approx(best["value"] - report["selection_test"]["NDCG@10"])
    check = report["overfit_check"]
    assert check["seed"] == 1 and check["gap"] == pytest.approx(check["best_valid"] - check["fresh_seed_valid"])
    refit = report["refit"]
    assert [r["seed"] for r in refit["runs"]] == [0, 1] and refit["epochs"] == best["best_epoch"]
    assert refit["mean"]["NDCG@10"] == pytest.approx(sum(r["test"]["NDCG@10"] for r in refit["runs"]) / 2)
    assert refit["std"]["NDCG@10"] > 0
    # the run directory holds the refit of the best configuration, as seqrec train --refit would
    model = seqrec.load(tmp_path / "run")
    assert model.get_params()["dim"] == best["params"]["dim"] and model.epochs == best["best_epoch"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metrics"]["NDCG@10"] == refit["runs"][0]["test"]["NDCG@10"]
    assert metrics["training"]["refit_on"] == "train+valid" and metrics["tune"]["best_trial"] == best["number"]
    folder = tmp_path / "run" / "tune"
    assert {"study.db", "report.json", "report.md", "search.png", "final.json"} <= {p.name for p in folder.iterdir()}
    text = (folder / "report.md").read_text()
    assert "defaults (trial 0)" in text and "Overfit check" in text and "| trial | state |" in text
    assert "note" in report["importance"]  # 3 trials: too few to say, and the report says so
    assert json.loads((folder / "report.json").read_text())["best_trial"] == best["number"]


def test_an_interrupted_search_resumes_without_losing_finished_trials(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit = seqrec.SASRec.fit
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(seqrec.SASRec, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(data, out, trials=4)
    monkeypatch.setattr(seqrec.SASRec, "fit", fit)
    before = optuna.load_study(study_name=tuning.STUDY_NAME, storage=f"sqlite:///{out / 'tune' / 'study.db'}")
    finished = [(t.params, t.value) for t in before.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 2 and before.user_attrs["spent_seconds"] > 0
    dangling = before.ask()  # as a process killed mid-trial leaves it: running
    del dangling
    report = run(data, out, trials=5)
    states = [t["state"] for t in report["trials"]]
    assert [(t["params"], t["value"]) for t in report["trials"][:2]] == finished
    assert states[2] == "FAIL" and states[3] == "FAIL"  # the interrupted and the dangling trial
    assert report["trials"][3]["error"] == "interrupted"
    assert len(report["trials"]) == 5 and states.count("COMPLETE") == 3


def test_a_study_of_other_options_is_not_resumed(data, tmp_path):
    out = tmp_path / "run"
    run(data, out, trials=1, overfit_check=False)
    with pytest.raises(ConfigError, match="holds a search of other fixed"):
        run(data, out, trials=1, overfit_check=False, epochs=2)


def test_a_small_budget_ends_the_search_and_the_run_still_finishes(data, tmp_path):
    report = run(data, tmp_path / "run", budget="2s", trials=None, epochs=50, patience=50, overfit_check=False,
                 refit=False)
    assert report["trials"] and "test" in report and report["n_trials"]["COMPLETE"] >= 1
    assert report["trials"][0]["stop_reason"] == "time_budget"  # the first trial had half the budget


def test_the_pruners_verdict_stops_the_training_loop():
    class Trial:
        def __init__(self, prune):
            self.reported, self.prune = [], prune

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    record = type("Record", (), {"valid": {"NDCG@10": 0.1}, "epoch": 4})()
    keep, cut = tuning._Report(Trial(False), prune=True), tuning._Report(Trial(True), prune=True)
    assert not keep.on_epoch(record) and keep.pruned_at is None and keep.trial.reported == [(4, 0.1)]
    assert cut.on_epoch(record) and cut.pruned_at == 4
    assert not tuning._Report(Trial(True), prune=False).on_epoch(record)  # --prune false: never


def test_the_pruner_compares_with_the_25th_percentile_from_epoch_6(data, tmp_path):
    config = tuning.TuneConfig(data=str(data / "log.csv"), model="sasrec", out=str(tmp_path / "run"))
    study, storage = tuning.open_study(tmp_path, {"data": "x"}, config)
    assert isinstance(study.pruner, optuna.pruners.PercentilePruner)
    curves = {"slow": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07], "fast": [0.05, 0.06, 0.07, 0.07, 0.07, 0.07]}
    for curve in curves.values():  # two finished trials: the 25th percentile lies nearer the lower curve
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
        study.tell(trial, max(curve))
    # epoch 6: the finished trials scored 0.06 and 0.07, their 25th percentile 0.0625
    behind, level = study.ask(), study.ask()
    for epoch in range(1, 7):
        behind.report(0.0624 if epoch == 6 else 0.001, epoch)  # (the median, 0.065, would cut both)
        level.report(0.0626 if epoch == 6 else 0.001, epoch)
        assert behind.should_prune() == (epoch >= 6)  # not before epoch --prune-after (6)
        assert not level.should_prune()
    storage.engine.dispose()


def test_the_overfit_check_is_skipped_when_the_budget_cannot_hold_it():
    search = tuning._Search.__new__(tuning._Search)
    search.config = tuning.TuneConfig(data="x.csv", model="sasrec", out="run", seeds=2)
    search.defaults, search.ratio = {"seed": 0}, 1.5
    search.clock = tuning._Clock(100.0, spent_before=70.0)  # 30 s left; the refits need 2 x 10 s x 1.5
    best = type("Trial", (), {"value": 0.1, "user_attrs": {"seconds_to_best": 10.0, "seconds": 12.0}})()
    check = search._overfit_check(best, {})
    assert check["skipped"].startswith("skipped: 0 s of the budget are left beside the refit's estimated 30 s")
    assert "gap" not in check and check["best_valid"] == 0.1


def test_pruned_trials_are_recorded_as_pruned(data, tmp_path, monkeypatch):
    def on_epoch(self, record):  # the pruner's verdict, forced: trial 1 is stopped after its first epoch
        self.trial.report(record.valid["NDCG@10"], record.epoch)
        if self.trial.number == 1:
            self.pruned_at = record.epoch
            return True
        return None

    monkeypatch.setattr(tuning._Report, "on_epoch", on_epoch)
    report = run(data, tmp_path / "run", trials=2, overfit_check=False, refit=False)
    assert [t["state"] for t in report["trials"]] == ["COMPLETE", "PRUNED"]
    assert report["trials"][1]["stop_reason"] == "pruned" and len(report["trials"][1]["curve"]) == 1


# ---- the command line ---------------------------------------------------------------------------------------
def test_tune_command_line(data, tmp_path, capsys):
    assert main(["tune", "--help"]) == 0
    assert "sasrec's search space" in capsys.readouterr().out
    out = tmp_path / "run"
    code = main(["tune", "--data", str(data / "log.csv"), "--space", str(data / "space.json"), "--budget", "5m",
                 "--trials", "2", "--epochs", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "best trial" in printed and "refit on train + validation" in printed
    assert "Overfit check: the best configuration with a fresh seed (seed 1)" in printed
    assert (out / "tune" / "report.md").is_file() and seqrec.load(out).vocab_.n_items == 50


def test_the_command_prints_a_skipped_overfit_check(data, tmp_path, capsys, monkeypatch):
    check = {"seed": 1, "best_valid": 0.1, "skipped": "skipped: 0 s of the budget are left"}
    report = {"metric": "NDCG@10", "best_trial": 0, "trials": [{}], "selection_valid": 0.1,
              "selection_test": {"NDCG@10": 0.09}, "overfit_check": check, "params": {}}
    monkeypatch.setattr(tuning, "tune_run", lambda config, fixed: report)
    assert main(["tune", "--data", str(data / "log.csv"), "--out", str(tmp_path / "run")]) == 0
    assert "Overfit check skipped: 0 s of the budget are left." in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--model", "poprec"], "poprec has no options to search"),
    (["--budget", "soon"], "budget 'soon' is not a duration"),
    (["--devices", "2"], "use --devices 1"),
    (["--space", "nowhere.json"], "nowhere.json: no such search space file"),
])
def test_tune_refuses_with_a_clear_message(data, tmp_path, capsys, flags, message):
    argv = ["tune", "--data", str(data / "log.csv"), "--out", str(tmp_path / "run"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_sasrec_weight_decay_is_adamw_on_matrices_and_refused_with_sparse_items(cyclic_split):
    from tests.conftest import tiny_sasrec

    model = tiny_sasrec(weight_decay=0.1, epochs=1).fit(cyclic_split.train)
    groups = model._optimizer().param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.dim() == 2 for p in groups[0]["params"]) and all(p.dim() != 2 for p in groups[1]["params"])
    with pytest.raises(ConfigError, match="weight_decay 0"):
        tiny_sasrec(weight_decay=0.1, sparse_items=True, loss="sampled_ce").validate()


def test_the_study_is_plain_sqlite(data, tmp_path):
    run(data, tmp_path / "run", trials=1, overfit_check=False, refit=False)
    with sqlite3.connect(tmp_path / "run" / "tune" / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 1
