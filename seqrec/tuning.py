"""``seqrec tune``: search a model's options on validation within a wall-clock budget, then refit the chosen
configuration on train + validation; the run directory holds that model, with a report of the search.

The engine is Optuna (TPE sampler, percentile pruner, SQLite storage). The search space is the model's own,
declared next to its options (``search=`` in :func:`seqrec.options.option`, ``SEARCH`` tables in
subclasses; :meth:`~seqrec.options.Options.search_space`); a space file overrides it option by option
(JSON or TOML: ``{"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "dim": [64, 128], "dropout": null}``,
``null`` removing an option from the search), and every model option given on the command line is fixed
(removed from the search).

How a search runs (``RUN_DIR/tune/``):

- The data are read and split once; every trial trains on the training split and is scored by its best
  validation NDCG@10 over its epochs (the training loop's early stopping). The test split is not read
  until the search has ended.
- The first trial is the model's defaults (``start_from_defaults``), so the report says what the search
  gained over them. Trials report their validation curve each epoch; with ``prune`` a trial whose best
  score so far falls below the ``prune_percentile`` (25th) percentile of the finished trials' scores at the
  same epoch is stopped (from epoch ``prune_after``, 6, once one trial has finished). Deviation from
  Optuna's usual median after a few epochs: on S3-Rec Beauty SASRec's defaults, the best trial there,
  start slowly and the median would have cut them at epochs 3 to 5, the 25th percentile from epoch 6
  does not (figures in the issue's note). Comparing with the first finished trial alone lets a short
  budget prune at all (on a large catalogue few trials finish).
- ``budget`` bounds the whole command: trials stop when the budget minus the estimated time of the finishing
  steps is spent (a running trial ends after its current epoch, so the command can overshoot by about one
  epoch, and by a refit that takes longer than its estimate); the first trial runs whatever the budget, and
  gets at most half of it. The finishing steps, after the search: a
  fresh seed of the best configuration trained as in the search (``overfit_check``: the gap between its
  validation score and the search's best is what choosing the maximum of many noisy trials adds), the
  best trial's model and the refit(s) evaluated once on the test split, and the refit on train + validation
  for the best trial's number of epochs (:meth:`~seqrec.models.base.NeuralRecommender.refit`; ``seeds`` > 1
  refits with seeds ``seed, seed + 1, ...`` and reports mean ± std; the run directory holds the first).
- Resumable: trials live in ``tune/study.db`` (SQLite); running the same command again continues the
  search with what is left of the budget (a trial cut short by the interruption is marked failed and its
  time is not counted); a study of other data, space or fixed options is refused.
- Report: ``tune/report.json`` (every trial: parameters, validation curve, seconds, state; the importance of
  each parameter by Optuna's PED-ANOVA evaluator, which needs no extra dependency; the overfit gap; the
  validation–test gap; test figures of the selection model and of the refit), ``tune/report.md`` and
  ``tune/search.png`` (validation score of each trial over the search's time, and the trials' curves).
  :func:`write_report` rewrites them from the study.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import optuna

from seqrec import rundir
from seqrec.data.splits import Split
from seqrec.errors import ConfigError, DataError
from seqrec.models import MODELS, NeuralRecommender, build, model_class
from seqrec.options import Search, between, option, search_from
from seqrec.runs import RunConfig, evaluate_test, finish_run, read_and_split, split_options
from seqrec.train import Callback

log = logging.getLogger(__name__)
METRIC = "NDCG@10"  # what the training loop early-stops on, and what the search maximises
TUNE_DIR, STUDY_FILE, STUDY_NAME, SELECTED, DEFAULTS = "tune", "study.db", "seqrec-tune", "selected", "defaults"
PRUNE_STARTUP_TRIALS = 1  # finished trials before the pruner compares
STARTUP_TRIALS = 5  # random trials before TPE models the scores (Optuna's 10 is a large share of a short budget)


class TuneConfig(RunConfig):
    """The options of a search (besides a run's: data, split, evaluation, output)."""

    DEFAULTS = {"refit": True}

    budget: str = option("1h", "wall-clock budget of the whole command: search, overfit check and refit (e.g. "
                               "45m, 2h, 1h30m, or seconds)", group="tune")
    space: str | None = option(None, "JSON or TOML file of search ranges overriding the model's, option by option",
                               group="tune")
    trials: int | None = option(None, "at most this many trials (default: as many as the budget allows)",
                                check=between(1, none_ok=True), group="tune")
    prune: bool = option(True, "stop a trial whose best validation score so far falls below a percentile of "
                               "the finished trials' scores at the same epoch", group="tune")
    prune_percentile: float = option(25.0, "the percentile --prune compares with (50: the median)",
                                     check=between(1, 99), group="tune")
    prune_after: int = option(6, "the first epoch at which a trial can be pruned", check=between(1), group="tune")
    seeds: int = option(1, "refits of the chosen configuration, seeds seed, seed+1, ... (test mean ± std)",
                        check=between(1), group="tune")
    overfit_check: bool = option(True, "train the chosen configuration again with a fresh seed and report how "
                                       "far its validation score falls below the search's best", group="tune")
    start_from_defaults: bool = option(True, "the first trial is the model's defaults", group="tune")
    sampler_seed: int = option(0, "seed of the search's sampler", group="tune")

    def check(self) -> None:
        super().check()
        parse_duration(self.budget)
        if not self.out:
            raise ConfigError("no run directory: give --out RUN_DIR")
        if self.devices != 1:
            raise ConfigError("tune trains its trials one after another in one process: use --devices 1")


def parse_duration(text) -> float:
    """Seconds in ``"90"``, ``"45s"``, ``"30m"``, ``"2h"``, ``"1h30m"``."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", value)
        if not parts or re.sub(r"\s", "", value) != "".join(f"{n}{u}" for n, u in parts):
            raise ConfigError(f"budget {text!r} is not a duration: give seconds or e.g. 45m, 2h, 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"budget {text!r} must be positive")
    return seconds


def read_space(path) -> dict:
    """A space file (JSON or TOML): option -> null | [values] | {choices | low, high[, log, step][, when]}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such search space file")
    try:
        values = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of options")
    try:
        return {name: search_from(name, spec) for name, spec in values.items()}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def search_space(model: str, space_file=None, fixed: dict | None = None) -> dict[str, Search]:
    """The space searched for ``model``: its declared space, overridden by ``space_file``, less the ``fixed``
    options. Conditions (``when``) must name options of the model."""
    cls = model_class(model)
    space = cls.search_space()
    if space_file:
        overrides = read_space(space_file)
        cls.check_names(overrides)
        space.update(overrides)
        space = {name: spec for name, spec in space.items() if spec is not None}
    space = {name: spec for name, spec in space.items() if name not in (fixed or {})}
    types = cls.option_types()
    for name, spec in space.items():
        cls.check_names(spec.conditions)
        kind = types[name]
        if spec.choices is None and kind not in (int, float):
            raise ConfigError(f"search space: {name} is {getattr(kind, '__name__', kind)}: give it choices, "
                              "not a range")
        for value in spec.choices or (spec.low, spec.high):  # every value must be one the option accepts
            try:
                cls(**{name: value}).validate()
            except ConfigError as exc:
                raise ConfigError(f"search space: {name}: {exc}") from None
    return space


# ---- the search --------------------------------------------------------------------------------------
def tune(**options) -> dict:
    """``seqrec tune`` from Python: options as the command's flags (run, tune and model options, e.g.
    ``tune(data="log.csv", model="sasrec", budget="2h", out="runs/tuned", patience=5)``); returns the
    report (also written to ``RUN_DIR/tune/report.json``)."""
    config, fixed = split_options(options, TuneConfig)
    return tune_run(config, fixed)


def tune_run(config: TuneConfig, fixed: dict | None = None) -> dict:
    """Search ``config.model``'s options (those in ``fixed`` stay fixed), refit the best, write the run
    directory and the report (see the module docstring); returns the report."""
    config.check()
    fixed = dict(fixed or {})
    cls = model_class(config.model)
    cls.check_names(fixed)
    if not issubclass(cls, NeuralRecommender):
        raise ConfigError(f"{config.model} has no options to search: train it with seqrec train")
    space = search_space(config.model, config.space, fixed)
    if not space:
        raise ConfigError(f"nothing to search for {config.model}: every option of its space is fixed "
                          f"({sorted(cls.search_space())})")
    build(config.model, fixed).validate()
    budget = parse_duration(config.budget)
    seed = fixed.get("seed", cls().seed)
    split = read_and_split(config, seed)
    directory = Path(config.out) / TUNE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    signature = {"model": config.model, "data": split.log.summary(), "split": split.card(),
                 "filters": config.filters(), "space": {n: s.describe() for n, s in space.items()},
                 "fixed": fixed, "metric": METRIC}
    study, storage = open_study(directory, signature, config)
    clock = _Clock(budget, study.user_attrs.get("spent_seconds", 0.0))
    search = _Search(config, cls, space, fixed, split, (study, storage), clock, directory)
    search.run()
    return search.finish()


def open_study(directory: Path, signature: dict, config: TuneConfig) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The study in ``directory`` (created, or resumed if it holds a search of the same data, space and fixed
    options) and its storage; trials left running by an interruption are marked failed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(directory / STUDY_FILE).resolve()}")
    pruner = optuna.pruners.PercentilePruner(  # Optuna's percentile is the share kept (for maximising: the top
        100 - config.prune_percentile,  # 75 %); steps are epochs (from 1), epoch prune_after the first judged
        n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=config.prune_after) \
        if config.prune else optuna.pruners.NopPruner()
    sampler = optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, seed=config.sampler_seed)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)
    saved = study.user_attrs.get("signature")
    if saved is None:
        study.set_user_attr("signature", json.loads(json.dumps(signature, default=str)))
        return study, storage
    saved, now = json.dumps(saved, sort_keys=True), json.dumps(signature, sort_keys=True, default=str)
    if saved != now:
        differ = [k for k in signature if json.dumps(json.loads(saved).get(k), sort_keys=True) !=
                  json.dumps(json.loads(now).get(k), sort_keys=True)]
        raise ConfigError(f"{directory / STUDY_FILE} holds a search of other {', '.join(differ)}: give another --out, "
                          f"or remove {directory} to start over")
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    finished = [t for t in study.trials if t.state.is_finished()]
    log.info("resuming the search in %s: %d finished trials, %.0f s of the budget spent%s", directory,
             len(finished), study.user_attrs.get("spent_seconds", 0.0),
             f"; {len(stale)} interrupted trial(s) marked failed" if stale else "")
    return study, storage


