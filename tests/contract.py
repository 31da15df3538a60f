"""The estimator contract, written once (as implicit's ``RecommenderBase`` test mixin): every model's test
class inherits :class:`RecommenderContract` and says how to build a small instance of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import seqrec
from seqrec.data.sequences import Histories
from seqrec.errors import ConfigError, DataError, NotFittedError

from conftest import assert_valid_topk, cyclic_frame


class RecommenderContract:
    """Subclasses set ``make = staticmethod(f)``, ``f(**overrides)`` building a small model, and may relax
    thresholds."""

    hr1_threshold = 0.9  # HR@1 on the cyclic data, where the next item is always i + 1
    hr10_threshold = None  # a model without a notion of order: HR@10 of its known users (None: not checked)
    make = None
    sequential = True  # reads the order of a history (learns i -> i + 1); False: user or popularity models
    neural = True  # trained in epochs from a seed (NeuralRecommender)

    @property
    def short(self) -> dict:
        """Options of a quick fit."""
        return {"epochs": 1} if self.neural else {}

    def needs(self, what: str) -> None:
        if not getattr(self, what):
            pytest.skip(f"not a {what} model")

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, cyclic_split):
        return cls.make().fit(cyclic_split.train, valid=cyclic_split.valid)

    # ---- learning ----------------------------------------------------------------------------------
    def test_learns_next_item_is_i_plus_one(self, fitted, cyclic_split):
        if not self.sequential:  # a user's items are an arc of the cycle: its vector can find the arc's end
            if self.hr10_threshold is None:
                pytest.skip("learns nothing user-specific (popularity)")
            result = seqrec.evaluate(fitted, cyclic_split.test, k=(10,))
            assert result["metrics"]["HR@10"] >= self.hr10_threshold, result["metrics"]
            return
        result = seqrec.evaluate(fitted, cyclic_split.test, k=(1,))
        assert result["metrics"]["HR@1"] >= self.hr1_threshold, result["metrics"]

    def test_fit_returns_self_and_fitted_state_ends_in_underscore(self, cyclic_split):
        model = self.make(**self.short)
        assert not [k for k in vars(model) if k.endswith("_")]  # __init__ only stores options
        assert model.fit(cyclic_split.train) is model
        assert {"vocab_", "histories_"} <= {k for k in vars(model) if k.endswith("_")}
        assert set(model.get_params()) == set(type(model).option_fields())

    def test_not_fitted_errors(self, tmp_path):
        model = self.make()
        for call in (lambda: model.recommend([[1]]), lambda: model.recommend_users("all"),
                     lambda: model.score(Histories.from_lists([np.array([1])])), lambda: model.save(tmp_path / "x")):
            with pytest.raises(NotFittedError, match="fit"):
                call()

    def test_same_seed_same_scores_other_seed_other_scores_global_rng_untouched(self, cyclic_split):
        self.needs("neural")
        batch = cyclic_split.test.batch()
        torch.manual_seed(123)
        before = torch.rand(1)
        torch.manual_seed(123)
        a = self.make(epochs=2).fit(cyclic_split.train)
        after = torch.rand(1)
        b = self.make(epochs=2).fit(cyclic_split.train)
        c = self.make(epochs=2, seed=1).fit(cyclic_split.train)
        assert torch.equal(a.score(batch), b.score(batch))
        assert not torch.equal(a.score(batch), c.score(batch))
        assert torch.equal(before, after)

    def test_refit_starts_fresh(self, cyclic_split):
        model = self.make(**{k: 2 for k in self.short})
        batch = cyclic_split.test.batch()
        first = model.fit(cyclic_split.train, valid=cyclic_split.valid).score(batch).clone()
        model.refit_of_ = "stale"  # any fitted state from before must go
        second = model.fit(cyclic_split.train, valid=cyclic_split.valid).score(batch)
        assert torch.equal(first, second) and not hasattr(model, "refit_of_")

    def test_refit_trains_a_fresh_model_for_the_selected_epochs_on_train_and_valid(self):
        self.needs("neural")
        split = seqrec.leave_one_out(seqrec.read_interactions(cyclic_frame(n_users=64)), valid_users=20)
        selected = self.make(epochs=3, patience=3, time_budget=1e6).fit(split.train, valid=split.valid)
        selected.train_result_.best_epoch = 2  # as if validation had chosen epoch 2
        batch = split.test.batch()
        before = selected.score(batch).clone()
        refit = selected.refit(split.train_valid)
        assert refit is not selected and refit.epochs == 2 and refit.time_budget is None
        assert len(refit.train_result_.epochs) == 2 and not refit.train_result_.epochs[-1].valid  # no validation
        assert refit.refit_of_ == {"best_epoch": 2, "best_valid_metric": selected.train_result_.best_metric,
                                   "epochs_run": 3, "stop_reason": "epochs"}
        same = {k: v for k, v in selected.get_params().items() if k not in ("epochs", "time_budget")}
        assert {k: v for k, v in refit.get_params().items() if k not in ("epochs", "time_budget")} == same
        assert torch.equal(selected.score(batch), before)  # the selected model is untouched
        alone = self.make(epochs=2, patience=3).fit(split.train)  # same seed and epochs, less data: differs
        assert not torch.equal(alone.score(batch), refit.score(batch))

    # ---- scoring and recommending --------------------------------------------------------------
    def test_scores_do_not_depend_on_the_padding_of_the_batch(self, fitted):
        short = np.array([3, 4, 5])
        longer = np.arange(1, 10)
        alone = fitted.score(Histories.from_lists([short]))
        beside = fitted.score(Histories.from_lists([short, longer]))[:1]  # padded to the longer history
        assert torch.allclose(alone, beside, atol=1e-5)

    def test_pad_and_mask_are_never_scored_or_recommended(self, fitted):
        n = fitted.vocab_.n_items
        scores = fitted.score(Histories.from_lists([np.array([1, 2]), np.array([], dtype=np.int64)]))
        assert scores.shape == (2, n)  # one column per real item: no PAD, no MASK
        items, scores = fitted.recommend([[], [3, 4]], k=n, exclude_seen=False)
        for row in items:  # every real item exactly once, empty history included
            assert sorted(row.tolist()) == sorted(fitted.vocab_.items.tolist())
        assert np.isfinite(scores).all()

    def test_recommend_new_histories_with_external_ids(self, fitted):
        items, scores = fitted.recommend([[3, 4, 5], ["10", "11"]], k=3, exclude_seen=True)  # "10" matches 10
        assert_valid_topk(items, scores, 3)
        assert not set(items[0]) & {3, 4, 5} and not set(items[1]) & {10, 11}
        if self.sequential:
            assert items[0][0] == 6 and items[1][0] == 12

    def test_recommend_among_given_items(self, fitted):
        items, scores = fitted.recommend([[3, 4, 5]], k=3, items=[20, 30, 6, 40])
        assert set(items[0]) <= {20, 30, 6, 40} and (items[0][0] == 6 or not self.sequential)
        items, scores = fitted.recommend([[3, 4, 5]], k=3, items=[5, 9])  # 5 is seen: one candidate left
        assert items[0][0] == 9 and np.isneginf(scores[0][1:]).all()
        with pytest.raises(DataError, match="unknown candidate"):
            fitted.recommend([[3]], k=1, items=["nope"])

    def test_unknown_history_items_are_ignored_and_reported(self, fitted, caplog):
        encoded, unknown = fitted.encode_histories([[3, "nope", 4, 999]])
        assert unknown == [["nope", 999]] and len(encoded[0]) == 2
        with caplog.at_level("WARNING"):
            items, _ = fitted.recommend([[3, "nope", 4]], k=1)
        assert "unknown" in caplog.text and (items[0][0] == 5 or not self.sequential)

    def test_recommend_users_frame(self, fitted):
        frame = fitted.recommend_users([0, 5], k=4)
        assert list(frame.columns) == ["user_id", "rank", "item_id", "score"]
        assert len(frame) == 8 and list(frame["rank"][:4]) == [1, 2, 3, 4]
        restricted = fitted.recommend_users([0], k=2, items=[1, 2, 3])
        assert set(restricted["item_id"]) <= {1, 2, 3}
        with pytest.raises(DataError, match="unknown user"):
            fitted.recommend_users(["ghost"], k=2)

    # ---- options -------------------------------------------------------------------------------
    def test_clone_get_params_set_params(self, fitted):
        clone = fitted.clone()
        assert type(clone) is type(fitted) and clone.get_params() == fitted.get_params()
        assert not hasattr(clone, "vocab_")  # unfitted
        assert type(fitted)(**fitted.get_params()).get_params() == fitted.get_params()
        if self.neural:
            assert clone.set_params(seed=7) is clone and clone.seed == 7 and fitted.seed == 0
        valid = ".*'seed'" if self.neural else ""
        with pytest.raises(ConfigError, match=rf"unknown option\(s\) \['colour'\].*valid ones are \[{valid}"):
            clone.set_params(colour="red")

    def test_bad_option_values_are_refused_naming_the_option(self):
        self.needs("neural")
        for bad in ({"batch_size": 0}, {"epochs": -1}, {"seed": "zero"}, {"time_budget": 0}):
            with pytest.raises(ConfigError, match=list(bad)[0]):
                self.make(**bad).fit(cyclic_frame(n_users=8))
        with pytest.raises(ConfigError, match=r"unknown device 'tpu'; choose from \['cpu', 'cuda'\]"):
            self.make(device="tpu").fit(cyclic_frame(n_users=8))
        if not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="CUDA is not available"):
                self.make(device="cuda").fit(cyclic_frame(n_users=8))

    def test_time_budget_stops_after_the_epoch_that_spends_it(self, cyclic_split):
        self.needs("neural")
        result = self.make(epochs=5, patience=5, time_budget=1e-6).fit(cyclic_split.train).train_result_
        assert len(result.epochs) == 1 and result.best_epoch == 1 and result.stop_reason == "time_budget"

    # ---- persistence ---------------------------------------------------------------------------
    def test_save_load_round_trip_is_identical(self, fitted, tmp_path):
        fitted.save(tmp_path / "run")
        loaded = seqrec.load(tmp_path / "run")
        assert type(loaded) is type(fitted) and loaded.get_params() == fitted.get_params()
        histories = [[1, 2, 3], [20, 21], [7]]
        a, sa = fitted.recommend(histories, k=5)
        b, sb = loaded.recommend(histories, k=5)
        assert np.array_equal(a, b) and np.array_equal(sa, sb)
        assert fitted.recommend_users("all", k=3).equals(loaded.recommend_users("all", k=3))
        if self.neural:
            assert loaded.train_result_.best_epoch == fitted.train_result_.best_epoch
        assert type(fitted).load(tmp_path / "run").get_params() == fitted.get_params()
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert config["model"] == fitted.name and set(config["files"]) >= {"weights.safetensors", "histories.npz"}
        known = Histories.from_lists([np.array([3, 4, 5])])  # scored as a known user where the model has users
        known = Histories(known.items, known.starts, known.ends, np.array([0]))
        assert torch.equal(fitted.score(known), loaded.score(known))
