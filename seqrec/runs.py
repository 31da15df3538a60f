"""A run: read data, split, fit, evaluate on the test split, save everything to a run directory.

:class:`RunConfig` declares the options of the run itself (data, split, evaluation, outputs); the model's
options are the model's own (declared in its class) and travel as ``params``. A config file is flat: its
keys are run options or options of the chosen model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seqrec import distributed, rundir
from seqrec.data.interactions import CORES, read_interactions
from seqrec.data.splits import Split, leave_one_out, session_split, temporal_split
from seqrec.errors import ConfigError
from seqrec.evaluate import PROTOCOLS, SAMPLINGS, evaluate, perturbation_test
from seqrec.metrics import TIE_POLICIES
from seqrec.models import MODELS, Recommender, build, model_class
from seqrec.options import Options, between, option

log = logging.getLogger(__name__)
SPLITS = ("loo", "temporal", "session")


class LogOptions(Options):
    """How an interaction log is read and filtered (shared by a run and the sequentiality audit)."""

    user_col: str = option("user_id", "user column", group="data")
    item_col: str = option("item_id", "item column", group="data")
    time_col: str = option("timestamp", "timestamp column (numbers or datetimes)", group="data")
    sep: str | None = option(None, "field separator (default: by file extension)", group="data")
    min_user_events: int = option(0, "drop users with fewer events", check=between(0), group="data")
    min_item_events: int = option(0, "drop items with fewer events", check=between(0), group="data")
    core: str = option("iterative", "k-core filtering: repeat until stable, or one pass", choices=CORES,
                       group="data")
    drop_repeats: bool = option(False, "drop an event repeating the user's previous item", group="data")

    def filters(self) -> dict:
        """The filtering options, as :func:`~seqrec.data.interactions.read_interactions` takes them."""
        return {"min_user_events": self.min_user_events, "min_item_events": self.min_item_events,
                "core": self.core, "drop_repeats": self.drop_repeats}

    def read(self, source, filtered: bool = True):
        """``source`` read with these columns (and filters, unless ``filtered`` is False)."""
        return read_interactions(source, self.user_col, self.item_col, self.time_col, sep=self.sep,
                                 **(self.filters() if filtered else {}))


class RunConfig(LogOptions):
    """The options of a run (the model's options are its own; see :func:`split_options`)."""

    data: str = option("", "interaction log: CSV, TSV or Parquet (optionally .gz)", group="data")
    split: str = option("loo", "leave-one-out, global temporal, or session-based", choices=SPLITS, group="split")
    quantile: float = option(0.9, "temporal split: the timestamp quantile of the boundary",
                             check=between(0, 1, low_open=True, high_open=True), group="split")
    valid_users: int | None = option(None, "validate on this many random users (default: all)",
                                     check=between(1, none_ok=True), group="split")
    test_fraction: float = option(0.1, "session split: share of sessions tested",
                                  check=between(0, 1, low_open=True, high_open=True), group="split")
    days: float | None = option(None, "session split: test the sessions of the last days instead",
                                check=between(0, low_open=True, none_ok=True), group="split")
    refit: bool = option(False, "after early stopping, retrain on train + validation for the best epochs",
                         group="split")
    k: list[int] = option((10, 20), "cut-offs of the metrics", group="evaluation")
    exclude_seen: bool | None = option(None, "filter the history's items out of rankings (default: the "
                                             "split's protocol; loo/temporal yes, session no)", group="evaluation")
    tie_policy: str = option("expected", "how tied scores rank", choices=TIE_POLICIES, group="evaluation")
    protocol: str = option("full", "full ranking, or sampled negatives (labelled as such)", choices=PROTOCOLS,
                           group="evaluation")
    sampling: str = option("uniform", "sampled protocol: how negatives are drawn", choices=SAMPLINGS,
                           group="evaluation")
    eval_negatives: int = option(100, "sampled protocol: negatives per target", check=between(1), group="evaluation")
    out: str = option("", "the run directory to write", group="output")
    recommendations: str | None = option(None, "also write top-k for every user to this CSV/Parquet file",
                                         group="output")
    rec_k: int = option(10, "items per user in --recommendations", check=between(1), group="output")
    model: str = option("sasrec", "the model", choices=MODELS, group="")
    devices: int = option(1, "processes training data-parallel through torch.distributed (torchrun; one per GPU "
                             "with --device cuda, Gloo CPU processes otherwise)", check=between(1), group="training")

    def check(self) -> None:
        self.validate()
        if not self.data:
            raise ConfigError("no data: give --data PATH (or 'data' in the config file)")


def split_options(values: dict, config_class: type[RunConfig] | None = None) -> tuple[RunConfig, dict]:
    """A flat dict of options (config file + flags) -> the run's options (a ``config_class``, default
    :class:`RunConfig`) and the model's; an option that is neither the run's nor the chosen model's fails,
    listing the valid ones."""
    config_class = config_class or RunConfig
    run_names = set(config_class.option_fields())
    run = config_class(**{k: v for k, v in values.items() if k in run_names})
    params = {k: v for k, v in values.items() if k not in run_names}
    cls = model_class(run.model)
    unknown = sorted(set(params) - set(cls.option_fields()))
    if unknown:
        raise ConfigError(f"option(s) {unknown} are neither run options nor options of model '{run.model}'; "
                          f"its options: {list(cls.option_fields())}; run options: {sorted(run_names)}")
    return run, params


def read_and_split(config: RunConfig, seed: int = 0) -> Split:
    log_ = config.read(config.data)
    log.info("%s: %d events, %d users, %d items", log_.source, log_.n_events, log_.n_users, log_.n_items)
    if config.split == "loo":
        return leave_one_out(log_, config.valid_users, seed)
    if config.split == "session":
        return session_split(log_, config.test_fraction, config.days)
    return temporal_split(log_, config.quantile, config.valid_users, seed)


def train_run(config: RunConfig, params: dict | None = None) -> tuple[Recommender, dict]:
    """Fit the model ``config.model`` with ``params``, evaluate it on the test split, save the run directory
    ``config.out``; returns the model and the result. The split's random choices use the model's seed."""
    config.check()
    if not config.out:
        raise ConfigError("no run directory: give --out RUN_DIR")
    model = build(config.model, params)
    model.validate()
    seed = getattr(model, "seed", 0)
    split = read_and_split(config, seed)
    valid = split.valid if config.exclude_seen is None else _with_protocol(split.valid, config.exclude_seen)
    tick = time.perf_counter()
    model.fit(split.train, valid=valid)
    selection_seconds = time.perf_counter() - tick
    if config.refit:
        log.info("refit on training + validation data%s", "" if getattr(model, "train_result_", None) is None else
                 f" for {model.train_result_.best_epoch} epochs (the best of the selection run)")
        tick = time.perf_counter()
        model = model.refit(split.train_valid)
    fit_seconds = time.perf_counter() - tick
    if not distributed.is_main():  # the other processes of a distributed run only trained
        return model, {}
    return model, finish_run(model, config, split, fit_seconds, selection_seconds if config.refit else None)


def finish_run(model: Recommender, config: RunConfig, split: Split, fit_seconds: float,
               selection_seconds: float | None = None, extra: dict | None = None) -> dict:
    """Save the fitted ``model`` as the run directory ``config.out`` (with the split), evaluate it on the
    test split, write metrics.json (with ``extra`` entries) and the recommendations asked for; returns the
    result. ``selection_seconds`` is given when ``model`` is a refit (:meth:`~Recommender.refit`)."""
    model.set_histories(split.log)  # recommendations for known users use everything known about them
    run = {"run": config.get_params(), "split": split.card(), "data": split.log.summary(), "filters": split.log.report}
    out = rundir.save(model, config.out, split=split, run=run)
    result = evaluate_test(model, split.test, config, split.card())
    result["training"] = training_summary(model, fit_seconds)
    if selection_seconds is not None:  # the model evaluated is the refit; its epochs were chosen by this run
        result["training"].update(refit_on="train+valid", n_train_valid_events=int(split.train_valid_lengths.sum()),
                                  selection={**model.refit_of_, "wall_seconds": selection_seconds})
    rundir.write_json(out, "metrics.json", {**result, **(extra or {})})
    if config.recommendations:
        write_recommendations(model, "all", config.rec_k, _exclude_seen(config, split), config.recommendations)
    return result


def training_summary(model: Recommender, wall_seconds: float) -> dict:
    """Epochs, stop reason and seconds of a fitted model's training (a model without a training loop has
    only its wall time)."""
    result = getattr(model, "train_result_", None)
    if result is None or not result.epochs:
        return {"wall_seconds": wall_seconds}
    return {"best_epoch": result.best_epoch, "epochs_run": len(result.epochs), "stop_reason": result.stop_reason,
            "train_seconds": sum(r.seconds for r in result.epochs), "wall_seconds": result.epochs[-1].elapsed}


def _with_protocol(evalset, exclude_seen: bool):
    return replace(evalset, exclude_seen=exclude_seen)


def _exclude_seen(config: RunConfig, split: Split) -> bool:
    return split.test.exclude_seen if config.exclude_seen is None else config.exclude_seen


def _saved_run(run_dir, overrides: dict) -> tuple[dict, RunConfig]:
    """A run directory's saved config, and its run options with ``overrides``, validated."""
    saved = rundir.read_config(Path(run_dir), MODELS)
    config = RunConfig(**{**{k: v for k, v in saved.get("run", {}).items() if k in RunConfig.option_fields()},
                          **overrides})
    config.validate()
    return saved, config


def evaluate_run(run_dir, config: RunConfig | None = None, model: Recommender | None = None, **overrides) -> dict:
    """Evaluate a run directory's model on its test split (options default to the run's own)."""
    run_dir = Path(run_dir)
    if config is None:
        saved, config = _saved_run(run_dir, overrides)
    else:
        saved = rundir.read_config(run_dir, MODELS)
    model = model or rundir.load(run_dir, MODELS)
    return evaluate_test(model, rundir.load_split(run_dir, model.vocab_).test, config, saved.get("split"))


def perturbation_run(run_dir, perturb: str = "shuffle", n_bootstrap: int = 1000, seed: int = 0,
                     **overrides) -> dict:
    """:func:`seqrec.evaluate.perturbation_test` of a run directory's model on its test split: its metrics
    with the true and the ``perturb``-ed histories, the relative changes with bootstrap intervals, and
    Jaccard@10 (the full protocol, with the run's cut-offs, seen filtering and tie policy)."""
    saved, config = _saved_run(run_dir, overrides)
    model = rundir.load(run_dir, MODELS)
    test = rundir.load_split(run_dir, model.vocab_).test
    result = perturbation_test(model, test, perturb, k=config.k, n_bootstrap=n_bootstrap, seed=seed,
                               exclude_seen=config.exclude_seen, tie_policy=config.tie_policy,
                               split=saved.get("split"))
    result.pop("rows")
    return result


def evaluate_test(model: Recommender, test, config: RunConfig, split_card: dict | None) -> dict:
    """``model`` on the test set with the run's evaluation options."""
    return evaluate(model, test, k=config.k, protocol=config.protocol, exclude_seen=config.exclude_seen,
                    tie_policy=config.tie_policy, n_negatives=config.eval_negatives, sampling=config.sampling,
                    seed=getattr(model, "seed", 0), split=split_card)


def write_recommendations(model: Recommender, users, k: int, exclude_seen: bool, path, items=None) -> Path:
    path = Path(path)
    if path.suffix.lower() not in {".parquet", ".pq", ".csv", ".gz"}:
        raise ConfigError(f"unknown output type {path.suffix!r} for {path}; "
                          "choose from ['.csv', '.csv.gz', '.parquet']")
    path.parent.mkdir(parents=True, exist_ok=True)
    parquet = path.suffix.lower() in {".parquet", ".pq"}
    writer, n_rows, n_users = None, 0, 0
    try:  # a chunk of users at a time: memory stays bounded for millions of users
        for frame in model.iter_recommend_users(users, k=k, exclude_seen=exclude_seen, items=items):
            if parquet:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                table = table if writer is None else table.cast(writer.schema)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
            else:
                frame.to_csv(path, index=False, mode="w" if writer is None else "a", header=writer is None)
                writer = writer or True
            n_rows, n_users = n_rows + len(frame), n_users + frame["user_id"].nunique()
    finally:
        if parquet and writer is not None:
            writer.close()
    log.info("wrote %d recommendations for %d users to %s", n_rows, n_users, path)
    return path