class _Clock:
    """The budget: seconds spent before this process (from the study) plus this process's."""

    def __init__(self, budget: float, spent_before: float):
        self.budget, self.before, self.start = budget, spent_before, time.perf_counter()

    @property
    def spent(self) -> float:
        return self.before + time.perf_counter() - self.start

    def left(self, reserve: float = 0.0) -> float:
        return self.budget - reserve - self.spent


class _Report(Callback):
    """Reports each epoch's validation score to the trial; asks the pruner whether to stop."""

    def __init__(self, trial: optuna.Trial, prune: bool):
        self.trial, self.prune, self.pruned_at = trial, prune, None

    def on_epoch(self, record):
        value = record.valid.get(METRIC)
        if value is None:
            return None
        self.trial.report(value, record.epoch)
        if self.prune and self.trial.should_prune():
            self.pruned_at = record.epoch
            return True
        return None


class _Search:
    """One search: its trials (:meth:`run`), then the finishing steps and the report (:meth:`finish`)."""

    def __init__(self, config: TuneConfig, cls, space: dict[str, Search], fixed: dict, split: Split, study,
                 clock: _Clock, directory: Path):
        self.config, self.cls, self.space, self.fixed, self.split = config, cls, space, fixed, split
        (self.study, self.storage), self.clock, self.directory = study, clock, directory
        self.defaults = {**cls().get_params(), **fixed}
        self.ratio = split.train_valid_lengths.sum() / max(split.train_lengths.sum(), 1)

    # ---- the finishing steps' time, from the best trial so far -------------------------------------
    def reserve(self) -> float:
        """Seconds kept for the finishing steps: the overfit check (a trial's time) and the refits (the best
        trial's time to its best epoch, scaled to train + validation); half the budget before any trial."""
        best = self._best()
        if best is None:
            return self.clock.budget / 2
        check = best.user_attrs.get("seconds", 0.0) if self.config.overfit_check else 0.0
        return min(self.clock.budget / 2, check + self._refit_seconds(best))

    def _refit_seconds(self, best) -> float:
        """The refits' estimated time: the best trial's time to its best epoch, scaled to train + validation."""
        return self.config.seeds * best.user_attrs.get("seconds_to_best", 0.0) * self.ratio if self.config.refit else 0.0

    def _best(self):
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return max(done, key=lambda t: t.value) if done else None

    def _epoch_seconds(self) -> float:
        times = [s for t in self.study.get_trials(deepcopy=False) for s in t.user_attrs.get("epoch_seconds", [])]
        return float(np.median(times)) if times else 0.0

    # ---- trials ---------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.config.start_from_defaults and not self.study.trials:
            searched = [n for n, spec in self.space.items()  # (an option whose condition fails keeps its default)
                        if all(self.defaults.get(k) in v for k, v in spec.conditions.items())]
            outside = [n for n in searched if not _admits(self.space[n], self.defaults[n])]
            if outside:
                log.info("no trial of the defaults: %s outside the space", ", ".join(
                    f"{n}={self.defaults[n]!r}" for n in outside))
            else:
                self.study.enqueue_trial({n: self.defaults[n] for n in searched}, user_attrs={"defaults": True})
        n_done = len([t for t in self.study.trials if t.state.is_finished()])
        n_trials = None if self.config.trials is None else max(0, self.config.trials - n_done)
        log.info("searching %d options of %s (%s) within a budget of %.0f s (%.0f s spent); %s", len(self.space),
                 self.config.model, ", ".join(self.space), self.clock.budget, self.clock.spent,
                 f"fixed: {self.fixed}" if self.fixed else "nothing fixed")
        if n_trials == 0 or not self._time_for_a_trial():
            return
        self.study.optimize(self._objective, n_trials=n_trials, callbacks=[self._after_trial],
                            catch=(ConfigError, DataError), gc_after_trial=True)

    def _time_for_a_trial(self) -> bool:
        """Another trial starts if the budget left (less the finishing steps' time) holds two of the typical
        epochs so far; the first trial always runs (the command's result needs one)."""
        if self._best() is None:
            return True
        return self.clock.left(self.reserve()) > max(2 * self._epoch_seconds(), 1.0)

    def _after_trial(self, study: optuna.Study, trial) -> None:
        study.set_user_attr("spent_seconds", self.clock.spent)
        best = self._best()
        states = {"COMPLETE": f"{METRIC} {trial.value:.4f}" if trial.value is not None else "no score",
                  "PRUNED": f"pruned after epoch {len(trial.intermediate_values)}",
                  "FAIL": f"failed: {trial.user_attrs.get('error', 'see the log')}"}
        text = states.get(trial.state.name, trial.state.name)
        log.info("trial %d: %s in %.0f s (best %s); %.0f s of %.0f s spent", trial.number, text,
                 trial.user_attrs.get("seconds", 0.0),
                 "none yet" if best is None else f"{best.value:.4f}, trial {best.number}", self.clock.spent,
                 self.clock.budget)
        if not self._time_for_a_trial():
            study.stop()

    def params_of(self, trial: optuna.Trial) -> dict:
        """The options of a trial: the fixed ones, and a value for each searched option whose conditions hold
        (conditions are decided first; an option whose condition fails keeps its default)."""
        values, pending = {}, dict(self.space)
        types = self.cls.option_types()
        while pending:
            ready = [n for n, s in pending.items() if not set(s.conditions) & set(pending)]
            if not ready:
                raise ConfigError(f"search space: the conditions of {sorted(pending)} depend on each other")
            for name in ready:
                spec = pending.pop(name)
                current = {**self.defaults, **values}
                if all(current.get(k) in v for k, v in spec.conditions.items()):
                    values[name] = _suggest(trial, name, spec, types[name])
        return {**self.fixed, **values}

    def _objective(self, trial: optuna.Trial) -> float:
        params = self.params_of(trial)
        limit = max(1.0, self.clock.left(self.reserve()))
        user_limit = self.fixed.get("time_budget")
        model = build(self.config.model, {**params, "progress": False,
                                          "time_budget": limit if user_limit is None else min(limit, user_limit)})
        reporter = _Report(trial, self.config.prune)
        tick = time.perf_counter()
        try:  # an invalid combination, or one the memory plan refuses, fails this trial only
            model.validate()
            with _quiet_training():
                model.fit(self.split.train, valid=self.split.valid, callbacks=[reporter])
        except ConfigError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        seconds = time.perf_counter() - tick
        result = model.train_result_
        records = result.epochs
        best_record = next((r for r in records if r.epoch == result.best_epoch), records[-1] if records else None)
        trial.set_user_attr("epoch_seconds", [r.seconds for r in records])
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("seconds_to_best", best_record.elapsed if best_record else 0.0)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("stop_reason", "pruned" if reporter.pruned_at else result.stop_reason)
        if reporter.pruned_at:
            raise optuna.TrialPruned()
        if result.best_metric is None:
            trial.set_user_attr("error", "no validation score")
            raise DataError("no validation score: the validation split is empty")
        if trial.user_attrs.get("defaults"):  # the defaults: tested beside the best
            rundir.save(model, self.directory / DEFAULTS)
        best = self._best()
        if best is None or result.best_metric > best.value:  # keep the best trial's model for the finishing steps
            rundir.save(model, self.directory / SELECTED)
            self.study.set_user_attr("selected_trial", trial.number)
        return result.best_metric

    # ---- after the search -------------------------------------------------------------------------------
    def finish(self) -> dict:
        best = self._best()
        if best is None:
            write_report(self.config.out)
            raise ConfigError(f"no trial finished within the budget of {self.clock.budget:.0f} s (pruned or failed: "
                              f"see {self.directory / 'report.md'}); give a larger --budget or other options")
        params = {**self.fixed, **best.params}
        log.info("best: trial %d, validation %s %.4f, %s", best.number, METRIC, best.value, best.params)
        selected = self._selected(best, params)
        final = {"best_trial": best.number, "params": params}
        if self.config.overfit_check:
            final["overfit_check"] = self._overfit_check(best, params)
        test = self.split.test  # the test split: read once, now, by the chosen configuration
        final["selection_test"] = evaluate_test(selected, test, self.config, self.split.card())["metrics"]
        final["selection_valid"] = best.value
        final["valid_test_gap"] = best.value - final["selection_test"][METRIC]
        if (self.directory / DEFAULTS).is_dir():
            defaults = rundir.load(self.directory / DEFAULTS, MODELS)
            final["defaults_test"] = evaluate_test(defaults, test, self.config, self.split.card())["metrics"]
        config = self.config
        if config.refit:
            refits, tick = [], time.perf_counter()
            for index in range(config.seeds):
                seed = selected.seed + index
                log.info("refit on training + validation data for %d epochs (seed %d)",
                         selected.train_result_.best_epoch, seed)
                start = time.perf_counter()
                model = selected.refit(self.split.train_valid, seed=seed)
                seconds = time.perf_counter() - start
                if index == 0:
                    first, first_seconds = model, seconds
                else:
                    refits.append({"seed": seed, "seconds": seconds,
                                   "test": evaluate_test(model, test, config, self.split.card())["metrics"]})
            self._close()
            result = finish_run(first, config, self.split, first_seconds, best.user_attrs.get("seconds"),
                                extra={"tune": {"best_trial": best.number, "report": f"{TUNE_DIR}/report.json"}})
            refits.insert(0, {"seed": selected.seed, "seconds": first_seconds, "test": result["metrics"]})
            final["refit"] = {"epochs": selected.train_result_.best_epoch, "runs": refits,
                              **_mean_std([r["test"] for r in refits]), "seconds": time.perf_counter() - tick}
        else:
            self._close()
            result = finish_run(selected, config, self.split, best.user_attrs.get("seconds", 0.0),
                                extra={"tune": {"best_trial": best.number, "report": f"{TUNE_DIR}/report.json"}})
            final["test"] = result["metrics"]
        final["spent_seconds"] = self.clock.spent
        rundir.write_json(self.directory, "final.json", final)
        return write_report(Path(config.out))

    def _close(self) -> None:
        """Record the time spent and let go of the study's database: saving the run directory replaces the
        folder it lies in (the study moves with it; :func:`write_report` reopens it)."""
        self.study.set_user_attr("spent_seconds", self.clock.spent)
        self.storage.engine.dispose()

    def _selected(self, best, params: dict) -> NeuralRecommender:
        """The best trial's model (kept when it finished), or the best configuration trained again."""
        path = self.directory / SELECTED
        if self.study.user_attrs.get("selected_trial") == best.number and path.is_dir():
            model = rundir.load(path, MODELS)
            if all(model.get_params().get(k) == v for k, v in params.items() if k != "time_budget"):
                return model
        log.info("training the best configuration again (its model was not kept)")
        model = build(self.config.model, {**params, "progress": False})
        return model.fit(self.split.train, valid=self.split.valid)

    def _overfit_check(self, best, params: dict) -> dict:
        """The best configuration with a fresh seed, selected on validation as the trials were, within what the
        budget leaves beside the refits; skipped (with the reason) when that cannot reach the best trial's best
        epoch."""
        seed = params.get("seed", self.defaults["seed"]) + 1
        refit, needed = self._refit_seconds(best), best.user_attrs.get("seconds_to_best", 0.0)
        limit = self.clock.left(refit)
        if limit < needed:
            reason = (f"skipped: {max(limit, 0.0):.0f} s of the budget are left beside the refit's estimated "
                      f"{refit:.0f} s, and the best configuration took {needed:.0f} s to reach its best epoch")
            log.info("overfit check %s", reason)
            return {"seed": seed, "best_valid": best.value, "skipped": reason}
        log.info("overfit check: the best configuration with seed %d", seed)
        model = build(self.config.model, {**params, "seed": seed, "progress": False, "time_budget": limit})
        tick = time.perf_counter()
        model.fit(self.split.train, valid=self.split.valid)
        fresh = model.train_result_.best_metric
        return {"seed": seed, "best_valid": best.value, "fresh_seed_valid": fresh, "gap": best.value - fresh,
                "relative_gap": (best.value - fresh) / best.value if best.value else None,
                "best_epoch": model.train_result_.best_epoch, "stop_reason": model.train_result_.stop_reason,
                "seconds": time.perf_counter() - tick}


@contextlib.contextmanager
def _quiet_training():
    """Trials log one line each (:meth:`_Search._after_trial`), not one per epoch (unless debugging)."""
    loggers = [logging.getLogger(name) for name in ("seqrec.train", "seqrec.models")]
    levels = [logger.level for logger in loggers]
    if not log.isEnabledFor(logging.DEBUG):
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _admits(spec: Search, value) -> bool:
    if spec.choices is not None:
        return value in spec.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and spec.low <= value <= spec.high


def _suggest(trial: optuna.Trial, name: str, spec: Search, kind):
    if spec.choices is not None:
        return trial.suggest_categorical(name, list(spec.choices))
    if kind is int:
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def _mean_std(results: list[dict]) -> dict:
    names = results[0].keys()
    values = {n: np.array([r[n] for r in results], dtype=float) for n in names}
    return {"mean": {n: float(v.mean()) for n, v in values.items()},
            "std": {n: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()}}


# ---- the report --------------------------------------------------------------------------------------
def write_report(run_dir) -> dict:
    """Write ``tune/report.json``, ``report.md`` and ``search.png`` of the search in ``run_dir`` from its study
    (and ``final.json``, once the search has finished); returns the report."""
    directory = Path(run_dir) / TUNE_DIR
    if not (directory / STUDY_FILE).is_file():
        raise DataError(f"{directory / STUDY_FILE}: no search here (seqrec tune writes it)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{(directory / STUDY_FILE).resolve()}")
    final_path = directory / "final.json"
    final = json.loads(final_path.read_text()) if final_path.is_file() else {}
    trials = [_trial_record(t) for t in study.trials]
    signature = study.user_attrs.get("signature", {})
    report = {"model": signature.get("model"), "data": signature.get("data"), "split": signature.get("split"),
              "metric": METRIC, "space": signature.get("space"), "fixed": signature.get("fixed"),
              "spent_seconds": study.user_attrs.get("spent_seconds"),
              "n_trials": {state: sum(t["state"] == state for t in trials)
                           for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
              "defaults_trial": next((_trial_record(t) for t in study.trials if t.user_attrs.get("defaults")), None),
              "importance": _importance(study), **final, "trials": trials}
    rundir.write_json(directory, "report.json", report)
    (directory / "report.md").write_text(_markdown(report))
    _plot(report, directory / "search.png")
    return report


def _trial_record(trial) -> dict:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "curve": [trial.intermediate_values[epoch] for epoch in sorted(trial.intermediate_values)],
            "best_epoch": attrs.get("best_epoch"),
            "stop_reason": attrs.get("stop_reason"), "seconds": attrs.get("seconds"),
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            **({"error": attrs["error"]} if "error" in attrs else {})}


def _importance(study: optuna.Study) -> dict:
    """Each parameter's share of the variation of the score (Optuna's PED-ANOVA; it needs a few finished
    trials; parameters present in every finished trial)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 4:
        return {"note": f"needs at least 4 finished trials, has {len(done)}"}
    try:
        with warnings.catch_warnings():  # (a choice tried in fewer than 2 trials: the report says how many ran)
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as exc:
        return {"note": f"not computed: {exc}"}
    return {name: float(value) for name, value in values.items()}


def _markdown(report: dict) -> str:
    data, n = report.get("data") or {}, report["n_trials"]
    lines = [f"# seqrec tune: {report['model']} on {data.get('source')}", "",
             f"{data.get('n_users')} users, {data.get('n_items')} items, {data.get('n_events')} events; "
             f"selection on validation {report['metric']}; {n['COMPLETE']} trials finished, {n['PRUNED']} pruned, "
             f"{n['FAIL']} failed in {report.get('spent_seconds') or 0:.0f} s.", ""]
    if "best_trial" in report:
        lines += ["## Result", "", "| | validation | test |", "|---|---|---|"]
        defaults = report.get("defaults_trial")
        if defaults and defaults["value"] is not None:
            tested = report.get("defaults_test", {}).get(report["metric"])
            tested = "" if tested is None else f"{tested:.4f}"
            lines.append(f"| defaults (trial {defaults['number']}) | {defaults['value']:.4f} | {tested} |")
        sel = report["selection_test"]
        lines.append(f"| best trial {report['best_trial']} (selection model) | {report['selection_valid']:.4f} | "
                     f"{sel[report['metric']]:.4f} |")
        if "refit" in report:
            refit = report["refit"]
            spread = "" if len(refit["runs"]) < 2 else \
                f" ± {refit['std'][report['metric']]:.4f} ({len(refit['runs'])} seeds)"
            lines.append(f"| refit on train + validation, {refit['epochs']} epochs (the run directory) | | "
                         f"{refit['mean'][report['metric']]:.4f}{spread} |")
        lines += ["", f"Validation–test gap of the selection model: {report['valid_test_gap']:+.4f}."]
        if report.get("overfit_check"):
            lines.append(overfit_text(report["overfit_check"]))
        lines += ["", "Chosen options: `" + json.dumps(report["params"], default=str) + "`", ""]
    importance = report.get("importance") or {}
    lines += ["## Importance of each option", ""]
    if "note" in importance:
        lines.append(importance["note"])
    else:
        lines += ["| option | importance |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in importance.items()]
    lines += ["", "## Trials", "", "| trial | state | validation | best epoch | epochs | seconds | options |",
              "|---|---|---|---|---|---|---|"]
    for t in report["trials"]:  # a pruned trial: its best score before it was stopped
        scores = [v for v in t["curve"] if v is not None]
        value = f"{max(scores):.4f}" if scores else ""
        options = ", ".join(f"{k}={_short(v)}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['state'].lower()}{' (' + t['error'] + ')' if 'error' in t else ''} | "
                     f"{value} | {t['best_epoch'] or ''} | {len(t['curve'])} | {(t['seconds'] or 0):.0f} | {options} |")
    return "\n".join(lines) + "\n\n![the search](search.png)\n"


def overfit_text(check: dict) -> str:
    """The overfit check's outcome in a sentence (the report's, and ``seqrec tune``'s last lines)."""
    if "skipped" in check:
        return f"Overfit check {check['skipped']}."
    text = (f"Overfit check: the best configuration with a fresh seed (seed {check['seed']}) scores "
            f"{check['fresh_seed_valid']:.4f} on validation against the search's {check['best_valid']:.4f} (gap "
            f"{check['gap']:+.4f}, {check['relative_gap']:+.1%}): a positive gap is what choosing the best of many "
            "noisy trials added to the validation score.")
    if check.get("stop_reason") == "time_budget":
        text += (f" (The fresh seed was stopped by the budget, its best epoch {check['best_epoch']}: it may not "
                 "have reached its best, so its score is a lower bound and the gap an upper bound.)")
    return text


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else value


def _plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in report["trials"] if t["curve"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    clock, best, xs, ys = 0.0, -math.inf, [], []
    for t in report["trials"]:
        clock += t["seconds"] or 0.0
        score = max((v for v in t["curve"] if v is not None), default=None)
        if score is None:
            continue
        marker = {"COMPLETE": "o", "PRUNED": "x"}.get(t["state"], ".")
        left.scatter(clock / 60, score, marker=marker, color="C0" if t["state"] == "COMPLETE" else "C3")
        if t["state"] == "COMPLETE":
            best = max(best, score)
            xs.append(clock / 60)
            ys.append(best)
    if xs:
        left.step(xs, ys, where="post", color="C2", label="best so far")
        left.legend()
    left.set(xlabel="search time (min)", ylabel=f"validation {report['metric']}", title="trials (x: pruned)")
    for t in trials:
        right.plot(range(1, len(t["curve"]) + 1), t["curve"], color="C0" if t["state"] == "COMPLETE" else "C3",
                   alpha=0.5, linewidth=1)
    right.set(xlabel="epoch", ylabel=f"validation {report['metric']}", title="validation curves (red: pruned)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
